"""How much memory `cnnlab explore` takes to answer one picture of a big network: the peak resident set of a process
that opens the network (``module:function``, as a user's own builder) and analyses one image
(:func:`cnnlab.explore.model.analyze_image`), as ``cnnlab explore`` does for the first picture it shows.

    cd benchmarks && OMP_NUM_THREADS=1 python explore_memory.py --repeats 2 --out results/explore-memory-avx512.json

Each case runs in a fresh process (the peak is the process's own, ``ru_maxrss``: imports, the network, its passes);
weights are random and seeded (torchvision's builders with ``weights=None``), the image seeded noise. The detectors
resize inside to 800 pixels whatever the input; ResNet-50 is fed at 224 and 512. Run with another tree's ``src``
first on ``PYTHONPATH`` to measure that tree's explorer with this script (it uses only what both have).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch
import torchvision

from bench import environment

CASES = (("maskrcnn", 512), ("keypointrcnn", 512), ("fasterrcnn", 512), ("resnet50", 224), ("resnet50", 512))


def maskrcnn():
    torch.manual_seed(0)
    return torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)


def keypointrcnn():
    torch.manual_seed(0)
    return torchvision.models.detection.keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None)


def fasterrcnn():
    torch.manual_seed(0)
    return torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)


def resnet50():
    torch.manual_seed(0)
    return torchvision.models.resnet50()


def peak_kb(builder: str, size: int) -> int:
    """The peak resident set, in KB, of a fresh process that opens ``builder`` of this file and analyses one image of
    ``size`` pixels."""
    out = subprocess.run([sys.executable, __file__, "--child", builder, str(size)], check=True, capture_output=True,
                         text=True).stdout
    return int(out.split()[-1])


def _child(builder: str, size: int) -> None:
    from cnnlab.explore.model import Options, analyze_image
    from cnnlab.explore.sources import open_with_images

    sys.path.insert(0, str(Path(__file__).parent))
    model, _ = open_with_images(f"explore_memory:{builder}", None, Options(input_size=size))
    torch.manual_seed(0)
    analyze_image(model, torch.randint(0, 256, (3, size, size), dtype=torch.uint8))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="fresh processes per case (default: 2)")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--child", nargs=2, metavar=("BUILDER", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args.child[0], int(args.child[1]))
    env = environment()
    print(f"{env['machine']}; {env['versions']}; commit {env['commit']}")
    print("| network | input | peak RSS of each process (MB) |")
    print("| --- | --- | --- |")
    rows = []
    for builder, size in CASES:
        peaks = [peak_kb(builder, size) for _ in range(args.repeats)]
        rows.append({"network": builder, "input": size, "peak_kb": peaks})
        print(f"| {builder} | {size} px | {', '.join(f'{p / 1024:,.0f}' for p in peaks)} |", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"environment": env, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
