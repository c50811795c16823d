"""``python -m pipeline.report``: the report stage (tables, figures and verdicts from the metrics
and eval records; :mod:`pipeline.report.build`)."""

from pipeline.cli import run_stage
from pipeline.report.build import main

raise SystemExit(run_stage(main))
