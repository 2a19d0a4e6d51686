"""The step cost of each augmentation preset: what `--augment`, `--mixup` and `--cutmix` add to a training step.

For each variant this times, in one process and round-robin (a load spike hits every variant alike), the
training loader's batch alone (gather, scale, augment, mix, resize) and a whole training step (that batch, forward,
cross-entropy with soft targets where mixed, backward, SGD) of a model, on the device the trainer would use. The
images are random uint8 of the chosen size and channels (the cost does not depend on what they show). Medians and
spreads over ``--repeats`` rounds of ``--steps`` steps; run it on a quiet machine and copy the table and the
environment line into docs/benchmarks.md.

    python benchmarks/augment_cost.py --repeats 7
    python benchmarks/augment_cost.py --model resnet18 --image-size 32 --channels 3 --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnlab.data import AUGMENTS, DeviceLoader, Preprocess
from cnnlab.device import resolve_device
from cnnlab.models import create_model, model_info
from cnnlab.runs.folder import environment

# (name, augment preset, mixup, cutmix): every preset alone, then mixing on top of none and of crop-flip.
VARIANTS = [(preset, preset, 0.0, 0.0) for preset in AUGMENTS] + [
    ("mixup 0.2", "none", 0.2, 0.0), ("cutmix 1.0", "none", 0.0, 1.0),
    ("crop-flip + mixup/cutmix", "crop-flip", 0.2, 1.0)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_variant(augment: str, mixup: float, cutmix: float, args, device: torch.device):
    """(batch-only closure, whole-step closure) for one variant, each over its own loader, model and optimizer."""
    gen = torch.Generator().manual_seed(0)
    n = args.batch * max(args.steps, 1)
    images = torch.randint(0, 256, (n, args.channels, args.image_size, args.image_size), dtype=torch.uint8,
                           generator=gen)
    labels = torch.randint(0, 10, (n,), generator=gen)
    book = model_info(args.model).input_size  # the trainer's default input side (train.build.default_input_size)
    size = args.resize or (book if book > 28 else args.image_size)
    loader = DeviceLoader(images, labels, args.batch, shuffle=True, augment=augment, mixup=mixup, cutmix=cutmix,
                          num_classes=10, preprocess=Preprocess(size).to(device), device=device, seed=0)
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=10, in_channels=args.channels).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def batches() -> None:
        for b in range(args.steps):
            loader.batch(b % len(loader))
        _sync(device)

    def steps() -> None:
        for b in range(args.steps):
            x, y = loader.batch(b % len(loader))
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _sync(device)

    return batches, steps


def measure(args) -> dict:
    device = resolve_device(args.device)
    variants = {name: make_variant(aug, mix, cut, args, device) for name, aug, mix, cut in VARIANTS}
    times: dict[str, dict[str, list[float]]] = {name: {"batch": [], "step": []} for name in variants}
    for batches, steps in variants.values():  # warm-up: first calls build kernels and caches
        batches()
        steps()
    for _ in range(args.repeats):
        for name, (batches, steps) in variants.items():
            for kind, fn in (("batch", batches), ("step", steps)):
                t0 = time.perf_counter()
                fn()
                times[name][kind].append((time.perf_counter() - t0) / args.steps * 1e3)
    rows = []
    for name, kinds in times.items():
        rows.append({"variant": name, **{f"{kind}_ms": statistics.median(v) for kind, v in kinds.items()},
                     **{f"{kind}_ms_spread": (max(v) - min(v)) for kind, v in kinds.items()}})
    return {"args": vars(args), "rows": rows, "environment": environment(device)}


def table(result: dict) -> str:
    lines = ["| variant | batch ms (median, spread) | step ms (median, spread) |", "|---|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['variant']} | {r['batch_ms']:.3f} ± {r['batch_ms_spread']:.3f} | "
                     f"{r['step_ms']:.3f} ± {r['step_ms_spread']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="lenet")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--channels", type=int, default=1, choices=(1, 3))
    p.add_argument("--resize", type=int, default=None, help="model input side (default: as the trainer picks)")
    p.add_argument("--steps", type=int, default=20, help="steps per timed round")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per variant (round-robin)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    result = measure(args)
    print(table(result))
    env = result["environment"]
    print(f"\n{args.model}, batch {args.batch}, {args.channels} x {args.image_size} px, {args.repeats} x "
          f"{args.steps} steps; " + ", ".join(f"{k} {v}" for k, v in env.items() if k in ("torch", "torchvision",
                                                                                         "device", "platform",
                                                                                         "cpu_count", "torch_threads")))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
