"""download stage: put every dataset of the profile into ``data/raw/<dataset>/``.

Per dataset, ``datasets.<name>.source`` in ``params.yaml`` is one of

- ``synthetic``: generate the synthetic benchmark (:func:`ddrn.data.generate_synthetic`);
- a local archive (``.zip``, ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``) or folder:
  checked against ``sha256`` when given (for a folder: the sha256 of its sorted
  ``<relative path> <file sha256>`` lines), then extracted / copied;
- an ``http(s)://`` URL: downloaded to ``data/archives/<file name>`` first (a file already there is
  used as is); without network this fails with a one-line message saying where to put the archive.

Output is written to a temporary folder in ``data/raw/`` and renamed into place, so an interrupted
run leaves nothing half-written. A marker ``.ddrn-source.json`` (source, sha256, config hash)
makes a re-run a no-op while the source and its checksum are unchanged.

    python -m pipeline.download [--dataset NAME] [--params params.yaml] [--profile P]
                                [--raw-dir data/raw] [--grid reports/figures/synthetic_grid.png]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path

from ddrn.atomic import atomic_write_text
from ddrn.config import DatasetConfig
from ddrn.data import generate_synthetic, load_dataset, save_dataset_grid
from ddrn.errors import DataError
from pipeline.cli import base_parser, load_params, run_stage, selected_datasets
from pipeline.file_digest import sha256_file

log = logging.getLogger(__name__)

MARKER = ".ddrn-source.json"
ARCHIVE_DIR = Path("data/archives")
GENERATOR_VERSION = 2  # bump when the synthetic generator's output changes
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def fetch_dataset(name: str, ds: DatasetConfig, out_dir: str | Path,
                  archive_dir: str | Path = ARCHIVE_DIR) -> bool:
    """Make ``out_dir`` hold dataset ``name`` from ``ds.source``; returns False when it was a no-op.

    Raises:
        DataError: missing source, checksum mismatch, unreadable archive or unreachable URL.
    """
    out = Path(out_dir)
    if ds.source == "synthetic":
        marker = {"source": "synthetic", "sha256": None, "config": _config_hash(ds)}
        if _marker(out) == marker:
            log.info("%s: up to date (synthetic, config %s)", out, marker["config"])
            return False
        with _staging(out) as tmp:
            summary = generate_synthetic(name, ds.synthetic, tmp)
            _write_marker(tmp, marker)
        log.info("%s: generated %d images + %d twins in %.1f s", out, summary.images,
                 summary.twins, summary.seconds)
        return True
    source = _local_source(name, ds, Path(archive_dir))
    digest = sha256_path(source)
    if ds.sha256 is not None and digest != ds.sha256.lower():
        raise DataError(f"{source}: sha256 {digest} does not match datasets.{name}.sha256 "
                        f"{ds.sha256}; expected the official archive (re-download it)")
    marker = {"source": ds.source, "sha256": digest, "config": _config_hash(ds)}
    if _marker(out) == marker:
        log.info("%s: up to date (%s, sha256 %s)", out, source, digest[:12])
        return False
    with _staging(out) as tmp:
        if source.is_dir():
            shutil.copytree(source, tmp, dirs_exist_ok=True)
        else:
            extract(source, tmp)
        _write_marker(tmp, marker)
    log.info("%s: unpacked from %s", out, source)
    return True


def extract(archive: Path, dest: Path) -> None:
    """Extract a zip or tar archive into ``dest``, refusing members that escape it."""
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    _check_member(archive, dest, member)
                zf.extractall(dest)
        elif archive.name.lower().endswith(_TAR_SUFFIXES):
            with tarfile.open(archive) as tf:
                tf.extractall(dest, filter="data")
        else:
            raise DataError(f"{archive}: unknown archive type; expected .zip, .tar, .tar.gz, "
                            ".tgz, .tar.bz2 or .tar.xz")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive}: cannot extract ({type(exc).__name__}: {exc}); expected a "
                        "complete archive") from None


def _check_member(archive: Path, dest: Path, member: str) -> None:
    target = (dest / member).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise DataError(f"{archive}: member {member!r} would extract outside {dest}; expected "
                        "relative paths only")


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a folder's sorted ``<relative path> <file sha256>`` lines."""
    if path.is_file():
        return sha256_file(path)
    lines = [f"{p.relative_to(path).as_posix()} {sha256_file(p)}\n"
             for p in sorted(path.rglob("*")) if p.is_file() and p.name != MARKER]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _local_source(name: str, ds: DatasetConfig, archive_dir: Path) -> Path:
    if ds.source.startswith(("http://", "https://")):
        target = archive_dir / Path(ds.source.split("?")[0]).name
        if not target.exists():
            _download(name, ds.source, target)
        return target
    path = Path(ds.source)
    if not path.exists():
        raise DataError(f"{path}: datasets.{name}.source not found; expected a local archive "
                        "or folder (or 'synthetic')")
    return path


def _download(name: str, url: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=15) as resp, part.open("wb") as f:
            shutil.copyfileobj(resp, f)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise DataError(f"{url}: cannot download ({reason}); place the archive locally at "
                        f"{target} (or set datasets.{name}.source to its path)") from None
    part.rename(target)


class _staging:
    """A temp folder next to ``out``, renamed to ``out`` on success and removed on failure."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=self.out.parent))
        return self.tmp

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        old = self.out.with_name(f".{self.out.name}.old")
        if self.out.exists():
            shutil.rmtree(old, ignore_errors=True)
            self.out.rename(old)
        self.tmp.rename(self.out)
        shutil.rmtree(old, ignore_errors=True)


def _config_hash(ds: DatasetConfig) -> str:
    payload = {"synthetic": dataclasses.asdict(ds.synthetic) if ds.source == "synthetic" else None,
               "generator": GENERATOR_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _marker(out: Path) -> dict | None:
    try:
        return json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _write_marker(folder: Path, marker: dict) -> None:
    atomic_write_text(folder / MARKER, json.dumps(marker, indent=2, sort_keys=True) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("Fetch, extract or generate the profile's datasets into data/raw/.")
    parser.add_argument("--dataset", default=None, help="only this dataset")
    parser.add_argument("--raw-dir", type=Path, default=Path("data/raw"))
    parser.add_argument("--grid", type=Path, default=None,
                        help="also write a picture grid of the occluded_duke set here (PNG)")
    args = parser.parse_args(argv)
    config = load_params(args)
    names = selected_datasets(args, config)
    for name in names:
        fetch_dataset(name, config.datasets[name], args.raw_dir / name)
    if args.grid is not None:
        grid_set = "occluded_duke" if "occluded_duke" in names else names[0]
        dataset = load_dataset(grid_set, args.raw_dir / grid_set, log_table=False)
        log.info("wrote %s", save_dataset_grid(dataset, args.grid, num_ids=6, per_id=6))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_stage(main))
