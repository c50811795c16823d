"""benchmarks/gpu_check.py on a machine without CUDA: the refusal, the table, a CPU dry run.

The CUDA figures themselves only come from a GPU (``make gpu-check``); here every check runs
through the same code on the CPU with the demo-size model (``--device cpu --quick``), so what
the GPU run will execute, short of the CUDA kernels, has run before it gets there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check
from benchmarks.gpu_check import CHECKS, Row, format_line, markdown_table

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_stops_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--out",
                           str(tmp_path / "t.md")], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == gpu_check.EXIT_NO_DEVICE
    assert proc.stderr.startswith("error: --device cuda: no CUDA device is visible")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "t.md").exists()


def test_table_lines_and_goals() -> None:
    rows = [gpu_check._goal("speed", 1.5, 1.4, "1.50x", ">= 1.4x"),
            gpu_check._goal("speed", 1.3, 1.4, "1.30x", ">= 1.4x"),
            gpu_check._goal("img/s", 900.0, 2200.0, "900 img/s", ">= 2200", applies=False),
            Row("resume bf16", "PASS", "max |w_resumed - w| 0", "<= noise")]
    assert [r.status for r in rows] == ["PASS", "FAIL", "INFO", "PASS"]
    table = markdown_table(rows, "gpu_check on X").splitlines()
    assert table[0] == "gpu_check on X" and table[2] == "| check | result | measured | goal |"
    assert table[-1] == "| resume bf16 | PASS | max \\|w_resumed - w\\| 0 | <= noise |"
    assert all(line.count("|") - line.count("\\|") == 5 for line in table[2:])  # 4 cells each
    assert format_line(rows[1]).startswith("FAIL  speed") and "[goal >= 1.4x]" in format_line(rows[1])
    assert list(CHECKS) == ["train_step", "loader", "epoch", "resume", "eval", "ray"]
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--only", "nonsense"])


def test_cpu_dry_run_executes_every_check_but_ray(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gpu_check.md"
    only = [a for name in CHECKS if name != "ray" for a in ("--only", name)]
    threads = torch.get_num_threads()
    code = gpu_check.main(["--device", "cpu", "--quick", "--no-compile", *only, "--out", str(out)])
    assert torch.get_num_threads() == threads             # the dry run's 1 thread is given back
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line[:4] in ("PASS", "FAIL", "INFO")]
    checks = {line[6:].split()[0] for line in rows}
    assert checks == {"train_step", "loader", "epoch", "resume", "eval"}, lines
    # no check crashed (a crash is a FAIL row naming the exception); figures are CPU-sized, so
    # the throughput goals may fail here; the equivalence checks may not.
    assert not any("Error" in line for line in rows), rows
    assert any(line.startswith("PASS  resume bf16") for line in rows), rows
    assert any(line.startswith("PASS  eval cpu vs cpu") for line in rows), rows
    assert code in (0, 1)
    table = out.read_text()
    assert table.startswith("gpu_check on cpu (dry run)") and table.count("\n| ") == len(rows) + 1


@pytest.mark.slow
def test_cpu_dry_run_of_the_ray_packing_check(tmp_path: Path) -> None:
    # Its own process: the check starts (and stops) a private Ray, which must not meet the
    # session's. On the CPU the packed resource is half a CPU instead of half a GPU.
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu",
                           "--quick", "--only", "ray", "--out", str(tmp_path / "t.md")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "PASS  ray 2 trials x 0.5 cpu" in proc.stdout
