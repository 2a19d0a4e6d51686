"""What is left to speed up the book's LeNet step on a CPU: layouts, torch.compile, bf16, and the per-layer floor.

The performance goals ask `cnnlab train lenet --recipe book` and the Chinese edition's `train_ch6` for 4x d2l
1.0.3. This script measures, in one process and round-robin (so a load spike hits every variant), one training
step (forward, cross-entropy, backward, SGD) of cnnlab's `lenet`, the book's layers, at the English edition's batch
128 (``--batch 256``: ``train_ch6``'s) under each lever the trainer offers, then the oneDNN kernels of each conv and
pool layer alone (what a step cannot go below without beating oneDNN), and the obvious hand-written rewrites of the
costliest ones against oneDNN.

    python benchmarks/lenet_levers.py --repeats 7
    python benchmarks/lenet_levers.py --repeats 7 --batch 256   # the Chinese edition's train_ch6 batch

Variants: ``eager`` (contiguous), ``eager-cl`` (channels-last weights: the trainer's CPU default), ``compile-cl``
(``torch.compile`` of forward + loss, static shapes), ``compile-cl-bf16`` (the same under bf16 autocast).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from cnnlab.models import create_model
from cnnlab.models.init import init_cnn
from cnnlab.runs.folder import environment

BATCH = 128  # the English edition's (d2l-zh's train_ch6 uses 256)


def step_variant(channels_last: bool, compile: bool, bf16: bool, batch: int) -> Callable[[], None]:
    """One training step of a freshly seeded LeNet, as a closure over its own model, optimizer and batch."""
    torch.manual_seed(0)
    model = create_model("lenet")
    model.apply(init_cnn)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.rand(batch, 1, 28, 28).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))

    def loss_of(x, y):
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return F.cross_entropy(model(x), y)

    loss_fn = torch.compile(loss_of, dynamic=False) if compile else loss_of

    def step() -> None:
        loss = loss_fn(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def median_ms(fn: Callable[[], None], calls: int, repeats: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(times)


def layer_floor(repeats: int, batch: int) -> list[tuple[str, float, float]]:
    """(layer, forward ms, backward ms) of LeNet's conv and pool kernels alone, channels-last."""
    rows = []
    cl = torch.channels_last
    for name, cin, cout, size, pad, input_grad in (("conv 5x5 1->6 @28", 1, 6, 28, 2, False),
                                                   ("conv 5x5 6->16 @14", 6, 16, 14, 0, True)):
        x = torch.rand(batch, cin, size, size).contiguous(memory_format=cl)
        w = torch.randn(cout, cin, 5, 5).contiguous(memory_format=cl)
        b = torch.zeros(cout)
        g = torch.randn_like(F.conv2d(x, w, b, padding=pad))
        mask = [input_grad, True, True]  # the first layer's input (the image) needs no gradient
        fwd = median_ms(partial(F.conv2d, x, w, b, padding=pad), 50, repeats)
        bwd = median_ms(partial(torch.ops.aten.convolution_backward, g, x, w, [cout], [1, 1], [pad, pad], [1, 1],
                                False, [0, 0], 1, mask), 50, repeats)
        rows.append((name, fwd, bwd))
    for name, channels, size in (("avg_pool 2x2 @28 (6 ch)", 6, 28), ("avg_pool 2x2 @10 (16 ch)", 16, 10)):
        x = torch.rand(batch, channels, size, size).contiguous(memory_format=cl)
        g = torch.rand_like(F.avg_pool2d(x, 2))
        fwd = median_ms(partial(F.avg_pool2d, x, 2), 50, repeats)
        bwd = median_ms(partial(torch.ops.aten.avg_pool2d_backward, g, x, [2, 2], [2, 2], [0, 0], False, True, None),
                        50, repeats)
        rows.append((name, fwd, bwd))
    return rows


def alternatives(repeats: int, batch: int) -> list[tuple[str, float, float]]:
    """(what, oneDNN ms, hand-written ms): the obvious rewrites of LeNet's costliest kernels in plain torch ops,
    each checked against oneDNN's result before it is timed."""
    x1 = torch.rand(batch, 1, 28, 28)
    w1 = torch.randn(6, 1, 5, 5)
    x2 = torch.rand(batch, 6, 14, 14)
    w2 = torch.randn(16, 6, 5, 5)
    g2 = torch.randn(batch, 16, 10, 10)
    p1 = torch.rand(batch, 6, 28, 28)

    def conv1_im2col():  # (N*784, 25) patches times the (25, 6) weights
        patches = F.pad(x1, (2, 2, 2, 2)).unfold(2, 5, 1).unfold(3, 5, 1).reshape(batch, 784, 25)
        return (patches @ w1.view(6, 25).t()).transpose(1, 2).reshape(batch, 6, 28, 28)

    def conv2_weight_gemm():  # gradient (16, N*100) times patches (N*100, 150)
        patches = x2.unfold(2, 5, 1).unfold(3, 5, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 150)
        return (g2.permute(1, 0, 2, 3).reshape(16, -1) @ patches).view(16, 6, 5, 5)

    flipped = w2.flip(-1, -2).transpose(0, 1).contiguous()

    def conv2_input_as_conv():  # the full correlation of the gradient with the flipped kernels
        return F.conv2d(F.pad(g2, (4, 4, 4, 4)), flipped)

    def pool_strided_adds():
        out = p1[:, :, 0::2, 0::2] + p1[:, :, 0::2, 1::2]
        out += p1[:, :, 1::2, 0::2]
        out += p1[:, :, 1::2, 1::2]
        return out.mul_(0.25)

    def conv2_grads(mask):
        return partial(torch.ops.aten.convolution_backward, g2, x2, w2, [16], [1, 1], [0, 0], [1, 1], False, [0, 0],
                       1, mask)

    cases = (("conv1 forward as im2col + GEMM", partial(F.conv2d, x1, w1, padding=2), conv1_im2col, None),
             ("conv2 weight gradient as unfold + GEMM", conv2_grads([False, True, False]), conv2_weight_gemm, 1),
             ("conv2 input gradient as a forward conv", conv2_grads([True, False, False]), conv2_input_as_conv, 0),
             ("2x2 avg_pool @28 as four strided adds (contiguous)", partial(F.avg_pool2d, p1, 2),
              pool_strided_adds, None))
    rows = []
    for name, ours, theirs, part in cases:
        expected = ours() if part is None else ours()[part]
        torch.testing.assert_close(theirs(), expected, rtol=1e-4, atol=1e-3)
        rows.append((name, median_ms(ours, 20, repeats), median_ms(theirs, 20, repeats)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=40, help="steps per timed repeat")
    parser.add_argument("--batch", type=int, default=BATCH, help="images per step (default: the English edition's)")
    args = parser.parse_args()
    env = environment(torch.device("cpu"))
    print(f"torch {env['torch']}, {env['cpu_count']} CPUs, {env['torch_threads']} threads, commit {env['git_commit']}")
    variants = {"eager": (False, False, False), "eager-cl": (True, False, False),
                "compile-cl": (True, True, False), "compile-cl-bf16": (True, True, True)}
    steps, compile_s = {}, {}
    for name, flags in variants.items():
        start = time.perf_counter()
        steps[name] = step_variant(*flags, args.batch)
        for _ in range(3):
            steps[name]()  # compiles here for the compiled variants
        compile_s[name] = time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            times[name].append(median_ms(step, args.calls, 1))
    base = statistics.median(times["eager-cl"])
    print(f"\nLeNet training step, batch {args.batch}, median of {args.repeats} round-robin repeats of {args.calls} "
          "steps")
    print("| variant | ms / step | images/s | vs eager-cl | first 3 steps (s, compile included) |")
    print("| --- | --: | --: | --: | --: |")
    for name, ts in times.items():
        ms = statistics.median(ts)
        print(f"| {name} | {ms:.2f} | {args.batch / ms * 1e3:,.0f} | {base / ms:.2f}x | {compile_s[name]:.1f} |")
    print(f"\nKernels alone (channels-last, batch {args.batch}, median of {args.repeats} x 50 calls)")
    print("| layer | forward ms | backward ms |")
    print("| --- | --: | --: |")
    total = 0.0
    for name, fwd, bwd in layer_floor(args.repeats, args.batch):
        total += fwd + bwd
        print(f"| {name} | {fwd:.3f} | {bwd:.3f} |")
    print(f"| **sum** | | **{total:.2f}** |")
    print(f"\nHand-written rewrites against oneDNN (contiguous, batch {args.batch}, median of {args.repeats} x 20 "
          "calls)")
    print("| kernel | oneDNN ms | rewrite ms |")
    print("| --- | --: | --: |")
    for name, ours, theirs in alternatives(args.repeats, args.batch):
        print(f"| {name} | {ours:.3f} | {theirs:.3f} |")


if __name__ == "__main__":
    main()
