"""The fast and cpu10 recipes as time budgets against the same recipes by epochs, side by side on this host.

``python benchmarks/time_budget.py [--only fast cpu10 to-target] [--seeds 0 1 2] [--out FILE.json]``

* ``fast``: ``cnnlab train lenet-bn-relu --recipe fast`` (a 60-s budget) against ``--epochs 10`` (the recipe before
  it became a budget), alternated per seed.
* ``cpu10``: ``cnnlab train compact --recipe cpu10`` (600 s) against ``--epochs 9``, alternated per seed.
* ``to-target``: ``cnnlab train compact --recipe cpu10 --time-budget 180 --target-acc 0.92``: a 180-s budget that
  stops once the test accuracy reaches 92% (``time_to_target_s``), so "seconds to 92% within 180 s" holds on a
  host exactly when the run gets there; alternated with the same run ``--no-augment``.
  ``--to-target-budget SECONDS`` sets another budget: a slower host's 180 s scaled by a measured speed ratio.

``--env ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` runs every command with oneDNN's and ATen's kernels held
to AVX2 (recorded with the rows): a slower machine's instruction set on this one, not that machine.

Every run is a fresh ``cnnlab train`` process with ``OMP_NUM_THREADS=2``; each row keeps its result.json figures
(test accuracy, the fit's wall seconds, epochs and steps reached, the planned steps, whether the budget was cut
short). Nothing else should run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from ab_train import train_once
from bench import environment

KEPT = ("test_acc", "wall_s", "epochs", "epochs_trained", "steps", "budget_steps", "budget_cut",
        "budget_planned_before_cut", "time_to_target_s", "images_per_s")
GROUPS = {
    "fast": [("budget 60 s", ["lenet-bn-relu", "--recipe", "fast"]),
             ("10 epochs", ["lenet-bn-relu", "--recipe", "fast", "--epochs", "10"])],
    "cpu10": [("budget 600 s", ["compact", "--recipe", "cpu10"]),
              ("9 epochs", ["compact", "--recipe", "cpu10", "--epochs", "9"])],
    "to-target": [("stop at 92%", ["compact", "--recipe", "cpu10", "--target-acc", "0.92"]),
                  ("stop at 92%, no augmentation", ["compact", "--recipe", "cpu10", "--target-acc", "0.92",
                                                    "--no-augment"])],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=tuple(GROUPS), default=list(GROUPS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, help="write the rows to this JSON file")
    parser.add_argument("--env", nargs="+", default=[], metavar="KEY=VALUE", help="extra environment of every run")
    parser.add_argument("--to-target-budget", type=float, default=180.0, metavar="SECONDS",
                        help="the to-target runs' time budget (default 180)")
    args = parser.parse_args()
    env = {"OMP_NUM_THREADS": "2", **dict(item.split("=", 1) for item in args.env)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="cnnlab-budget-") as tmp:
        for group in args.only:
            for i, seed in enumerate(args.seeds):
                variants = GROUPS[group] if i % 2 == 0 else GROUPS[group][::-1]  # who goes first alternates
                for name, argv in variants:
                    argv = [*argv, "--seed", str(seed)]
                    if group == "to-target":
                        argv += ["--time-budget", f"{args.to_target_budget:g}"]
                    result = train_once(None, argv, Path(tmp) / f"{group}-{name}-{seed}".replace(" ", "_"),
                                        env=env)
                    row = {"group": group, "variant": name, "seed": seed, "command": "cnnlab train " + " ".join(argv),
                           **{k: result.get(k) for k in KEPT}}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    if args.out:
        record = {"environment": environment(), "run_env": env, "rows": rows}
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
