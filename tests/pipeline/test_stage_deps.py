"""DVC dependencies that cannot lie (issue 12): every repository module a stage runs is a dep.

A stage's command names its entry modules (``python -m pipeline.X``); the modules it runs are
those entry modules and every repository module they import, transitively, at any depth of the
code (imports inside functions run too; ``if TYPE_CHECKING:`` blocks do not). Importing
``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py``. A module is covered when a dep of
the stage is its file or a directory above it. An edit to an uncovered module would leave
``dvc status`` clean while the stage's outputs go stale.
"""
from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[2]
PACKAGES = ("ddrn", "pipeline")
PIPELINES = (PROJECT / "dvc.yaml", PROJECT / "sweeps" / "dvc.yaml")


def module_file(name: str) -> Path | None:
    """The file of repository module ``name`` (a package's ``__init__.py``), or None."""
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = PROJECT.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)  # the else branch runs
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imported_names(path: Path, name: str) -> set[str]:
    """Dotted names of everything ``path`` (module ``name``) imports, parents included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # ``from a import b``: b is a submodule or a name in a; both run a.
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            parts = target.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return found


def modules_run_by(entries: list[str]) -> dict[str, Path]:
    """Every repository module that running ``entries`` (dotted names) executes."""
    seen: dict[str, Path] = {}
    # ``python -m <package>`` runs the package's ``__main__``.
    todo = list(entries) + [f"{e}.__main__" for e in entries
                            if (module_file(e) or Path()).name == "__init__.py"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name)
        if path is None:
            continue
        seen[name] = path
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
        todo.extend(imported_names(path, name) - seen.keys())
    return seen


def stages() -> Iterator[tuple[str, Path, str, list[str]]]:
    """(pipeline file, stage name, command, deps as repository-relative paths)."""
    for dvc_file in PIPELINES:
        doc = yaml.safe_load(dvc_file.read_text())
        for name, stage in doc["stages"].items():
            body = stage.get("do", stage)
            wdir = (dvc_file.parent / body.get("wdir", ".")).resolve()
            deps = [str((wdir / d).resolve().relative_to(PROJECT)) for d in body.get("deps", [])
                    if "${" not in str(d)]
            yield dvc_file.relative_to(PROJECT), name, body["cmd"], deps


STAGES = list(stages())
EACH_STAGE = pytest.mark.parametrize(("dvc_file", "stage", "cmd", "deps"), STAGES,
                                     ids=[f"{f}:{s}" for f, s, _, _ in STAGES])


def files_run_by(cmd: str) -> list[str]:
    """The repository files a stage command runs (its ``python -m`` entries and their imports)."""
    entries = re.findall(r"python -m ([\w.]+)", cmd)
    assert entries, f"no `python -m` entry module in {cmd!r}"
    return sorted(str(p.relative_to(PROJECT)) for p in modules_run_by(entries).values())


def _inside(path: str, folder_or_file: str) -> bool:
    return path == folder_or_file or path.startswith(folder_or_file.rstrip("/") + "/")


def uncovered(cmd: str, deps: list[str]) -> list[str]:
    return [f for f in files_run_by(cmd) if not any(_inside(f, d) for d in deps)]


@EACH_STAGE
def test_stage_deps_cover_every_module_it_runs(dvc_file, stage, cmd, deps) -> None:
    missing = uncovered(cmd, deps)
    assert not missing, f"{dvc_file}:{stage} runs modules none of its deps cover: {missing}"


def unused_code_deps(cmd: str, deps: list[str]) -> list[str]:
    """Code deps (modules and packages of the repository) that no module the stage runs is in."""
    files = files_run_by(cmd)
    code = [d for d in deps if d.split("/")[0] in ("ddrn", "pipeline")]
    return [d for d in code if not any(_inside(f, d) for f in files)]


@EACH_STAGE
def test_stage_deps_name_no_code_the_stage_does_not_run(dvc_file, stage, cmd, deps) -> None:
    # As narrow as the import graph allows: an edit to code a stage never runs (the report's
    # tables, say) must not make DVC rerun it (and retrain).
    extra = unused_code_deps(cmd, deps)
    assert not extra, f"{dvc_file}:{stage} lists code deps it never runs: {extra}"


def test_the_walk_sees_lazy_imports_and_skips_type_checking_ones(tmp_path) -> None:
    # The walker itself, on real repository code: pipeline.evaluate imports the tracking models
    # inside a function only, and ddrn.config must be reached from the train entry point.
    run = modules_run_by(["pipeline.evaluate"])
    assert "pipeline.tracking.models" in run and "ddrn.evaluation.rank" in run
    assert "ddrn.config" in modules_run_by(["pipeline.train"])
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ddrn.config\n"
                      "def f():\n    from pipeline import report\n")
    names = imported_names(source, "pipeline.m")
    assert "pipeline.report" in names and "ddrn.config" not in names


def test_an_uncovered_module_is_reported() -> None:
    # The check can fail: the train command with the library's deps removed misses the config.
    cmd = next(c for _, s, c, _ in STAGES if s == "train")
    missing = uncovered(cmd, ["pipeline"])
    assert "ddrn/config.py" in missing and not any(m.startswith("pipeline/") for m in missing)


def test_a_dep_the_stage_never_runs_is_reported() -> None:
    # The narrowness check can fail: the report's own code listed as a dep of the train stage.
    cmd, deps = next((c, d) for _, s, c, d in STAGES if s == "train")
    assert unused_code_deps(cmd, [*deps, "pipeline/report/build.py", "ddrn/evaluation"]) == [
        "pipeline/report/build.py", "ddrn/evaluation"]
