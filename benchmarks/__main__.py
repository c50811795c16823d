"""Run every benchmark: ``python -m benchmarks [--quick] [--only NAME] [--device cpu|cuda]``.

Each ``benchmarks/bench_<topic>.py`` has a ``main(argv)``; this runner forwards the shared flags
(``--quick``, ``--device``) and keeps going when one benchmark fails, so one broken measurement
does not hide the others. Timings on a shared machine are noisy: read the printed ratios, which
compare against a reference measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs (CI-sized)")
    parser.add_argument("--only", action="append", default=[], help="run only bench_<NAME>")
    parser.add_argument("--device", default=None, help="forwarded to benchmarks that accept it")
    args = parser.parse_args(argv)
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                   if m.name.startswith("bench_"))
    if args.only:
        names = [n for n in names if n.removeprefix("bench_") in args.only or n in args.only]
    failed = []
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        forwarded = (["--quick"] if args.quick else []) + (
            ["--device", args.device] if args.device else [])
        start = time.perf_counter()
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            module.main(forwarded)
        except SystemExit as exc:  # argparse in a benchmark rejecting a forwarded flag
            if exc.code not in (0, None):
                failed.append(name)
        except Exception:  # keep measuring the rest; report at the end
            traceback.print_exc()
            failed.append(name)
        print(f"--- {name}: {time.perf_counter() - start:.1f} s", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
