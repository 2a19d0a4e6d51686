"""A briefly trained LeNet run folder on the real data, shared by the evaluate/report/predict/export tests.

Trained here with a plain torch loop (not the Trainer) so these tests judge the report side alone. The model is the
7.6-exercise LeNet (ReLU, max pooling): the book's sigmoid LeNet sits on its loss plateau at 10% accuracy for the
first few hundred steps at any of lr 0.9 plain SGD or lr 0.1 with momentum (measured), while 100 steps of SGD with
momentum take the ReLU variant to about 67% test accuracy, enough for predictions and confusion matrices to mean
something. The run folder holds the files `cnnlab train` writes, built with the trainer's own run-folder helpers.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cnnlab.data import CLASSES, MEAN, STD, load_fashion_mnist
from cnnlab.io import write_json, write_metrics_csv
from cnnlab.models import create_model
from cnnlab.models.init import init_cnn
from cnnlab.runs.checkpoint import save_checkpoint

MODEL, STEPS, BATCH, LR, MOMENTUM, SEED = "lenet-relu", 100, 128, 0.1, 0.9, 0


def train_lenet(out: Path) -> Path:
    """Train the LeNet variant for ``STEPS`` steps and write a run folder at ``out``; returns ``out``."""
    data = load_fashion_mnist()
    torch.manual_seed(SEED)
    model = create_model(MODEL)
    model.apply(init_cnn)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    g = torch.Generator().manual_seed(SEED)
    order = torch.randperm(len(data.train_labels), generator=g)[: STEPS * BATCH]
    start, history, losses = time.perf_counter(), [], []
    for step in range(STEPS):
        idx = order[step * BATCH:(step + 1) * BATCH]
        x = data.train_images[idx].unsqueeze(1).float() / 255
        loss = F.cross_entropy(model(x), data.train_labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (step + 1) % 50 == 0:  # two "epochs" of 50 steps so the curves have more than one point
            with torch.no_grad():
                model.eval()
                xv = data.test_images[:2000].unsqueeze(1).float() / 255
                logits = model(xv)
                model.train()
            seconds = time.perf_counter() - start
            history.append({
                "epoch": len(history) + 1, "train_loss": sum(losses[-50:]) / 50, "train_acc": float("nan"),
                "val_loss": F.cross_entropy(logits, data.test_labels[:2000]).item(),
                "val_acc": (logits.argmax(1) == data.test_labels[:2000]).float().mean().item(),
                "lr": LR, "seconds": seconds, "images_per_s": 50 * BATCH / max(seconds, 1e-9),
            })
            start = time.perf_counter()
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    config = {"model": MODEL, "recipe": "book", "epochs": len(history), "batch_size": BATCH, "lr": LR,
              "optimizer": "sgd", "momentum": MOMENTUM, "tta": False, "seed": SEED}
    dataset = {"name": "fashion-mnist", "classes": list(CLASSES), "channels": 1, "image_size": 28, "mean": [MEAN],
               "std": [STD], "flip": True}
    save_checkpoint({"model_name": MODEL, "num_classes": len(CLASSES), "in_channels": 1, "input_size": 28,
                     "normalize": None, "ops": "torch", "dataset": dataset, "config": config,
                     "model": model.state_dict(),
                     "epoch": len(history), "step": STEPS, "history": history,
                     "best_val_acc": max(r["val_acc"] for r in history)}, out / "last.pt")
    shutil.copy(out / "last.pt", out / "best.pt")
    write_json(out / "config.json", {"config": config, "input_size": 28, "normalize": None,
                                            "params": sum(p.numel() for p in model.parameters()), "world_size": 1})
    write_metrics_csv(out / "metrics.csv", history)
    write_json(out / "result.json", {
        "model": MODEL, "recipe": "book", "epochs": len(history), "test_acc": history[-1]["val_acc"],
        "best_val_acc": max(r["val_acc"] for r in history), "images_per_s": STEPS * BATCH / sum(
            r["seconds"] for r in history), "wall_s": sum(r["seconds"] for r in history), "world_size": 1,
        "device": "cpu", "params": sum(p.numel() for p in model.parameters()), "input_size": 28, "seed": SEED})
    return out


_CACHE: dict[str, Path] = {}


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """Run folder of a briefly trained ReLU LeNet, trained once per session (test modules import this fixture)."""
    if "run" not in _CACHE:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # LeNet's tiny convs gain nothing from threads, and a busy CI box loses a lot
        try:
            _CACHE["run"] = train_lenet(tmp_path_factory.mktemp("trained-lenet") / "run")
        finally:
            torch.set_num_threads(threads)
    return _CACHE["run"]


@pytest.fixture()
def run_copy(trained_run, tmp_path) -> Path:
    """A private copy of the trained run folder that a test may modify."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))
