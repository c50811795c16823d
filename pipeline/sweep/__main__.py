"""``python -m pipeline.sweep``: the TPE search and the Fig. 6 grid on the validation identities
(:mod:`pipeline.sweep.search`)."""

from pipeline.cli import run_stage
from pipeline.sweep.search import main

raise SystemExit(run_stage(main))
