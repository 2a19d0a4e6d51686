"""Where the training time goes: torch.profiler over real Trainer steps ("profile before optimising").

Runs a few warm-up steps, then profiles ``--steps`` training steps of ``cnnlab.train.Trainer`` (data path,
forward, backward, optimizer, metrics: exactly the hot loop) and prints the top operators by self CPU time.

    python benchmarks/profile_train.py lenet --steps 60
    python benchmarks/profile_train.py resnet18 --steps 6 --batch-size 32
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from torch.profiler import ProfilerActivity, profile

from cnnlab.runs.folder import environment
from cnnlab.train import build_trainer, make_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--recipe", default="book")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_config(args.model, args.recipe, epochs=1, limit_train_batches=args.steps, limit_val_batches=1,
                          batch_size=args.batch_size, out=tmp + "/run")
        trainer = build_trainer(cfg, quiet=True, report=False)
        trainer.train_epoch()  # warm-up: allocator, oneDNN primitive caches
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            trainer.train_epoch()
    env = environment(torch.device("cpu"))
    print(f"{args.model} ({args.recipe} recipe, batch {cfg.batch_size}, {args.steps} steps), torch {env['torch']}, "
          f"{env['cpu_count']} CPUs, {env['torch_threads']} threads, commit {env['git_commit']}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
