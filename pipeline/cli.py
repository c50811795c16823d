"""The command-line convention every stage follows.

A stage's ``main()`` is wrapped by :func:`run_stage`: a :class:`~ddrn.errors.DDRNError` (something
the user can fix) is printed as one line ``error: <what, where, what was expected>`` on stderr with
exit code 2; any other exception is a bug and keeps its traceback. ``--debug`` shows the traceback
for user errors too.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ddrn.errors import DataError, DDRNError
from pipeline.params import ProjectConfig, load_config

EXIT_USER_ERROR = 2


def base_parser(description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """An argument parser with the options every stage shares.

    ``--help`` names the command as it is run (``python -m pipeline.sweep``, not ``sweep.py``)
    and shows the description as plain text (the docstring's reStructuredText literals
    stripped); ``epilog`` is printed as written (e.g. the environment variables a stage reads).
    """
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    prog = f"python -m {spec.name}" if spec is not None and spec.name.startswith("pipeline.") \
        else None
    parser = argparse.ArgumentParser(prog=prog, description=description.replace("``", ""),
                                     epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="the parameters file (default: params.yaml)")
    parser.add_argument("--profile", default=None,
                        help="profile to use (default: the file's 'profile' key)")
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks for user errors too")
    return parser


def load_params(args: argparse.Namespace) -> ProjectConfig:
    """The validated config named by ``--params``/``--profile``."""
    return load_config(args.params, args.profile)


def selected_datasets(args: argparse.Namespace, config: ProjectConfig) -> list[str]:
    """The datasets a per-dataset stage acts on: ``--dataset NAME`` or every one of the profile.

    Raises:
        DataError: ``--dataset`` names a dataset the profile does not declare.
    """
    names = [args.dataset] if args.dataset else list(config.datasets)
    for name in names:
        if name not in config.datasets:
            raise DataError(f"{args.params}: --dataset {name!r} is not in profiles.{config.profile}"
                            f".datasets; expected one of: {', '.join(config.datasets)}")
    return names


def run_stage(main: Callable[[Sequence[str] | None], int | None],
              argv: Sequence[str] | None = None) -> int:
    """Run ``main`` under the error convention and return the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(main(argv) or 0)
    except DDRNError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
