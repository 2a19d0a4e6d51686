"""How fast each export of one checkpoint runs on this CPU, and how closely it agrees with PyTorch.

Exports a trained checkpoint as ``onnx``, ``onnx-int8`` (calibrated on ``--calibration`` training images) and
``pt2`` through :func:`cnnlab.export.export_checkpoint`, then times four ways of computing the logits of a batch
of test images: the PyTorch model itself (eager, ``no_grad``), onnxruntime on the float and on the int8 graph (CPU
provider), and the ``torch.export`` program loaded back. Each is warmed up, then the four run round-robin
``--repeats`` times per batch size, so a load spike on a shared machine hits all of them; the median and the
spread (min-max) are reported in images per second. Beside each figure: top-1 agreement with PyTorch on the first
``--images`` test images (:func:`cnnlab.export.verify_export`). The rows, with the machine, the versions and the
commit, go to ``--out`` as JSON; docs/benchmarks.md keeps the recorded table.

    OMP_NUM_THREADS=1 python benchmarks/export_speed.py runs/lenet/best.pt --out benchmarks/results/export.json

Nothing here is asserted: tests/test_export.py runs it on a tiny budget so that it cannot rot.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.export import export_checkpoint, verify_export
from cnnlab.inference import dataset_of, load_trained
from cnnlab.runs.folder import environment

FORMATS = (("onnx", ".onnx"), ("onnx-int8", ".onnx"), ("pt2", ".pt2"))


def runners(checkpoint: Path, folder: Path, calibration: int) -> tuple[dict[str, Callable], dict[str, Path]]:
    """The PyTorch model and each export of it, as functions from a float batch to numpy logits."""
    trained = load_trained(checkpoint)
    wrapped = nn.Sequential(trained.preprocess, trained.model).eval()

    def eager(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return wrapped(x).numpy()

    runs: dict[str, Callable] = {"pytorch": eager}
    files: dict[str, Path] = {}
    for fmt, suffix in FORMATS:
        path = export_checkpoint(checkpoint, folder / f"model-{fmt}{suffix}", format=fmt,
                                 calibration=calibration if fmt == "onnx-int8" else None)
        files[fmt] = path
        if suffix == ".onnx":
            import onnxruntime as ort

            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            runs[fmt] = lambda x, session=session: session.run(None, {"images": x.numpy()})[0]
        else:
            program = torch.export.load(path).module()

            def run_pt2(x: torch.Tensor, program=program) -> np.ndarray:
                with torch.no_grad():
                    return program(x).numpy()

            runs[fmt] = run_pt2
    return runs, files


def measure(checkpoint: Path, batches: tuple[int, ...], repeats: int, images: int, calibration: int,
            warmup: int = 3) -> list[dict[str, Any]]:
    """One row per (format, batch size): median and spread of images/s, and the agreement with PyTorch."""
    trained = load_trained(checkpoint)
    test = dataset_of(dict(trained.checkpoint.get("config") or {}), name=trained.meta.dataset).test_images
    with tempfile.TemporaryDirectory(prefix="cnnlab-export-speed-") as tmp:
        runs, files = runners(checkpoint, Path(tmp), calibration)
        agreement = {fmt: verify_export(checkpoint, path, images=images) for fmt, path in files.items()}
        rows = []
        for n in batches:
            x = test[:n].float() / 255
            for run in runs.values():
                for _ in range(warmup):  # first-call allocations, oneDNN's kernel choice, onnxruntime's arena
                    run(x)
            seconds: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(repeats):
                for name, run in runs.items():
                    start = time.perf_counter()
                    run(x)
                    seconds[name].append(time.perf_counter() - start)
            for name, times in seconds.items():
                rates = [n / t for t in times]
                a = agreement.get(name)
                rows.append({"format": name, "batch": n, "images_per_s": statistics.median(rates),
                             "min": min(rates), "max": max(rates), "repeats": repeats,
                             "agreement": None if a is None else a.rate, "agreement_images": images,
                             "max_abs_diff": None if a is None else a.max_abs_diff,
                             "size_bytes": files[name].stat().st_size if name in files else None})
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = ["| format | batch | images/s (median) | min-max | top-1 agreement | max logit diff | file |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        agree = "-" if r["agreement"] is None else f"{r['agreement']:.2%} of {r['agreement_images']}"
        diff = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}"
        size = "-" if r["size_bytes"] is None else f"{r['size_bytes'] / 1024:.0f} KiB"
        lines.append(f"| {r['format']} | {r['batch']} | {r['images_per_s']:,.0f} | {r['min']:,.0f}-{r['max']:,.0f} "
                     f"| {agree} | {diff} | {size} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a trained checkpoint (int8 needs trained weights)")
    parser.add_argument("--batches", default="1,64", help="batch sizes, comma-separated (default 1,64)")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per format and batch size")
    parser.add_argument("--images", type=int, default=1000, help="test images for the agreement (default 1000)")
    parser.add_argument("--calibration", type=int, default=256, help="int8 calibration images (default 256)")
    parser.add_argument("--out", type=Path, help="write the rows and the environment here as JSON")
    args = parser.parse_args(argv)
    batches = tuple(int(b) for b in args.batches.split(","))
    rows = measure(args.checkpoint, batches, args.repeats, args.images, args.calibration)
    env = environment(torch.device("cpu"))
    print(f"torch {env['torch']}, {env['torch_threads']} thread(s), {env['platform']}, commit {env['git_commit']}")
    print(format_rows(rows))
    if args.out:
        args.out.write_text(json.dumps({"environment": env, "checkpoint": str(args.checkpoint),
                                        "command": " ".join(sys.argv), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
