"""Does the Embedding Space use its codes? Each candidate fix alone, then the chosen combination.

``python -m benchmarks.diagnose_codebook [--rows NAME ...] [--variants es_orth ddrn]
[--seeds 0 1 2] [--jobs 2] [--epochs N] [--table-only]``

Trains the demo profile's variants on the synthetic Occluded-Duke set through the project's own
training path (:func:`pipeline.trial.experiment.prepare_training` + :func:`ddrn.engine.fit`) with the
Embedding Space options of each row, and records per run: the last epoch's code perplexity and
dead codes over the training tokens (what ``history.json`` and the report's curves hold), the
same over the test images with the clean argmax (evaluation's codes), and occluded R1/mAP on the
test split. This is a mechanism diagnostic, not model selection: the test split is read only to
see whether a fix costs retrieval, and nothing here is tuned on it.

Results go to ``runs/diagnose_codebook/results.jsonl`` (one line per run; rows already there are
not retrained) and the table to ``docs/embedding_space_diagnostics.md``. Needs the packed set:
``python -m pipeline.download --dataset occluded_duke && python -m pipeline.preprocess
--dataset occluded_duke``. One run takes ~1 min on one core.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "runs" / "diagnose_codebook" / "results.jsonl"
TABLE = ROOT / "docs" / "embedding_space_diagnostics.md"
TRAIN_SET = "occluded_duke"

OLD = {"similarity": "dot", "train_index": "argmax", "kmeans_init": False,
       "dead_code_threshold": 0.0, "codebook_weight_decay": True}
"""The behaviour before issue 11 (the committed demo's collapse)."""

ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "old": ("before #11: dot product, clean argmax, random init, no restart, decayed codebook", OLD),
    "sample": ("old + noisy argmax of Eq. 2 in training (train_index: sample)",
               {**OLD, "train_index": "sample"}),
    "cosine": ("old + cosine similarity (similarity: cosine)", {**OLD, "similarity": "cosine"}),
    "kmeans": ("old + k-means init from the first batch (kmeans_init: true)",
               {**OLD, "kmeans_init": True}),
    "restart": ("old + dead-code restart (dead_code_threshold: 0.1, checked every step)",
                {**OLD, "dead_code_threshold": 0.1}),
    "no_decay": ("old + no weight decay on the codebook (codebook_weight_decay: false)",
                 {**OLD, "codebook_weight_decay": False}),
    "cosine_restart": ("cosine + restart (decayed codebook, random init)",
                       {**OLD, "similarity": "cosine", "dead_code_threshold": 0.1}),
    "chosen": ("chosen defaults: cosine + k-means init + restart + no codebook decay", {}),
    "chosen_sample": ("chosen + noisy argmax in training", {"train_index": "sample"}),
    "chosen_default": ("chosen + sampling: default (Fig. 6's noise-free surrogate)",
                       {"sampling": "default"}),
}
"""row -> (description, model overrides on top of the variant); ``es`` unless said otherwise."""


def run_one(row: str, variant: str, seed: int, overrides: dict[str, Any],
            epochs: int | None) -> dict[str, Any]:
    """Train and evaluate one (row, variant, seed); returns its result record."""
    torch.set_num_threads(1)
    from ddrn.data import open_packed
    from ddrn.engine import fit
    from pipeline.params import load_config
    from pipeline.trial.experiment import PACKED_ROOT, prepare_training
    from pipeline.trial.scoring import evaluate_split

    config = load_config(ROOT / "params.yaml", "demo")
    spec = config.resolve(TRAIN_SET, variant, seed)
    train = spec.train if epochs is None else dataclasses.replace(spec.train, epochs=epochs)
    spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, **overrides),
                               train=train)
    packed_root = ROOT / PACKED_ROOT
    setup = prepare_training(config, spec, packed_root)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        result = fit(setup.model, setup.criterion, setup.loader, spec.train, run_dir,
                     setup.device, seed=spec.seed)
    seconds = time.perf_counter() - t0
    last = result.history[-1]
    test = open_packed(packed_root / TRAIN_SET)
    query, gallery = test.splits["query"], test.splits["gallery"]
    metrics = evaluate_split(setup.model, config, query, gallery, setup.device)["metrics"]
    usage = _eval_usage(setup.model, config, [query, gallery], setup.device)
    return {"row": row, "variant": variant, "seed": seed, "overrides": overrides,
            "epochs": spec.train.epochs, "seconds": round(seconds, 1),
            "train_perplexity": last["code_perplexity"], "train_dead": last["dead_codes"],
            "eval_perplexity": usage["perplexity"], "eval_dead": usage["dead_codes"],
            "R1": metrics["R1"], "mAP": metrics["mAP"]}


@torch.no_grad()
def _eval_usage(model: torch.nn.Module, config: Any, splits: Sequence[Any],
                device: torch.device) -> dict[str, Any]:
    """Code usage of the clean (evaluation) argmax over every patch token of ``splits``."""
    from ddrn.data.augment import BatchAugment

    transform = BatchAugment(config.input, train=False)
    model.eval()
    codes = []
    for split in splits:
        for start in range(0, len(split), 256):
            raw = torch.as_tensor(split.images[start:start + 256].copy())
            camids = torch.as_tensor(split.camids[start:start + 256])
            codes.append(model(transform(raw.to(device)), camids.to(device)).code_indices.cpu())
    return model.embedding_space.usage(torch.cat([c.reshape(-1) for c in codes]))


def load_results(path: Path = RESULTS) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _cell(values: Sequence[float], digits: int = 1) -> str:
    """mean ± spread (half the range over seeds) of a column."""
    mean = statistics.fmean(values)
    spread = (max(values) - min(values)) / 2
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def render_table(records: Sequence[dict[str, Any]], num_embeddings: int) -> str:
    """The markdown document: one line per (row, variant), mean ± half-range over seeds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["row"], r["variant"]), []).append(r)
    order = {name: i for i, name in enumerate(ROWS)}
    keys = sorted(groups, key=lambda k: (k[1] != "es", k[1], order.get(k[0], 99)))
    bar = num_embeddings / 4
    lines = [
        "| row | variant | seeds | train perplexity | train dead | eval perplexity | eval dead "
        "| occluded R1 | occluded mAP | bar |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row, variant in keys:
        rs = sorted(groups[(row, variant)], key=lambda r: r["seed"])
        ok = all(r["train_perplexity"] >= bar and r["train_dead"] <= bar for r in rs)
        col = {k: [float(r[k]) for r in rs] for k in
               ("train_perplexity", "train_dead", "eval_perplexity", "eval_dead", "R1", "mAP")}
        lines.append(
            f"| {row} | {variant} | {','.join(str(r['seed']) for r in rs)} | "
            f"{_cell(col['train_perplexity'])} | {_cell(col['train_dead'])} | "
            f"{_cell(col['eval_perplexity'])} | {_cell(col['eval_dead'])} | "
            f"{_cell(col['R1'])} | {_cell(col['mAP'])} | {'yes' if ok else 'no'} |")
    legend = "\n".join(f"- `{name}`: {desc}" for name, (desc, _) in ROWS.items()
                       if any(k[0] == name for k in keys))
    return "\n".join(lines) + "\n\nRows:\n\n" + legend + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--variants", nargs="*", default=["es"],
                        help="variants trained for every row (default: es)")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one core each)")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--only", nargs="*", default=None, metavar="ROW:VARIANT:SEED",
                        help="exactly these runs, in this order (instead of rows x variants x seeds)")
    parser.add_argument("--table-only", action="store_true", help="rewrite the table, train nothing")
    args = parser.parse_args(argv)

    done = {(r["row"], r["variant"], r["seed"]) for r in load_results()}
    if args.only is not None:
        plan = [(r, v, int(s)) for r, v, s in (item.split(":") for item in args.only)]
    else:
        plan = [(row, variant, seed) for row in args.rows for variant in args.variants
                for seed in args.seeds]
    todo = [key for key in plan if key not in done]
    if not args.table_only and todo:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(run_one, row, variant, seed, ROWS[row][1], args.epochs)
                       for row, variant, seed in todo]
            for fut in futures:
                rec = fut.result()
                with RESULTS.open("a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                print(f"{rec['row']:>15} {rec['variant']:>8} s{rec['seed']}: "
                      f"train ppl {rec['train_perplexity']:.1f} dead {rec['train_dead']:.0f} | "
                      f"eval ppl {rec['eval_perplexity']:.1f} dead {rec['eval_dead']} | "
                      f"R1 {rec['R1']:.1f} mAP {rec['mAP']:.1f} ({rec['seconds']:.0f} s)",
                      flush=True)
    from pipeline.params import load_config

    x = load_config(ROOT / "params.yaml", "demo").cfg.model.num_embeddings
    table = render_table(load_results(), x)
    _write_doc(table, x)
    print(table)
    return 0


def _write_doc(table: str, num_embeddings: int) -> None:
    """Replace the generated table between the markers of the doc (the prose around it is kept)."""
    start, end = "<!-- table:start -->", "<!-- table:end -->"
    text = TABLE.read_text() if TABLE.is_file() else f"# Embedding Space diagnostics\n\n{start}\n{end}\n"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text(f"{head}{start}\n{table}{end}{tail}")


if __name__ == "__main__":
    raise SystemExit(main())
