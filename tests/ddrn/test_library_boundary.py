"""The library knows nothing of the pipeline's tools: no module of ``ddrn`` imports DVC, Ray,
MLflow, Optuna or ``pipeline``, at the top of a file or inside a function."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[2] / "ddrn"
PIPELINE_ONLY = {"dvc", "ray", "mlflow", "optuna", "pipeline"}


def _imported_roots(source: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_library_module_imports_a_pipeline_tool() -> None:
    offenders = {str(p.relative_to(LIBRARY.parent)): sorted(_imported_roots(p) & PIPELINE_ONLY)
                 for p in sorted(LIBRARY.rglob("*.py"))}
    assert len(offenders) > 20  # the walk saw the library
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_the_whole_library_loads_no_pipeline_tool() -> None:
    # Transitively too (a third-party import could drag one in): checked in a fresh interpreter.
    code = ("import sys, pkgutil, importlib, ddrn\n"
            "for m in pkgutil.walk_packages(ddrn.__path__, 'ddrn.'):\n"
            "    importlib.import_module(m.name)\n"
            f"print(sorted({{n.split('.')[0] for n in sys.modules}} & set({sorted(PIPELINE_ONLY)!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=LIBRARY.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
