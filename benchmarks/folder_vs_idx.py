"""Fashion-MNIST as a folder of PNGs against its IDX files: the same pixels, the same accuracy, and what decoding costs.

The folder loader (``--dataset folder:PATH``, :mod:`cnnlab.data.folder`) must give a model the same data as the
IDX loader. This script

1. exports the four Fashion-MNIST files to ``WORKDIR/train/<class>/NNNNN.png`` and ``WORKDIR/test/<class>/NNNNN.png``
   with Pillow (``NNNNN`` = the image's index in its IDX split; class folders are the dataset's class names, with a
   ``<label>-`` prefix when their sorted order would not be the label order, as the loader sorts them);
2. times the first ``load_dataset("folder:WORKDIR")`` (the decode, into a fresh ``$CNNLAB_CACHE``) and then the
   cached load (median of ``--cached-repeats``), and checks that the decoded images and labels equal the IDX ones
   exactly: the loader lists each class folder's files sorted by name, so folder image ``i`` must equal IDX image
   ``order[i]``, where ``order`` is each class's IDX indices in ascending order, class by class;
3. trains the same recipes with ``cnnlab train`` on both (one subprocess each; which side goes first alternates
   with the seed and the run, so that a load spike on a shared machine hits both) and records test accuracy, wall
   time and images/s;
4. prints one JSON with the machine facts and writes it to ``--json-out`` (after every run, so a cut-off run keeps
   what it measured).

    OMP_NUM_THREADS=1 python benchmarks/folder_vs_idx.py --json-out benchmarks/results/folder_vs_idx.json
    python benchmarks/folder_vs_idx.py --quick   # a few hundred images, 1 epoch of 2 batches (CI; numbers meaningless)

The training order of the two sides differs (the folder's training images are grouped by class, the IDX ones are
not, and the loader's seeded permutation indexes into that order), and the folder's mean/std are computed from its
images while Fashion-MNIST's are the published constants, so accuracies agree within seed noise, not bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from cnnlab.data import load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.io import write_json
from cnnlab.runs.folder import environment

SPLITS = ("train", "test")
DEFAULT_RUNS = ("lenet-bn-relu:fast", "lenet:book")
QUICK = dict(per_class=(20, 10), epochs=1, limit_train_batches=2, limit_val_batches=1)


def folder_names(classes: tuple[str, ...]) -> tuple[str, ...]:
    """Class folder names whose sorted order is the label order (a zero-padded ``<label>-`` prefix when needed)."""
    safe = tuple(c.replace(os.sep, "-") for c in classes)
    if list(safe) == sorted(safe) and len(set(safe)) == len(safe):
        return safe
    width = len(str(len(safe) - 1))
    return tuple(f"{i:0{width}d}-{c}" for i, c in enumerate(safe))


def export_indices(labels: torch.Tensor, per_class: int | None) -> torch.Tensor:
    """The IDX indices to export: all, or the first ``per_class`` of each class (ascending)."""
    if per_class is None:
        return torch.arange(len(labels))
    keep = [torch.nonzero(labels == c).flatten()[:per_class] for c in labels.unique()]
    return torch.cat(keep).sort().values


def folder_order(labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """The IDX index of each image as the folder loader lists it: class by class, file names ascending."""
    return indices[torch.argsort(labels[indices], stable=True)]


def export_pngs(images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, folder: Path,
                names: tuple[str, ...]) -> int:
    """Write ``images[indices]`` as ``folder/<class>/NNNNN.png`` (grey, 8 bits); returns the bytes written."""
    from PIL import Image

    for name in names:
        (folder / name).mkdir(parents=True)
    total = 0
    for i in indices.tolist():
        path = folder / names[int(labels[i])] / f"{i:05d}.png"
        Image.fromarray(images[i, 0].numpy(), mode="L").save(path)
        total += path.stat().st_size
    return total


def same_data(folder, idx, indices: dict[str, torch.Tensor]) -> dict[str, bool]:
    """Per split: do the folder's images and labels equal the IDX ones at :func:`folder_order` positions?"""
    result = {}
    for split in SPLITS:
        images, labels = getattr(idx, f"{split}_images"), getattr(idx, f"{split}_labels")
        order = folder_order(labels, indices[split])
        result[split] = bool(torch.equal(getattr(folder, f"{split}_images"), images[order])
                             and torch.equal(getattr(folder, f"{split}_labels"), labels[order]))
    return result


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def shown(argv: list[str], scratch: Path, source: Path) -> str:
    """A command as a person would type it: ``cnnlab ...``, the scratch folder as ``$TMP``."""
    text = shlex.join(argv).replace(str(scratch), "$TMP").replace(str(source), "$CNNLAB_DATA")
    return text.replace(shlex.join([sys.executable, "-m", "cnnlab"]), "cnnlab").replace(sys.executable, "python")


def train_once(side: str, model: str, recipe: str, seed: int, args: argparse.Namespace, scratch: Path,
               workdir: Path) -> dict[str, Any]:
    """One ``cnnlab train`` subprocess on ``side`` ("idx" or "folder"); its result.json figures and the command."""
    out = scratch / "runs" / f"{side}-{model}-{recipe}-seed{seed}"
    data = ["--dataset", f"folder:{workdir}"] if side == "folder" else ["--dataset", "fashion-mnist",
                                                                        "--data-dir", str(args.source)]
    argv = [sys.executable, "-m", "cnnlab", "train", model, "--recipe", recipe, "--epochs", str(args.epochs),
            "--seed", str(seed), *data, "--out", str(out), "--device", args.device, "--quiet", "--no-report"]
    for flag in ("limit_train_batches", "limit_val_batches"):
        if getattr(args, flag) is not None:
            argv += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    load = os.getloadavg()[0]
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "CNNLAB_CACHE": str(scratch /
                                                                                                       "cache")})
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise CnnlabError(f"cnnlab train on the {side} side failed (exit {done.returncode}): {last}")
    result = json.loads((out / "result.json").read_text())
    keep = ("test_acc", "test_loss", "wall_s", "images_per_s", "epochs", "dataset")
    result["dataset"] = str(result.get("dataset")).replace(str(scratch), "$TMP")
    return {"side": side, "model": model, "recipe": recipe, "seed": seed, **{k: result.get(k) for k in keep},
            "load_avg_1m": round(load, 2), "command": shown(argv, scratch, args.source)}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and recipe: both sides' accuracies by seed, their mean difference, median images/s."""
    rows = []
    for model, recipe in dict.fromkeys((r["model"], r["recipe"]) for r in runs):
        row: dict[str, Any] = {"model": model, "recipe": recipe}
        by_side = {s: {r["seed"]: r for r in runs if (r["model"], r["recipe"], r["side"]) == (model, recipe, s)}
                   for s in ("idx", "folder")}
        for side, by_seed in by_side.items():
            row[f"{side}_test_acc"] = {seed: r["test_acc"] for seed, r in sorted(by_seed.items())}
            if by_seed:
                row[f"{side}_images_per_s_median"] = statistics.median(r["images_per_s"] for r in by_seed.values())
                row[f"{side}_wall_s_median"] = statistics.median(r["wall_s"] for r in by_seed.values())
        paired = sorted(set(by_side["idx"]) & set(by_side["folder"]))
        if paired:
            diffs = [by_side["folder"][s]["test_acc"] - by_side["idx"][s]["test_acc"] for s in paired]
            row["folder_minus_idx_mean"] = statistics.mean(diffs)
            if len(paired) > 1:
                spread = [statistics.stdev(r["test_acc"] for r in by_side[s].values()) for s in by_side]
                row["seed_stdev_idx_folder"] = spread
        rows.append(row)
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, default=os.environ.get("CNNLAB_DATA"),
                   help="folder with the four Fashion-MNIST files (default: $CNNLAB_DATA); only read")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the PNGs go (must not exist yet; default: a temporary folder); removed unless --keep")
    p.add_argument("--keep", action="store_true", help="keep the PNGs, the decode cache and the run folders")
    p.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), metavar="MODEL:RECIPE",
                   help=f"what to train on both sides (default: {' '.join(DEFAULT_RUNS)})")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--cached-repeats", type=int, default=3)
    p.add_argument("--device", default="cpu", help="cnnlab train's --device for every run")
    p.add_argument("--per-class", type=int, nargs=2, default=None, metavar=("TRAIN", "TEST"),
                   help="export only the first TRAIN / TEST images of each class (default: all 70,000)")
    p.add_argument("--limit-train-batches", type=int, default=None)
    p.add_argument("--limit-val-batches", type=int, default=None)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 20 + 10 images per class, the first run only, 1 epoch of 2 batches, 1 seed")
    p.add_argument("--json-out", type=Path, default=None, help="also write the result here as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.runs, args.seeds = args.runs[:1], args.seeds[:1]
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.source is None or not Path(args.source).is_dir():
        raise SystemExit(f"expected --source or $CNNLAB_DATA to name the Fashion-MNIST folder; got {args.source}")
    if args.workdir is not None and args.workdir.exists():
        raise SystemExit(f"--workdir {args.workdir} exists; expected a new folder (nothing is overwritten)")
    if args.json_out is not None and args.json_out.exists():
        raise SystemExit(f"--json-out {args.json_out} exists; expected a new file (nothing is overwritten)")
    args.source = Path(args.source).resolve()
    runs = [tuple(spec.split(":", 1)) for spec in args.runs]
    if any(len(r) != 2 for r in runs):
        raise SystemExit(f"--runs expects MODEL:RECIPE items, got {' '.join(args.runs)}")
    scratch = Path(tempfile.mkdtemp(prefix="cnnlab-folder-vs-idx-"))
    workdir = (args.workdir or scratch / "fashion-mnist-png").resolve()
    os.environ["CNNLAB_CACHE"] = str(scratch / "cache")  # a fresh cache: the first folder load decodes
    out: dict[str, Any] = {"program": "folder_vs_idx", "command": shown([sys.executable, *sys.argv], scratch,
                                                                        args.source),
                           "environment": environment(torch.device("cpu")), "load_avg_before": os.getloadavg(),
                           "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    try:
        code = measure(args, runs, scratch, workdir, out)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
            if args.workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(out, indent=2))
    return code


def measure(args: argparse.Namespace, runs: list[tuple[str, str]], scratch: Path, workdir: Path,
            out: dict[str, Any]) -> int:
    def save() -> None:
        out["load_avg_after"] = os.getloadavg()
        if args.json_out is not None:
            write_json(args.json_out, out)

    idx, out["idx_load_s"] = timed(load_dataset, "fashion-mnist", args.source, download=False)
    names = folder_names(idx.classes)
    per_class = dict(zip(SPLITS, args.per_class or (None, None), strict=True))
    indices = {s: export_indices(getattr(idx, f"{s}_labels"), per_class[s]) for s in SPLITS}
    start = time.perf_counter()
    out["png_bytes"] = sum(export_pngs(getattr(idx, f"{s}_images"), getattr(idx, f"{s}_labels"), indices[s],
                                       workdir / s, names) for s in SPLITS)
    out["export_s"] = time.perf_counter() - start
    out["images"] = {s: len(indices[s]) for s in SPLITS}
    folder, out["decode_s"] = timed(load_dataset, f"folder:{workdir}")
    cached = [timed(load_dataset, f"folder:{workdir}")[1] for _ in range(args.cached_repeats)]
    out["cached_load_s"] = {"median": statistics.median(cached), "runs": cached}
    out["classes"] = {"folder": list(folder.classes), "idx": list(idx.classes)}
    out["mean_std"] = {"folder": [folder.mean, folder.std], "idx": [idx.mean, idx.std]}
    exact = same_data(folder, idx, indices)
    exact["classes"] = folder.classes == names
    out["exact"] = {**exact, "how": "folder image i == IDX image order[i] and the same label, where order lists each "
                                   "class's IDX indices ascending (files are named by IDX index and the loader "
                                   "sorts by class, then file name); torch.equal on uint8 images and int64 labels"}
    out["runs"] = []
    save()
    for seed in args.seeds:
        for j, (model, recipe) in enumerate(runs):
            # The side that goes first alternates with seed and run, the same in a run split over invocations.
            for side in ("folder", "idx") if (seed + j) % 2 else ("idx", "folder"):
                out["runs"].append(train_once(side, model, recipe, seed, args, scratch, workdir))
                out["summary"] = summarise(out["runs"])
                save()
    return 0 if all(exact.values()) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CnnlabError as e:
        sys.exit(f"folder_vs_idx: error: {e}")
