"""Own images: fine-tuning, augmentation presets and class balance, measured on images nobody here made.

    OMP_NUM_THREADS=1 python benchmarks/practitioner_demo.py --out benchmarks/results/practitioner-demo-avx512.json
    python benchmarks/practitioner_demo.py --only digits --seeds 0 1 2
    python benchmarks/practitioner_demo.py --table benchmarks/results/practitioner-demo-avx512.json  # tables again
    python benchmarks/practitioner_demo.py --quick   # smoke: one seed, 1 epoch of 2 batches (numbers meaningless)

Two demonstrations of the practitioner features (docs/benchmarks.md, "Own images"), every seed kept:

``digits``: scikit-learn's bundled handwritten digits (``sklearn.datasets.load_digits``: 1,797 scans of 8 x 8
pixels, values 0..16, from the UCI optdigits set), scaled to 0..255 and written once as grey PNGs to
``<cache>/practitioner-demo/sklearn-digits/{train,test}/<digit>/NNNNN.png`` with a seeded stratified 80/20 split
(1,438 / 359 images, so every variant is scored on the same test images); ``load_dataset("folder:...",
image_size=28)`` decodes them, as ``cnnlab train --dataset folder:PATH --image-size 28`` does. One source
checkpoint is trained on Fashion-MNIST (``lenet-bn-relu --recipe fast``, seed 0); then every variant trains
``lenet-bn-relu`` with the finetune recipe's optimizer (AdamW, one-cycle, batch 64) and ``--normalize``, started
three ways (STARTS): from scratch, fine-tuned as the recipe does it, and from the checkpoint's weights trained
exactly as scratch is; each under every ``--augment`` preset, and without augmentation at a shorter and a longer
budget. Digits are never mirrored: flips are off (see NO_FLIP).

``unbalanced``: Fashion-MNIST with two classes (shirt, sneaker) kept at 5% of their training images (a seeded
choice, the same cut for every run; the test set untouched), ``lenet-bn-relu --recipe fast`` with ``--balance
none|sampler|loss``, and the full training set as a reference; macro-F1 and the rare classes' recall and precision
on the 10,000 test images.

Every run goes through the library in this process, the path ``cnnlab train`` takes (``make_config`` ->
``build_run(config, dataset=...)`` -> ``Trainer`` with the ``RunFolder`` observer, then the run folder's
result.json read back through ``cnnlab.runs.Run``), because the Fashion-MNIST cut is a dataset value the command
line cannot name; the digits runs set ``flip=False`` (``--no-flip``: digits are not mirror-symmetric). Each
row records the ``cnnlab train`` command it corresponds to. Accuracy is measured, not time: wall seconds are kept in
the JSON only as the compute used. On a shared machine run it with one thread (``OMP_NUM_THREADS=1``): a digits run
of 23 steps an epoch took several times as long on two threads whose cores other processes were also using.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import cnnlab
from bench import environment
from cnnlab.data import AUGMENTS, ImageDataset, channel_stats, load_dataset, resolve_data_dir, stratified_split
from cnnlab.data.store import cache_root
from cnnlab.errors import CnnlabError
from cnnlab.io import write_json
from cnnlab.runs import Run, RunFolder, prepare_run_dir, read_json
from cnnlab.train import Trainer, build_run, make_config, train
from folder_vs_idx import export_pngs

PARTS = ("digits", "unbalanced")
MODEL = "lenet-bn-relu"  # the BN LeNet of d2l 8.5 with ReLU: 45k parameters, 28 px, seconds per run here
DIGITS_FOLDER = "practitioner-demo/sklearn-digits"  # under the cache (CNNLAB_CACHE or ~/.cache/cnnlab)
DIGITS_TEST, DIGITS_SPLIT_SEED, DIGITS_SIZE = 0.2, 0, 28
DIGITS_EPOCHS = 10  # the grid: both starts under every preset
BUDGET_EPOCHS = (3, 30)  # both starts again without augmentation: a shorter and a longer budget
# The same optimizer, schedule and batch for both starts; contiguous tensors, as the fast recipe keeps BN-LeNet
# (channels-last batch norm at 6 and 16 channels took twice as long per step here).
DIGITS_RECIPE = dict(recipe="finetune", normalize=True, channels_last=False)
# How each digits run starts; SOURCE is the Fashion-MNIST checkpoint. scratch: one one-cycle over every layer
# from Xavier weights. finetune: the recipe as it stands (the body frozen for the first epoch, then every layer
# with the body at a tenth of the lr). init-from: the checkpoint's weights trained exactly as scratch is, so the
# two differ in the starting weights alone.
STARTS = {"scratch": dict(freeze_epochs=0), "finetune": dict(init_from="SOURCE"),
          "init-from": dict(init_from="SOURCE", freeze_epochs=0)}
RARE, RARE_SHARE, CUT_SEED = ("shirt", "sneaker"), 0.05, 0
BALANCES = ("none", "sampler", "loss")
# The fast recipe's 10 epochs, named: a run's length must not depend on the host's speed under contention (a time
# budget would), since these runs measure accuracy.
FAST_EPOCHS = 10
QUICK = dict(limit_train_batches=2, limit_val_batches=2)  # and 1 epoch
# Digits are not mirror-symmetric (a mirrored 2 is no digit), while a folder dataset assumes flips keep the class
# (cnnlab.data.folder): the runs set --no-flip, so that crop-flip and the policies after it never mirror.
NO_FLIP = dict(flip=False)


# -- data --------------------------------------------------------------------------------------------------------
def digits_folder() -> Path:
    """The digits as ``train/<digit>/`` + ``test/<digit>/`` PNGs in the cache, written once (then reused)."""
    root = cache_root().expanduser() / DIGITS_FOLDER
    if root.is_dir():
        return root
    from sklearn.datasets import load_digits  # the dev extra's scikit-learn; bundled data, nothing downloaded

    digits = load_digits()
    images = torch.from_numpy(digits.images).mul(255 / 16).round().clamp(0, 255).to(torch.uint8)[:, None]
    labels = torch.from_numpy(digits.target).long()
    train_idx, test_idx = stratified_split(labels, DIGITS_TEST, seed=DIGITS_SPLIT_SEED)
    names = tuple(str(d) for d in range(10))
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".sklearn-digits-", dir=root.parent))
    for split, indices in (("train", train_idx), ("test", test_idx)):
        export_pngs(images, labels, indices, tmp / split, names)
    tmp.rename(root)  # whole or absent: a cut-off export is never mistaken for the data
    return root


def load_digits_dataset(image_size: int = DIGITS_SIZE) -> ImageDataset:
    return load_dataset(f"folder:{digits_folder()}", image_size=image_size)  # flips: off by the runs' --no-flip


def rare_cut(data: ImageDataset, rare: tuple[str, ...] = RARE, share: float = RARE_SHARE,
             seed: int = CUT_SEED) -> ImageDataset:
    """``data`` with each ``rare`` class keeping a seeded ``share`` of its training images (test set untouched)."""
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for label, name in enumerate(data.classes):
        idx = torch.nonzero(data.train_labels == label).flatten()
        if name in rare:
            idx = idx[torch.randperm(len(idx), generator=generator)[:max(1, round(share * len(idx)))]]
        keep.append(idx)
    kept = torch.cat(keep).sort().values
    images = data.train_images[kept]
    mean, std = channel_stats(images)
    note = f"; {', '.join(rare)} cut to {share:.0%} of their training images (seed {seed})"
    return dataclasses.replace(data, name=f"{data.name}-cut", train_images=images, train_labels=data.train_labels[kept],
                               mean=mean, std=std, description=data.description + note,
                               train_digests=None if data.train_digests is None else data.train_digests[kept])


# -- runs ---------------------------------------------------------------------------------------------------------
def command(overrides: dict[str, Any], dataset: str) -> str:
    """The ``cnnlab train`` command a run corresponds to (the library's keyword arguments as flags)."""
    flags = [MODEL, "--dataset", dataset]
    for key, value in overrides.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        elif value is not None:
            flags += [flag, str(value)]
    return "cnnlab train " + " ".join(flags)


def fit(data: ImageDataset, out: Path, *, recipe: str, **overrides: Any) -> dict[str, Any]:
    """One run of MODEL on ``data`` (what ``cnnlab train`` does with a dataset value); its result.json and the last
    epoch's training accuracy."""
    config = make_config(MODEL, recipe, out=str(out), **overrides)
    path = prepare_run_dir(config.out, config.model)
    parts = build_run(config, dataset=data, quiet=True)
    history = Trainer(parts, run_dir=path, observers=[RunFolder(path)], quiet=True).fit()
    run = Run.open(path)
    shutil.rmtree(path)  # the figures are read; the checkpoints are not needed
    return {**run.result, "train_acc": history[-1]["train_acc"] if history else None,
            "val_acc_per_epoch": [round(row["val_acc"], 4) for row in history]}


def figures(result: dict[str, Any], classes: tuple[str, ...]) -> dict[str, Any]:
    """The figures kept per run: accuracy, macro-F1, loss, and each named class's recall, precision and F1."""
    row = {k: result[k] for k in ("test_acc", "macro_f1", "test_loss", "train_acc", "epochs", "val_acc_per_epoch",
                                  "wall_s")}
    for name in classes:
        scores = result["per_class"][name]
        row.update({f"{k}_{name}": scores[k] for k in ("recall", "precision", "f1")})
    return row


def digits_variants(epochs_grid: int, budgets: tuple[int, ...]) -> list[dict[str, Any]]:
    """(epochs, start, augment) of every digits variant: the grid, then every start at the other budgets."""
    grid = [dict(epochs=epochs_grid, start=s, augment=a) for s in STARTS for a in AUGMENTS]
    return grid + [dict(epochs=e, start=s, augment="none") for e in budgets for s in STARTS]


def run_digits(seeds: list[int], args: argparse.Namespace, scratch: Path, record) -> None:
    data = load_digits_dataset()
    source = args.source_ckpt
    if source is None:  # one Fashion-MNIST checkpoint for every fine-tuned run
        source_dir = scratch / "source"
        extra = dict(QUICK, epochs=1) if args.quick else dict(epochs=FAST_EPOCHS)
        train(MODEL, "fast", seed=0, out=str(source_dir), data_dir=args.data_dir, quiet=True, report=False, **extra)
        src = Run.open(source_dir).result
        record("source", {"command": command(dict(recipe="fast", **extra, seed=0), "fashion-mnist"),
                          **{k: src[k] for k in ("test_acc", "macro_f1", "epochs", "wall_s")}})
        source = source_dir / "last.pt"
    shown = f"folder:{digits_folder()}".replace(str(Path.home()), "~")
    variants = digits_variants(1 if args.quick else DIGITS_EPOCHS, () if args.quick else BUDGET_EPOCHS)
    for seed in seeds:
        for v in variants:
            overrides = {**DIGITS_RECIPE, "image_size": DIGITS_SIZE, "epochs": v["epochs"], "augment": v["augment"],
                         **NO_FLIP, **STARTS[v["start"]], "seed": seed, **(QUICK if args.quick else {})}
            shown_cmd = command(overrides, shown).replace("--init-from SOURCE", "--init-from SOURCE/last.pt")
            if "init_from" in overrides:
                overrides["init_from"] = str(source)
            result = fit(data, scratch / "run", **overrides)
            record("digits", {**v, "seed": seed, **figures(result, ()), "flip": overrides["flip"],
                              "command": shown_cmd})


def run_unbalanced(seeds: list[int], args: argparse.Namespace, scratch: Path, record) -> None:
    full = load_dataset("fashion-mnist", args.data_dir)
    cut = rare_cut(full)
    extra = dict(QUICK, epochs=1) if args.quick else dict(epochs=FAST_EPOCHS)
    variants = [("cut", b) for b in BALANCES] + [("full", "none")]
    for seed in seeds:
        for train_set, balance in variants:
            data = cut if train_set == "cut" else full
            overrides = dict(recipe="fast", balance=balance, seed=seed, **extra)
            result = fit(data, scratch / "run", **overrides)
            record("unbalanced", {"train_set": train_set, "balance": balance, "seed": seed,
                                  "train_images": len(data.train_images), **figures(result, RARE),
                                  "command": command(overrides, "fashion-mnist") + (
                                      f" (training set: {', '.join(RARE)} at {RARE_SHARE:.0%})"
                                      if train_set == "cut" else "")})


# -- summary ------------------------------------------------------------------------------------------------------
def spread(values: list[float], sign: str = "") -> str:
    """``mean ± sample standard deviation`` of the values (the ± left out for one value); ``sign="+"`` signs the
    mean (for differences)."""
    mean = f"{statistics.mean(values):{sign}.4f}"
    return f"{mean} ± {statistics.stdev(values):.4f}" if len(values) > 1 else mean


def group(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple, list[dict[str, Any]]]:
    """Rows by the values of ``keys``, in first-seen order, each group sorted by seed."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in groups.items()}


def cell(rows: list[dict[str, Any]], metric: str) -> str:
    values = [r[metric] for r in rows]
    return f"**{spread(values)}** ({' / '.join(f'{v:.4f}' for v in values)})"


def paired(a: list[dict[str, Any]], b: list[dict[str, Any]], metric: str) -> str:
    """``a - b`` per seed (the seeds both have), as mean ± std and every value."""
    b_by_seed = {r["seed"]: r[metric] for r in b}
    diffs = [r[metric] - b_by_seed[r["seed"]] for r in a if r["seed"] in b_by_seed]
    if not diffs:
        return "-"
    return f"**{spread(diffs, '+')}** ({' / '.join(f'{d:+.4f}' for d in diffs)})"


def tables(result: dict[str, Any]) -> str:
    """The result file's runs as Markdown tables: every seed's value and mean ± std, and paired differences."""
    runs, out = result["runs"], []
    digits = [r for r in runs if r["part"] == "digits"]
    if digits:
        by = group(digits, ("epochs", "start", "augment"))
        out += ["| epochs | start | --augment | test accuracy, mean ± std (per seed) | macro-F1 | last epoch's "
                "train accuracy |", "|---:|---|---|---|---|---|"]
        out += [f"| {e} | {s} | {a} | {cell(rs, 'test_acc')} | {cell(rs, 'macro_f1')} | "
                f"{spread([r['train_acc'] for r in rs])} |" for (e, s, a), rs in by.items()]
        out += ["", "| epochs | start | --augment | test accuracy, minus scratch's (per seed) |",
                "|---:|---|---|---|"]
        out += [f"| {e} | {s} | {a} | {paired(rs, by[(e, 'scratch', a)], 'test_acc')} |"
                for (e, s, a), rs in by.items() if s != "scratch" and (e, "scratch", a) in by]
        out += ["", "| epochs | start | --augment | test accuracy, preset minus none (per seed) |",
                "|---:|---|---|---|"]
        out += [f"| {e} | {s} | {a} | {paired(rs, by[(e, s, 'none')], 'test_acc')} |"
                for (e, s, a), rs in by.items() if a != "none" and (e, s, "none") in by]
    unbalanced = [r for r in runs if r["part"] == "unbalanced"]
    if unbalanced:
        by = group(unbalanced, ("train_set", "balance"))
        rare = [k.removeprefix("recall_") for k in unbalanced[0] if k.startswith("recall_")]
        out += ["" if out else None, "| training set | --balance | test accuracy | macro-F1 | "
                + " | ".join(f"recall {n}" for n in rare) + " | " + " | ".join(f"precision {n}" for n in rare)
                + " |", "|---|---|---|---|" + "---|" * 2 * len(rare)]
        out += [f"| {t} | {b} | {cell(rs, 'test_acc')} | {cell(rs, 'macro_f1')} | "
                + " | ".join(cell(rs, f"recall_{n}") for n in rare) + " | "
                + " | ".join(cell(rs, f"precision_{n}") for n in rare) + " |" for (t, b), rs in by.items()]
        out += ["", "| --balance | macro-F1, minus none's | "
                + " | ".join(f"recall {n}, minus none's" for n in rare) + " |", "|---|---|" + "---|" * len(rare)]
        out += [f"| {b} | {paired(rs, by[('cut', 'none')], 'macro_f1')} | "
                + " | ".join(paired(rs, by[("cut", "none")], f"recall_{n}") for n in rare) + " |"
                for (t, b), rs in by.items() if t == "cut" and b != "none" and ("cut", "none") in by]
    return "\n".join(line for line in out if line is not None)


# -- main ---------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="practitioner_demo.py", description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=PARTS, help="one demonstration (default: both)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="training seeds (default 0-4)")
    p.add_argument("--out", type=Path, help="write every run's figures here as JSON (after each run)")
    p.add_argument("--data-dir", help="Fashion-MNIST folder (default: $CNNLAB_DATA, then the cache); only read")
    p.add_argument("--source-ckpt", type=Path,
                   help=f"fine-tune from this checkpoint instead of training {MODEL} --recipe fast on Fashion-MNIST")
    p.add_argument("--quick", action="store_true", help="smoke run: the first seed, 1 epoch of 2 batches a run")
    p.add_argument("--table", type=Path, metavar="FILE.json", help="print the tables of a result file; train nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.table is not None:
        print(tables(read_json(args.table)))
        return 0
    if args.out is not None and args.out.exists():
        raise SystemExit(f"--out {args.out} exists; expected a new file (nothing is overwritten)")
    if args.source_ckpt is not None and not args.source_ckpt.is_file():
        raise SystemExit(f"--source-ckpt {args.source_ckpt}: no such checkpoint")
    args.data_dir = str(resolve_data_dir(args.data_dir))
    seeds = args.seeds[:1] if args.quick else args.seeds
    result: dict[str, Any] = {"script": "benchmarks/practitioner_demo.py " + " ".join(argv or sys.argv[1:]),
                              "environment": environment(),
                              "cnnlab_source": str(Path(cnnlab.__file__).parent).replace(str(Path.home()), "~"),
                              "torch_threads": torch.get_num_threads(), "seeds": seeds, "runs": []}
    started = time.perf_counter()

    def record(part: str, row: dict[str, Any]) -> None:
        row = {"part": part, **row, "load_avg_1m": round(os.getloadavg()[0], 2)}
        result["runs"].append(row)
        result["compute_s"] = round(time.perf_counter() - started, 1)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if k != "command"},
              flush=True)
        if args.out is not None:
            write_json(args.out, result)

    scratch = Path(tempfile.mkdtemp(prefix="cnnlab-practitioner-"))
    try:
        for part, run in (("digits", run_digits), ("unbalanced", run_unbalanced)):
            if args.only in (None, part):
                run(seeds, args, scratch, record)
    except CnnlabError as e:
        print(f"practitioner_demo.py: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(tables(result))
    print(f"compute: {result['compute_s']:.0f} s on {torch.get_num_threads()} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
