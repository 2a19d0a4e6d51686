"""CPU training throughput of every registered model: one `cnnlab train` run of N batches each.

Each model trains with its book recipe (lr, input size) through the real CLI in its own process for
``--batches`` steps of ``--batch-size`` images, plus one validation batch; images/s is the run's own figure
(result.json: training images / wall seconds of the fit). Prints a markdown table for docs/models.md, preceded
by the machine, versions and commit.

    python benchmarks/models.py --batches 20 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from cnnlab.models import list_models, model_info
from cnnlab.runs.folder import environment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--models", nargs="*", default=list_models())
    args = parser.parse_args()
    env = environment(torch.device("cpu"))
    print(f"machine: {env['platform']}, {env['cpu_count']} CPUs, torch {env['torch']}, commit {env['git_commit']}, "
          f"{env['date']}; {args.batches} batches of {args.batch_size}, book recipe, 1 validation batch\n")
    print("| model | input | CPU train images/s |\n| --- | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            out = Path(tmp) / name
            cmd = [sys.executable, "-m", "cnnlab", "train", name, "--recipe", "book", "--epochs", "1",
                   "--limit-train-batches", str(args.batches), "--limit-val-batches", "1",
                   "--batch-size", str(args.batch_size), "--out", str(out), "--quiet", "--no-report"]
            subprocess.run(cmd, check=True)
            result = json.loads((out / "result.json").read_text())
            size = model_info(name).input_size
            print(f"| {name} | {size} | {result['images_per_s']:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
