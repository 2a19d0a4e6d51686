"""How long the CLI takes to answer what needs no network: help, an argument error, the two listings.

``python benchmarks/cli_startup.py [--before COMMIT] [--repeats 7] [--out FILE.json]``

Each command is a fresh ``python -m cnnlab ...`` process, timed from start to exit, so the figure is what a user
waits for. With ``--before``, that commit's ``src/`` (extracted as ``ab_train.py`` does) runs the same commands
with the same interpreter, the two sides alternating within every repeat. The figures are each command's median
seconds per side and the median of the per-repeat ratios (before / after), with every repeat kept.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ab_train import ROOT, extract
from bench import environment

COMMANDS = {
    "--help": ["--help"],
    "train --help": ["train", "--help"],
    "argument error": ["train", "--epochs", "x"],
    "models": ["models"],
    "datasets": ["datasets"],
}


def seconds(src: Path | None, argv: list[str]) -> float:
    """Wall seconds of one ``python -m cnnlab ARGV`` with ``src`` first on PYTHONPATH (None: this checkout)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cnnlab", *argv], env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="the commit to compare this checkout with")
    parser.add_argument("--repeats", type=int, default=7, help="runs of each command per side (default 7)")
    parser.add_argument("--out", type=Path, help="write the rows and figures to this JSON file")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", args.before], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip() if args.before else None
    rows = []
    with tempfile.TemporaryDirectory(prefix="cnnlab-startup-") as tmp:
        sides = [("after", None)] + ([("before", extract(commit, Path(tmp)))] if commit else [])
        for r in range(args.repeats):
            for name, argv in COMMANDS.items():
                for side, src in sides if r % 2 == 0 else sides[::-1]:
                    rows.append({"repeat": r, "command": name, "side": side, "s": seconds(src, argv)})
    figures = {}
    for name in COMMANDS:
        by_side = {side: [row["s"] for row in rows if row["command"] == name and row["side"] == side]
                   for side, _ in sides}
        figures[name] = {f"median_s_{side}": statistics.median(v) for side, v in by_side.items()}
        if commit:
            figures[name]["median_ratio_before_after"] = statistics.median(
                b / a for b, a in zip(by_side["before"], by_side["after"], strict=True))
    summary = {"before_commit": commit, "repeats": args.repeats, "figures": figures, "environment": environment(),
               "rows": rows}
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
