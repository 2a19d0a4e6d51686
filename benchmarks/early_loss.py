"""What a healthy run's training loss is after only a few steps: the figures behind the chance warning's few-steps rule.

``python benchmarks/early_loss.py [--steps 4 10 20 40 60] [--seeds 0 1 2] [--out FILE.json]``

The chance warning (``cnnlab.train.health``) reads an epoch's mean training loss: above a uniform guess's means the
steps diverged, at it that the network has not started to learn. Over a handful of steps that mean is mostly the
loss of the starting weights, which is above a uniform guess's for a fresh network whatever the learning rate. Each
row here is a whole ``cnnlab.train.train`` run of one epoch cut to ``--steps`` batches (``limit_train_batches``),
its recipe's own settings otherwise, and reports what the warning would see: the epoch's mean training loss, the
test accuracy, the advice ``chance_warning`` gives for that row, and whether the Trainer said it (its check waits
for ``CHANCE_CHECK_STEPS`` steps).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import tempfile
from pathlib import Path

from bench import environment
from cnnlab.train import train
from cnnlab.train.health import chance_warning

# The book's sigmoid LeNet, lenet-relu (no BatchNorm: the net the fast recipe's clip was added for), and the
# recipes' own nets: each with the recipe it trains under, by epochs.
RUNS = (("lenet", "book"), ("lenet-relu", "fast"), ("lenet-bn-relu", "fast"), ("compact", "cpu10"))


def advice(warning: str | None) -> str:
    """The warning's diagnosis in a word or two, for the printed table."""
    if warning is None:
        return ""
    for words, label in (("too large", "steps too large"), ("not learning yet", "not learning yet"),
                         ("too few", "too few steps")):
        if words in warning:
            return label
    return "other warning"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 10, 20, 40, 60])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, help="write the rows and the environment here as JSON")
    args = parser.parse_args()
    rows = []
    uniform = math.log(10)
    print(f"a uniform guess's loss: {uniform:.3f}")
    with tempfile.TemporaryDirectory(prefix="cnnlab-early-loss-") as tmp:
        for model, recipe in RUNS:
            for steps in args.steps:
                for seed in args.seeds:
                    out = Path(tmp) / f"{model}-{steps}-{seed}"
                    err = io.StringIO()
                    with contextlib.redirect_stderr(err):
                        row = train(model, recipe, quiet=True, report=False, epochs=1, limit_train_batches=steps,
                                    seed=seed, out=str(out))[-1]
                    warning = chance_warning(row, 10)
                    said = "no better than chance" in err.getvalue()
                    rows.append({"model": model, "recipe": recipe, "steps": steps, "seed": seed,
                                 "train_loss": row["train_loss"], "val_acc": row["val_acc"], "warning": warning,
                                 "trainer_said_it": said})
                    print(f"{model:14} {recipe:6} {steps:3} steps  seed {seed}  train_loss {row['train_loss']:.3f}  "
                          f"val_acc {row['val_acc']:.4f}  {advice(warning)}{' (said)' if said else ''}", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"environment": environment(), "uniform_loss": uniform, "rows": rows},
                                       indent=1) + "\n")


if __name__ == "__main__":
    main()
