"""The stage error convention: user errors are one line with exit 2, bugs keep their traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ddrn.errors import ConfigError
from pipeline.cli import EXIT_USER_ERROR, base_parser, load_params, run_stage

ROOT = Path(__file__).resolve().parents[2]


def _stage(argv):
    args = base_parser("test stage").parse_args(argv)
    load_params(args)
    raise ConfigError("params.yaml: profiles.demo.model.tau: expected a temperature > 0, got 0")


def test_user_error_is_one_line_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_stage(_stage, ["--params", str(ROOT / "params.yaml")])
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR
    assert err.count("\n") == 1 and err.startswith("error: params.yaml: profiles.demo.model.tau")
    assert "Traceback" not in err


def test_debug_flag_reraises() -> None:
    with pytest.raises(ConfigError):
        run_stage(_stage, ["--params", str(ROOT / "params.yaml"), "--debug"])


def test_bugs_are_not_swallowed() -> None:
    def buggy(argv):
        raise ZeroDivisionError("bug")

    with pytest.raises(ZeroDivisionError):
        run_stage(buggy, [])


def test_missing_params_file_from_a_real_process(tmp_path: Path) -> None:
    code = (
        "import sys; from pipeline.cli import base_parser, load_params, run_stage\n"
        "def main(argv):\n"
        "    load_params(base_parser('x').parse_args(argv))\n"
        "sys.exit(run_stage(main))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, "--params", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == EXIT_USER_ERROR
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nope.yaml'}: parameters file not found; expected a params.yaml with "
        "'profile', 'variants' and 'profiles'"]
