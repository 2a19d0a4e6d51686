"""A BatchNorm2d's training forward and backward on the CPU, per channel count: contiguous, channels-last, and
channels-last with the pre-hook cnnlab gives layers under 16 channels (their input made contiguous).

``python benchmarks/batch_norm_layout.py [--batch 256] [--repeats 5] [--out FILE.json]``

Each case is one ``nn.BatchNorm2d(C)`` on a ``batch x C x side x side`` input: forward and backward, 20 times per
repeat; the figure is the median of the repeats' mean milliseconds. The shapes are those of the compact net's and
BN-LeNet's BatchNorm layers at 28 px (and 16 and 32 channels for comparison). The layouts of one case are timed in
turn within each repeat. Nothing else should run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from bench import environment
from cnnlab.device import train_small_batch_norms_contiguous

SHAPES = [(6, 24), (8, 28), (8, 14), (16, 8), (16, 28), (24, 14), (32, 14), (48, 7), (96, 3)]  # (channels, side)


def _time(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor, steps: int = 20) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        layer(x).backward(grad)
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="write the rows to this JSON file")
    args = parser.parse_args()
    rows = []
    for channels, side in SHAPES:
        plain, hooked = nn.BatchNorm2d(channels), nn.BatchNorm2d(channels)
        train_small_batch_norms_contiguous(hooked)  # a no-op from 16 channels up
        cases = {}
        for name, layer, layout in (("contiguous", plain, torch.contiguous_format),
                                    ("channels_last", plain, torch.channels_last),
                                    ("channels_last_hooked", hooked, torch.channels_last)):
            x = torch.randn(args.batch, channels, side, side).contiguous(memory_format=layout).requires_grad_()
            cases[name] = (layer, x, torch.randn_like(x))
            _time(layer, x, cases[name][2], steps=3)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeats):
            for name, (layer, x, grad) in cases.items():
                times[name].append(_time(layer, x, grad))
        row = {"channels": channels, "side": side, "batch": args.batch,
               **{f"{name}_ms": round(statistics.median(t), 3) for name, t in times.items()}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        record = {"environment": environment(), "threads": torch.get_num_threads(), "rows": rows}
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
