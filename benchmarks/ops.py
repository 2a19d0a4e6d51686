"""Forward+backward time of cnnlab.ops.conv2d against torch.nn.functional.conv2d at LeNet and ResNet-18 shapes.

Usage:
    .venv/bin/python benchmarks/ops.py                 # all shapes, 7 repeats, prints a Markdown table
    .venv/bin/python benchmarks/ops.py --repeats 3 --nets lenet --threads 1

Each row times one conv layer's forward pass plus the backward pass for its weight, bias and (except for a
network's first layer, whose input is the image) its input, as training does. The two implementations run
alternately within each repeat, so a load spike on a shared machine hits both; the table gives the median.
It also gives the ratio of CPU time (time.process_time), which counts only the time this process ran and so
shifts less when other processes take the cores (with several threads it includes OpenMP's spin-waiting).
The "total" rows weight every distinct shape by how often the network uses it (d2l 7.6 LeNet, d2l 8.6
ResNet-18 at 96x96 as the book trains it). Timings are wall clock at torch's default thread count unless
--threads says otherwise.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnnlab.ops import conv2d
from cnnlab.ops.shapes import conv_output_shape
from cnnlab.runs.folder import git_commit


@dataclass(frozen=True)
class ConvShape:
    net: str
    cin: int
    cout: int
    kernel: int
    stride: int
    padding: int
    size: int  # input height = width
    count: int  # how many layers of the network have this shape
    first: bool = False  # the network's first layer: no gradient for its input

    @property
    def label(self) -> str:
        stride = f"/{self.stride}" if self.stride > 1 else ""
        return f"{self.kernel}x{self.kernel}{stride} {self.cin}->{self.cout} @{self.size}"


SHAPES = [
    ConvShape("lenet", 1, 6, 5, 1, 2, 28, 1, first=True),
    ConvShape("lenet", 6, 16, 5, 1, 0, 14, 1),
    ConvShape("resnet18", 1, 64, 7, 2, 3, 96, 1, first=True),
    ConvShape("resnet18", 64, 64, 3, 1, 1, 24, 4),
    ConvShape("resnet18", 64, 128, 3, 2, 1, 24, 1),
    ConvShape("resnet18", 64, 128, 1, 2, 0, 24, 1),
    ConvShape("resnet18", 128, 128, 3, 1, 1, 12, 3),
    ConvShape("resnet18", 128, 256, 3, 2, 1, 12, 1),
    ConvShape("resnet18", 128, 256, 1, 2, 0, 12, 1),
    ConvShape("resnet18", 256, 256, 3, 1, 1, 6, 3),
    ConvShape("resnet18", 256, 512, 3, 2, 1, 6, 1),
    ConvShape("resnet18", 256, 512, 1, 2, 0, 6, 1),
    ConvShape("resnet18", 512, 512, 3, 1, 1, 3, 3),
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


Timing = tuple[float, float]  # (wall-clock seconds, CPU seconds of this process)


def time_shape(shape: ConvShape, batch: int, repeats: int, device: torch.device) -> tuple[list[Timing], list[Timing]]:
    """Wall and CPU seconds per forward+backward for F.conv2d and cnnlab's conv2d, ``repeats`` each, interleaved."""
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, shape.cin, shape.size, shape.size, generator=gen, device=device)
    x.requires_grad_(not shape.first)
    w = torch.randn(shape.cout, shape.cin, shape.kernel, shape.kernel, generator=gen, device=device) * 0.05
    b = torch.zeros(shape.cout, device=device)
    w.requires_grad_(), b.requires_grad_()
    out_hw = conv_output_shape((shape.size, shape.size), shape.kernel, shape.stride, shape.padding)
    grad = torch.randn(batch, shape.cout, *out_hw, generator=gen, device=device)

    def run(fn) -> Timing:
        x.grad = w.grad = b.grad = None
        _sync(device)
        start, cpu = time.perf_counter(), time.process_time()
        fn(x, w, b, stride=shape.stride, padding=shape.padding).backward(grad)
        _sync(device)
        return time.perf_counter() - start, time.process_time() - cpu

    for fn in (F.conv2d, conv2d):  # warm-up: allocator, oneDNN primitive caches
        run(fn)
    theirs, ours = [], []
    for r in range(repeats):
        pair = [(F.conv2d, theirs), (conv2d, ours)]
        for fn, times in pair if r % 2 == 0 else reversed(pair):
            times.append(run(fn))
    return theirs, ours


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"{platform.platform()}, {cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), commit {git_commit() or 'unknown'}, load average {load}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--nets", default="lenet,resnet18", help="comma-separated: lenet, resnet18")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    nets = args.nets.split(",")
    print(f"Machine: {machine()}" + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    print(f"Batch {args.batch}, median of {args.repeats} interleaved repeats, forward + backward, float32, "
          f"{device.type}\n")
    print("| net | conv layer (k/stride cin->cout @input) | count | F.conv2d ms | cnnlab ms | ratio | CPU-time ratio |")
    print("|---|---|--:|--:|--:|--:|--:|")
    for net in nets:
        totals = [0.0, 0.0, 0.0, 0.0]  # wall theirs, wall ours, cpu theirs, cpu ours
        for shape in (s for s in SHAPES if s.net == net):
            theirs, ours = time_shape(shape, args.batch, args.repeats, device)
            medians = [statistics.median(t[i] for t in times) for i in (0, 1) for times in (theirs, ours)]
            totals = [total + shape.count * m for total, m in zip(totals, medians, strict=True)]
            t, o, ct, co = medians
            print(f"| {net} | {shape.label} | {shape.count} | {t * 1e3:.2f} | {o * 1e3:.2f} | {o / t:.2f} "
                  f"| {co / ct:.2f} |", flush=True)
        t, o, ct, co = totals
        print(f"| {net} | **total, weighted by count** | | {t * 1e3:.1f} | {o * 1e3:.1f} | **{o / t:.2f}** "
              f"| {co / ct:.2f} |", flush=True)


if __name__ == "__main__":
    main()
