"""Before and after a change, side by side: one ``cnnlab train`` command under two source trees, alternated.

``python benchmarks/ab_train.py --before COMMIT [--rounds 3] [--out FILE.json] -- lenet --epochs 3``
``python benchmarks/ab_train.py --before-args=--no-channels-last --after-args=--channels-last -- lenet-bn-relu ...``

The ``--before`` commit's ``src/`` is extracted (``git archive``) into a temporary folder and put first on
``PYTHONPATH``, so the same interpreter, torch and data run both trees; this checkout is the "after" side. Without
``--before`` both sides run this checkout, and ``--before-args`` / ``--after-args`` (added to one side's command)
are the change. Each round runs both, the side that goes first alternating from round to round, so a load spike or
a thermal drift hits both.
The figures are each side's median images/s and the median of the per-round ratios (after / before), with every
round's rows, the machine (with the vector ISA torch dispatches to), the versions and both commits.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from bench import environment

ROOT = Path(__file__).resolve().parents[1]


def extract(commit: str, into: Path) -> Path:
    """``commit``'s src/ under ``into``; returns that src folder."""
    archive = subprocess.run(["git", "archive", "--format=tar", commit, "src"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    tar = into / "src.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")
    return into / "src"


def train_once(src: Path | None, argv: list[str], out: Path, env: dict[str, str] | None = None) -> dict:
    """One ``python -m cnnlab train ARGV --out OUT`` with ``src`` first on PYTHONPATH (None: this checkout), with
    ``env`` added to the environment; returns its result.json."""
    env = {**os.environ, **(env or {})}
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "cnnlab", "train", *argv, "--out", str(out), "--quiet", "--no-report"]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "result.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="the commit to compare this checkout with (default: this checkout)")
    parser.add_argument("--before-args", default="", help="arguments added to the before side's command only")
    parser.add_argument("--after-args", default="", help="arguments added to the after side's command only")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both sides (default 3)")
    parser.add_argument("--out", type=Path, help="write the rows and figures to this JSON file")
    parser.add_argument("train", nargs=argparse.REMAINDER, help="cnnlab train's arguments, after --")
    args = parser.parse_args()
    argv = [a for a in args.train if a != "--"] or ["lenet", "--epochs", "1"]
    extra = {"before": shlex.split(args.before_args), "after": shlex.split(args.after_args)}
    if args.before is None and extra["before"] == extra["after"]:
        parser.error("nothing differs between the sides: give --before COMMIT, or --before-args/--after-args")
    commit = subprocess.run(["git", "rev-parse", args.before], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip() if args.before else "this checkout"
    rows = []
    with tempfile.TemporaryDirectory(prefix="cnnlab-ab-") as tmp:
        before_src = extract(commit, Path(tmp)) if args.before else None  # None: this checkout
        for r in range(args.rounds):
            sides = [("before", before_src), ("after", None)]
            for side, src in sides if r % 2 == 0 else sides[::-1]:
                result = train_once(src, argv + extra[side], Path(tmp) / f"{side}-{r}")
                row = {"round": r, "side": side,
                       **{k: result[k] for k in ("images_per_s", "wall_s", "test_acc", "epochs")}}
                rows.append(row)
                print(json.dumps(row), flush=True)
    speed = {s: [x["images_per_s"] for x in rows if x["side"] == s] for s in ("before", "after")}
    ratios = [a / b for a, b in zip(speed["after"], speed["before"], strict=True)]
    summary = {"command": "cnnlab train " + " ".join(argv),
               "before_commit": commit,
               "before_args": extra["before"], "after_args": extra["after"],
               "median_images_per_s": {s: statistics.median(v) for s, v in speed.items()},
               "median_ratio_after_before": statistics.median(ratios), "ratios": ratios,
               "environment": environment(), "rows": rows}
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
