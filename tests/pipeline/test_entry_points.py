"""Every ``python -m pipeline.…`` the project tells someone to run does something when run.

A module without a ``__main__`` guard (or a package without ``__main__.py``) imports, does
nothing and exits 0: a stage, a deploy script or a test that calls it would pass silently.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
# Where commands are written down for people, DVC and Ray to run.
SOURCES = ("README.md", "docs/CONTRACTS.md", "dvc.yaml", "sweeps/dvc.yaml", "Makefile",
           "deploy", "benchmarks", "tests")
COMMAND = re.compile(r"""-m["',\s]+(pipeline(?:\.[a-z_]\w*)+)""")


def _named_modules() -> dict[str, list[str]]:
    named: dict[str, list[str]] = {}
    for source in SOURCES:
        path = PROJECT / source
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if file.suffix not in ("", ".md", ".yaml", ".sh", ".py") or "__pycache__" in file.parts:
                continue
            for module in COMMAND.findall(file.read_text(errors="replace")):
                named.setdefault(module, []).append(str(file.relative_to(PROJECT)))
    return named


NAMED = _named_modules()


def test_the_project_names_its_entry_points() -> None:
    assert {"pipeline.train", "pipeline.sweep", "pipeline.report"} <= set(NAMED)


@pytest.mark.parametrize("module", sorted(NAMED))
def test_each_named_module_runs_when_run(module: str) -> None:
    path = PROJECT.joinpath(*module.split("."))
    if path.is_dir():
        assert (path / "__main__.py").is_file(), (
            f"{module} (named in {NAMED[module][0]}) is a package without __main__.py")
        return
    source = path.with_suffix(".py")
    assert source.is_file(), f"{module} (named in {NAMED[module][0]}) does not exist"
    assert re.search(r"^if __name__ == .__main__.:", source.read_text(), re.M), (
        f"{module} (named in {NAMED[module][0]}) has no __main__ guard: `python -m` would do nothing")
