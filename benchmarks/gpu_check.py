"""Every CUDA-only check of the paper path in one go: ``make gpu-check`` (< 8 min on one H100/H200).

``python -m benchmarks.gpu_check [--device cuda] [--quick] [--no-compile] [--only NAME] [--out FILE]``

Prints one line per check (``PASS`` / ``FAIL`` / ``INFO``, figure, goal) and writes the same rows as
a markdown table (``reports/gpu_check.md`` by default). Exit code 0 when every check passes, 1 when
one fails, 2 (one line on stderr) when the device is not there.

Checks, in order (later ones reuse the figures of earlier ones):

- ``train_step``: images/s of a training step of the ViT baseline and DDRN at the paper's size
  (ViT-B/16, 256x128, stride 11, batch 64) under TransReID's recipe (eager, fp16 autocast +
  GradScaler; the in-run reference), bf16 autocast, and bf16 + ``torch.compile``. Goals: DDRN's
  best >= 1.4x the reference recipe, >= 2,200 img/s on an H100-class card.
- ``loader``: images/s of the training loader (split resident in GPU memory, augmentation on the
  GPU, no worker threads, so the CPU cores stay free) against what DDRN consumes; goal >= 10x.
- ``epoch``: one paper-recipe ``fit`` epoch on a Market-1501-sized set (751 ids x 17 random-pixel
  images at 256x128, resident); its images/s >= 90% of the bare step's (epoch 2 is timed, so
  compilation is not counted).
- ``resume``: a run killed after epoch 2 and resumed ends with the weights of an uninterrupted
  run, under bf16 and under fp16 + GradScaler; the tolerance is twice the difference between two
  uninterrupted runs (0 where the kernels are deterministic; CUDA's are not by default).
- ``eval``: features and R1/mAP of the same model on the GPU and on the CPU; metrics equal.
- ``ray``: two Ray Tune trials at ``gpu: 0.5`` each run at the same time on the one GPU.

``--device cpu --quick`` is a dry run of the same code with the demo-size model (the CPU suite
runs it); it proves the script's logic, not any GPU figure.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_model import PARAMS, Candidate, _make, _time
from ddrn.config import TrainConfig
from ddrn.data import PackedSplit, make_train_loader
from ddrn.errors import DDRNError
from pipeline.params import ProjectConfig, load_config

GOAL_SPEEDUP = 1.4
GOAL_IMAGES_PER_S = 2200.0  # on an H100-class card
GOAL_LOADER_RATIO = 10.0
GOAL_EPOCH_SHARE = 0.90
MARKET_IDS, MARKET_PER_ID = 751, 17  # 12,767 images: Market-1501's 12,936 training images, rounded
EXIT_NO_DEVICE = 2
RENDEZVOUS_S = 120.0  # how long a Ray trial waits for its packed twin


class NoDevice(DDRNError):
    """The requested device is not there."""


@dataclasses.dataclass
class Row:
    """One line of the report: a check, its outcome, the measured figure and the goal."""

    check: str
    status: str  # PASS | FAIL | INFO
    figure: str
    goal: str = ""


@dataclasses.dataclass
class Context:
    """What every check needs: the device, the sizes, and figures earlier checks measured."""

    device: torch.device
    quick: bool
    compile: bool
    config: ProjectConfig
    batch: int
    step_images_per_s: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def best_recipe(self) -> str:
        return "bf16+compile" if self.compile else "bf16"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def make_context(device: str, quick: bool, compile_: bool) -> Context:
    """The run's settings: the paper model on CUDA, the demo one for a CPU dry run.

    Raises:
        NoDevice: ``device`` is CUDA and no CUDA device is visible.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NoDevice(f"--device {device}: no CUDA device is visible (torch {torch.__version__}, "
                       f"CUDA build {torch.version.cuda}); expected a machine with an NVIDIA GPU, "
                       "or --device cpu --quick for a dry run of the script")
    profile = "paper" if dev.type == "cuda" else "demo"
    return Context(dev, quick, compile_, load_config(PARAMS, profile),
                   batch=64 if dev.type == "cuda" else 8)


# -- checks -------------------------------------------------------------------------------------

def _recipes(ctx: Context) -> list[tuple[str, str, bool]]:
    """(label, amp, compile) per recipe; fp16 + GradScaler is TransReID's (the reference)."""
    recipes = [("fp16+GradScaler", "fp16", False), ("bf16", "bf16", False)]
    if ctx.compile:
        recipes.append(("bf16+compile", "bf16", True))
    return recipes


def check_train_step(ctx: Context) -> list[Row]:
    """Train-step images/s of both models under each recipe, interleaved in one run."""
    num_classes = 702
    torch.manual_seed(0)
    cands: dict[tuple[str, str], Candidate] = {}
    for variant in ("vit_baseline", "ddrn"):
        for label, amp, compile_ in _recipes(ctx):
            cands[variant, label] = _make(ctx.config, variant, ctx.batch, ctx.device, amp, compile_,
                                          num_classes)
    repeats, steps = (1, 1) if ctx.quick else (3, 10)
    _time(list(cands.values()), repeats, steps, ctx.device)
    rows = []
    for (variant, label), c in cands.items():
        ips = ctx.batch / statistics.median(c.times)
        ctx.step_images_per_s[f"{variant} {label}"] = ips
        rows.append(Row(f"train_step {variant} {label}", "INFO", f"{ips:.0f} img/s"))
    ref = ctx.step_images_per_s["vit_baseline fp16+GradScaler"]
    best = ctx.step_images_per_s[f"ddrn {ctx.best_recipe}"]
    rows.append(_goal(f"train_step ddrn {ctx.best_recipe} / reference", best / ref, GOAL_SPEEDUP,
                      f"{best / ref:.2f}x", f">= {GOAL_SPEEDUP}x the fp16+GradScaler baseline"))
    name = torch.cuda.get_device_name(ctx.device) if ctx.cuda else "cpu"
    h100_class = any(k in name for k in ("H100", "H200", "GH200"))
    rows.append(_goal(f"train_step ddrn {ctx.best_recipe} img/s", best, GOAL_IMAGES_PER_S,
                      f"{best:.0f} img/s on {name}", f">= {GOAL_IMAGES_PER_S:.0f} img/s (H100-class)",
                      applies=h100_class))
    return rows


def market_split(quick: bool, height: int, width: int, seed: int = 0) -> PackedSplit:
    """A Market-1501-sized training split of random pixels (``quick``: 16 ids x 4)."""
    ids, per_id = (16, 4) if quick else (MARKET_IDS, MARKET_PER_ID)
    n = ids * per_id
    rng = np.random.default_rng(seed)
    return PackedSplit(images=rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8),
                       pids=np.repeat(np.arange(ids), per_id), camids=np.arange(n) % 6,
                       occluded=np.zeros(n, bool), occluded_known=np.zeros(n, bool),
                       paths=[f"{i}.jpg" for i in range(n)])


def _train_cfg(ctx: Context, **kw: object) -> TrainConfig:
    cfg = dataclasses.replace(ctx.config.train, batch_size=ctx.batch, num_instances=4,
                              device=str(ctx.device), amp="bf16", compile=False)
    return dataclasses.replace(cfg, **kw)


def check_loader(ctx: Context, split: PackedSplit) -> list[Row]:
    """The loader's images/s (resident on the device) against DDRN's consumption."""
    iters = 10 if ctx.quick else 200
    loader = make_train_loader(split, _train_cfg(ctx, iters_per_epoch=iters), ctx.config.input,
                               ctx.device, seed=0)
    for _ in loader:  # warm-up epoch (allocations, kernels)
        pass
    ctx.sync()
    start = time.perf_counter()
    for _ in loader:
        pass
    ctx.sync()
    ips = iters * ctx.batch / (time.perf_counter() - start)
    used = ctx.step_images_per_s.get(f"ddrn {ctx.best_recipe}")
    where = "resident" if loader.resident else "memmap"
    if used is None:
        return [Row("loader img/s", "INFO", f"{ips:.0f} img/s ({where})")]
    return [_goal("loader / DDRN consumption", ips / used, GOAL_LOADER_RATIO,
                  f"{ips:.0f} img/s ({where}) = {ips / used:.1f}x {used:.0f}",
                  f">= {GOAL_LOADER_RATIO:.0f}x")]


def _fit_parts(ctx: Context, split: PackedSplit, train: TrainConfig, variant: str = "ddrn",
               seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module, object]:
    from ddrn.losses import build_criterion
    from ddrn.models import build_model

    spec = ctx.config.resolve(ctx.config.experiments_list()[0].train_set, variant, seed)
    num_classes = int(split.pids.max()) + 1
    torch.manual_seed(seed)
    model = build_model(dataclasses.replace(spec.model, pretrained=None), num_classes, 6,
                        input_size=(ctx.config.input.height, ctx.config.input.width))
    criterion = build_criterion(spec.loss, model.feature_dim, num_classes)
    loader = make_train_loader(split, train, ctx.config.input, ctx.device, seed)
    return model.to(ctx.device), criterion.to(ctx.device), loader


def check_epoch(ctx: Context, split: PackedSplit) -> list[Row]:
    """A paper-recipe ``fit`` epoch (the second one: no compilation inside) vs the bare step."""
    from ddrn.engine import fit

    train = _train_cfg(ctx, epochs=2, warmup_epochs=1, compile=ctx.compile, checkpoint_every=100,
                       iters_per_epoch=2 if ctx.quick else None)
    model, criterion, loader = _fit_parts(ctx, split, train)
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(model, criterion, loader, train, tmp, ctx.device, seed=0)
    ips = result.history[-1]["images_per_s"]
    bare = ctx.step_images_per_s.get(f"ddrn {ctx.best_recipe}")
    steps = len(loader)
    if bare is None:
        return [Row("epoch img/s", "INFO", f"{ips:.0f} img/s over {steps} steps")]
    return [_goal("epoch / bare step", ips / bare, GOAL_EPOCH_SHARE,
                  f"{ips:.0f} img/s over {steps} steps = {100 * ips / bare:.0f}% of {bare:.0f}",
                  f">= {GOAL_EPOCH_SHARE:.0%}")]


class _Killed(Exception):
    """Stands for a kill right after a checkpoint."""


class _KillAfter:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, metrics: dict, checkpoint: Path | None) -> None:
        if epoch == self.epoch:
            raise _Killed


def check_resume(ctx: Context, split: PackedSplit) -> list[Row]:
    """Killed after epoch 2 + resumed == uninterrupted, within the run-to-run noise."""
    from ddrn.engine import fit

    amps = ["bf16", "fp16"] if ctx.cuda else ["bf16"]  # fit() refuses fp16 on the CPU
    rows = []
    for amp in amps:
        train = _train_cfg(ctx, epochs=3, warmup_epochs=1, iters_per_epoch=1 if ctx.quick else 2,
                           amp=amp)
        with tempfile.TemporaryDirectory() as tmp:
            runs = []
            for name in ("a", "b"):  # two uninterrupted runs: the noise floor
                model, criterion, loader = _fit_parts(ctx, split, train)
                fit(model, criterion, loader, train, Path(tmp, name), ctx.device, seed=0)
                runs.append(model.state_dict())
            model, criterion, loader = _fit_parts(ctx, split, train)
            with contextlib.suppress(_Killed):
                fit(model, criterion, loader, train, Path(tmp, "c"), ctx.device,
                    callbacks=[_KillAfter(2)], seed=0)
            model, criterion, loader = _fit_parts(ctx, split, train)
            fit(model, criterion, loader, train, Path(tmp, "c"), ctx.device, resume=True, seed=0)
            noise = max_abs_diff(runs[0], runs[1])
            diff = max_abs_diff(runs[0], model.state_dict())
        # Bit-equal where the kernels are deterministic (noise 0); otherwise within what two
        # identical runs already differ by (x2: the resumed run carries its own share).
        ok = diff <= 2 * noise
        rows.append(Row(f"resume {amp}", "PASS" if ok else "FAIL",
                        f"max |w_resumed - w| {diff:.2e} (two plain runs: {noise:.2e})",
                        "<= 2x run-to-run difference (0 when deterministic)"))
    return rows


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest absolute difference between two state dicts' floating-point tensors."""
    return max((float((a[k].float() - b[k].float()).abs().max()) for k in a
                if a[k].is_floating_point() and a[k].numel()), default=0.0)


def check_eval(ctx: Context, split: PackedSplit) -> list[Row]:
    """R1/mAP of one model evaluated on the device and on the CPU (query = every 4th image)."""
    from ddrn.evaluation import evaluate_rank, extract_features, pairwise_distance

    sub = np.arange(min(len(split), 64 if ctx.quick else 256))  # the CPU side sets the pace
    is_q = sub % 4 == 0

    def part(mask: np.ndarray, camid: int) -> PackedSplit:
        idx = sub[mask]  # query camera 0, gallery camera 1: no gallery item is excluded
        return PackedSplit(images=split.images[idx], pids=split.pids[idx],
                           camids=np.full(len(idx), camid), occluded=split.occluded[idx],
                           occluded_known=split.occluded_known[idx],
                           paths=[split.paths[i] for i in idx])

    query, gallery = part(is_q, 0), part(~is_q, 1)
    model, _, _ = _fit_parts(ctx, split, _train_cfg(ctx))
    results, feats = {}, {}
    for dev in dict.fromkeys([ctx.device, torch.device("cpu")]):
        model.to(dev)
        qf = extract_features(model, query, ctx.config.input, 128, dev, True)
        gf = extract_features(model, gallery, ctx.config.input, 128, dev, True)
        res = evaluate_rank(pairwise_distance(qf, gf), query.pids, gallery.pids, query.camids,
                            gallery.camids).as_percentages()
        results[dev.type], feats[dev.type] = res, qf
    ref = results["cpu"]
    got = results[ctx.device.type]
    gap = max(abs(got[k] - ref[k]) for k in ("R1", "mAP"))
    fdiff = float((feats[ctx.device.type] - feats["cpu"]).abs().max())
    return [Row(f"eval {ctx.device.type} vs cpu", "PASS" if gap < 1e-6 else "FAIL",
                f"R1 {got['R1']:.2f}/{ref['R1']:.2f}, mAP {got['mAP']:.2f}/{ref['mAP']:.2f}, "
                f"max feature diff {fdiff:.1e}", "metrics equal")]


def check_ray(ctx: Context, split: PackedSplit) -> list[Row]:
    """Two Tune trials at half a GPU each (CPU dry run: half a CPU each) overlap on one device."""
    import os

    import ray
    from ray import tune

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    resource = "gpu" if ctx.cuda else "cpu"
    steps = 3 if ctx.quick else 20
    # Inside a trial Ray sets CUDA_VISIBLE_DEVICES to the GPU it granted: plain "cuda" is that one.
    device, batch, input_cfg = ("cuda" if ctx.cuda else "cpu"), ctx.batch, ctx.config.input
    model_cfg = ctx.config.resolve(ctx.config.experiments_list()[0].train_set, "ddrn", 0).model

    def trial(config: dict) -> None:
        from ddrn.models import build_model

        torch.manual_seed(config["seed"])
        model = build_model(dataclasses.replace(model_cfg, pretrained=None), 16,
                            input_size=(input_cfg.height, input_cfg.width)).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        x = torch.randn(batch, 3, input_cfg.height, input_cfg.width, device=device)
        # Rendezvous: each trial announces itself and waits for the other, so they meet only if
        # Ray runs both at once (packed); run one after the other, the first one times out.
        meet = Path(config["meet"])
        (meet / f"trial{config['seed']}").touch()
        deadline = time.time() + RENDEZVOUS_S
        while len(list(meet.iterdir())) < 2 and time.time() < deadline:
            time.sleep(0.1)
        met = len(list(meet.iterdir())) == 2
        start = time.time()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
                model(x).features.float().pow(2).mean().backward()
            opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        tune.report({"met": met, "start": start, "end": time.time(),
                     "gpu_ids": str(ray.get_gpu_ids())})

    with tempfile.TemporaryDirectory() as tmp:
        meet = str(Path(tmp, "meet"))
        Path(meet).mkdir()
        ray.init(address="local", num_cpus=2 if ctx.cuda else 1, num_gpus=1 if ctx.cuda else 0,
                 include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20)
        try:
            resources = {"cpu": 1, "gpu": 0.5} if ctx.cuda else {"cpu": 0.5}
            tuner = tune.Tuner(tune.with_resources(trial, resources),
                               param_space={"seed": tune.grid_search([0, 1]), "meet": meet},
                               run_config=tune.RunConfig(storage_path=tmp, verbose=0))
            results = tuner.fit()
        finally:
            ray.shutdown()
    done = [r.metrics for r in results if r.error is None and r.metrics]
    if len(done) != 2:
        errors = "; ".join(str(r.error).splitlines()[0] for r in results if r.error)
        return [Row(f"ray 2 trials x 0.5 {resource}", "FAIL", f"{len(done)}/2 finished: {errors}",
                    "both run at once")]
    overlap = min(d["end"] for d in done) - max(d["start"] for d in done)
    same = len({d["gpu_ids"] for d in done}) == 1
    ok = all(d["met"] for d in done) and same
    return [Row(f"ray 2 trials x 0.5 {resource}", "PASS" if ok else "FAIL",
                f"met: {all(d['met'] for d in done)}, training overlap {overlap:.1f} s, "
                f"devices {[d['gpu_ids'] for d in done]}", "both run at once on one device")]


def _goal(check: str, value: float, goal: float, figure: str, goal_text: str,
          applies: bool = True) -> Row:
    status = ("PASS" if value >= goal else "FAIL") if applies else "INFO"
    return Row(check, status, figure, goal_text if applies else f"({goal_text}: not this card)")


CHECKS: dict[str, Callable[..., list[Row]]] = {
    "train_step": check_train_step, "loader": check_loader, "epoch": check_epoch,
    "resume": check_resume, "eval": check_eval, "ray": check_ray,
}
"""Every check, in the order they run (``loader`` and ``epoch`` compare with ``train_step``)."""


# -- output -------------------------------------------------------------------------------------

def format_line(row: Row) -> str:
    return f"{row.status:4s}  {row.check:48s} {row.figure}" + (f"  [goal {row.goal}]" if row.goal else "")


def markdown_table(rows: list[Row], header: str) -> str:
    """The rows as a markdown table under a one-line header (device, torch, date)."""
    lines = [header, "", "| check | result | measured | goal |", "|---|---|---|---|"]
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731 - a literal pipe ends a cell
    lines += [f"| {cell(r.check)} | {r.status} | {cell(r.figure)} | {cell(r.goal)} |" for r in rows]
    return "\n".join(lines) + "\n"


def _run_check(check: str, ctx: Context, split: PackedSplit) -> list[Row]:
    t0 = time.perf_counter()
    fn = CHECKS[check]
    try:
        new = fn(ctx) if check == "train_step" else fn(ctx, split)
    except Exception as exc:  # one broken check must not hide the others
        new = [Row(check, "FAIL", f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}")]
    for row in new:
        print(format_line(row), flush=True)
    print(f"      ({check}: {time.perf_counter() - t0:.0f} s)", flush=True)
    return new


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda[:N] (default), or cpu for a dry run")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the CPU suite's dry run)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile recipe")
    parser.add_argument("--only", action="append", choices=list(CHECKS), default=None,
                        help="run only this check (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("reports") / "gpu_check.md",
                        help="the markdown table (default: reports/gpu_check.md)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        ctx = make_context(args.device, args.quick, not args.no_compile)
    except DDRNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NO_DEVICE
    names = args.only or list(CHECKS)
    split = market_split(args.quick or not ctx.cuda, ctx.config.input.height, ctx.config.input.width)
    name = torch.cuda.get_device_name(ctx.device) if ctx.cuda else "cpu (dry run)"
    header = (f"gpu_check on {name}, torch {torch.__version__}, batch {ctx.batch}, "
              f"{ctx.config.input.height}x{ctx.config.input.width}, {time.strftime('%Y-%m-%d %H:%M')}")
    print(header, flush=True)
    rows: list[Row] = []
    started = time.perf_counter()
    threads = torch.get_num_threads()
    if not ctx.cuda:
        # Demo-size ops are microseconds: a second intra-op thread only adds synchronisation
        # (measured 10 s vs 1 s for the quick train_step check on the 2-core box).
        torch.set_num_threads(1)
    try:
        for check in names:
            rows += _run_check(check, ctx, split)
    finally:
        torch.set_num_threads(threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown_table(rows, f"{header}, {time.perf_counter() - started:.0f} s total"))
    failed = [r.check for r in rows if r.status == "FAIL"]
    print(f"{len(rows) - len(failed)}/{len(rows)} rows without failure; table: {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
