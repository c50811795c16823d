"""DDRN's training-step cost over the Table 2 index-0 ViT baseline at the same size.

``python -m benchmarks.bench_model [--quick] [--device cpu|cuda] [--compile] [--full] [--precision]``

Both models are timed in the same run, interleaved (baseline, DDRN, baseline, ...) and the median
step time of each is compared, so machine load affects both alike. The goal from the issue is
DDRN / baseline <= 1.05 (Embedding Space + HS-ArcFace + local branch cost at most 5%). Also
prints parameter counts and forward FLOPs (``torch.utils.flop_counter``).

* CPU (default): the ``demo`` model (tiny ViT, 64x32); ``--full``: the ``paper`` model
  (ViT-B/16, 256x128, stride 11) at batch 2.
* ``--precision`` (CPU): the demo's CNN baseline (``bot_resnet50`` at ``model.cnn_backbone``) and
  ViT baseline, each in fp32 and under bf16 autocast, and their ratios: why the CNN variant sets
  ``train.amp: bf16`` and the ViTs train in fp32. Run it with ``OMP_NUM_THREADS=1`` to see a
  trial's single core.
* ``--device cuda``: the ``paper`` model at batch 64 under bf16 autocast (``--compile`` adds
  ``torch.compile``), plus the TransReID recipe (the baseline, eager, fp16 autocast + GradScaler)
  as the reference, printing images/s and DDRN's speed-up over that recipe (goal >= 1.4x).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ddrn.engine.optim import build_optimizer
from ddrn.engine.trainer import cpu_has_native_bf16
from ddrn.losses import build_criterion
from ddrn.models import build_model
from pipeline.params import load_config

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
NUM_CLASSES = 702  # Occluded-Duke's training identities


@dataclasses.dataclass
class Candidate:
    name: str
    step: Callable[[], None]
    params: int
    flops_per_image: float
    times: list[float] = dataclasses.field(default_factory=list)


def _make(config, variant: str, batch: int, device: torch.device, amp: str, compile_: bool,
          num_classes: int) -> Candidate:
    spec = config.resolve("occluded_duke", variant, 0)
    size = (config.input.height, config.input.width)
    model = build_model(dataclasses.replace(spec.model, pretrained=None), num_classes,
                        input_size=size).to(device)
    criterion = build_criterion(spec.loss, model.feature_dim, num_classes).to(device)
    params = [p for p in [*model.parameters(), *criterion.parameters()] if p.requires_grad]
    opt = build_optimizer([model, criterion], spec.train)  # the profile's, as training builds it
    images = torch.randn(batch, 3, *size, device=device)
    pids = torch.arange(batch, device=device) // 4 % num_classes  # P x K = (B/4) x 4
    flops = _forward_flops(model, images)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    forward = torch.compile(model) if compile_ else model
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        ctx = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with ctx:
            loss = criterion(forward(images), pids).total
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    label = f"{variant} [{amp}{', compiled' if compile_ else ''}]"
    return Candidate(label, step, sum(p.numel() for p in params), flops / batch)


def _forward_flops(model: torch.nn.Module, images: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(images)
    return float(counter.get_total_flops())


def _time(candidates: list[Candidate], repeats: int, steps: int, device: torch.device) -> None:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for c in candidates:  # warm-up (and compilation)
        for _ in range(3):
            c.step()
    sync()
    for _ in range(repeats):  # interleaved, so drifting load hits every candidate alike
        for c in candidates:
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                c.step()
            sync()
            c.times.append((time.perf_counter() - start) / steps)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--compile", action="store_true", help="torch.compile the models (cuda)")
    parser.add_argument("--full", action="store_true", help="CPU: the paper model at batch 2")
    parser.add_argument("--precision", action="store_true",
                        help="CPU: the CNN and ViT baselines in fp32 vs bf16 autocast")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    cuda = device.type == "cuda"
    profile = "paper" if cuda or args.full else "demo"
    config = load_config(PARAMS, profile)
    batch = args.batch_size or (64 if cuda else 2 if args.full else 32)
    repeats = args.repeats or (3 if args.quick else 7)
    steps = 2 if args.quick else (10 if cuda else 3)
    num_classes = NUM_CLASSES if profile == "paper" else 48
    amp = "bf16" if cuda else "off"
    torch.manual_seed(0)
    if args.precision:
        _compare_precision(config, batch, device, repeats, steps, num_classes)
        return
    base = _make(config, "vit_baseline", batch, device, amp, args.compile, num_classes)
    ddrn = _make(config, "ddrn", batch, device, amp, args.compile, num_classes)
    candidates = [base, ddrn]
    reference = None
    if cuda:
        reference = _make(config, "vit_baseline", batch, device, "fp16", False, num_classes)
        reference.name = "TransReID recipe: vit_baseline [fp16 + GradScaler]"
        candidates.append(reference)
    print(f"profile {profile}, input {config.input.height}x{config.input.width}, batch {batch}, "
          f"device {device}, {repeats} interleaved repeats x {steps} steps, "
          f"threads {torch.get_num_threads()}")
    _time(candidates, repeats, steps, device)
    for c in candidates:
        med = statistics.median(c.times)
        print(f"  {c.name:58s} step {med * 1e3:9.2f} ms  {batch / med:9.1f} img/s  "
              f"params {c.params / 1e6:7.3f} M  fwd {c.flops_per_image / 1e9:8.3f} GFLOP/img")
    ratio = statistics.median(ddrn.times) / statistics.median(base.times)
    flop_ratio = ddrn.flops_per_image / base.flops_per_image
    print(f"DDRN / baseline step time: {ratio:.3f} (goal <= 1.05); forward FLOPs {flop_ratio:.4f}; "
          f"params {ddrn.params / base.params:.4f}")
    if reference is not None:
        speedup = statistics.median(reference.times) / statistics.median(ddrn.times)
        print(f"DDRN [{amp}{', compiled' if args.compile else ''}] / TransReID recipe speed: "
              f"{speedup:.2f}x (goal >= 1.4x; {batch / statistics.median(ddrn.times):.0f} img/s)")


def _compare_precision(config, batch: int, device: torch.device, repeats: int, steps: int,
                       num_classes: int) -> None:
    """Each baseline's training step in fp32 and under bf16 autocast, all four interleaved."""
    pairs = {v: (_make(config, v, batch, device, "off", False, num_classes),
                 _make(config, v, batch, device, "bf16", False, num_classes))
             for v in ("bot_resnet50", "vit_baseline")}
    print(f"input {config.input.height}x{config.input.width}, batch {batch}, {repeats} "
          f"interleaved repeats x {steps} steps, threads {torch.get_num_threads()}, native CPU "
          f"bf16: {cpu_has_native_bf16()}; CNN backbone {config.model.cnn_backbone}")
    _time([c for pair in pairs.values() for c in pair], repeats, steps, device)
    for variant, (fp32, bf16) in pairs.items():
        for c in (fp32, bf16):
            med = statistics.median(c.times)
            print(f"  {c.name:40s} step {med * 1e3:9.2f} ms  {batch / med:9.1f} img/s")
        ratio = statistics.median(bf16.times) / statistics.median(fp32.times)
        print(f"{variant}: bf16 / fp32 step time {ratio:.3f} ({1 / ratio:.2f}x the images/s)")


if __name__ == "__main__":
    main()
