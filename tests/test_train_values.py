"""The Trainer takes a dataset and a model as values: any channels, sizes and classes; a validation split that
is not the test set; the run folder as an observer; early stopping, gradient accumulation, fine-tuning, and
resuming a finished or extended run."""

import dataclasses
import json
import math
import os
import signal

import pytest
import torch

import cnnlab.inference
from cnnlab.data import ImageDataset, stratified_split
from cnnlab.errors import CnnlabError, Interrupted, StopRun
from cnnlab.inference import load_trained
from cnnlab.lr_find import lr_find
from cnnlab.models import create_model, list_models
from cnnlab.runs import Run
from cnnlab.runs.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.runs.folder import RunFolder
from cnnlab.train import build_run, build_trainer, make_config, resume, train
from cnnlab.train.build import _set_determinism
from cnnlab.train.trainer import Trainer

CLASSES = ("red", "green", "blue")


def colour_dataset(n_train=300, n_test=90, side=32, channels=3, seed=0, name="colours") -> ImageDataset:
    """Class k is an image whose channel k (mod channels) is bright, plus noise: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        labels = torch.arange(n) % len(CLASSES)
        images = torch.randint(0, 90, (n, channels, side, side), generator=g, dtype=torch.int64)
        for k in range(len(CLASSES)):
            images[labels == k, k % channels] += 150 if channels > 1 else 50 * k
        return images.clamp(0, 255).to(torch.uint8), labels

    (tr, trl), (te, tel) = split(n_train), split(n_test)
    mean = tuple((tr.float() / 255).mean((0, 2, 3)).tolist())
    std = tuple((tr.float() / 255).std((0, 2, 3)).tolist())
    return ImageDataset(name, tr, trl, te, tel, CLASSES, mean, std, flip=True)


@pytest.fixture
def colours(monkeypatch):
    """Make the colour dataset what any run configured with dataset 'colours' loads."""
    data = colour_dataset()
    monkeypatch.setattr(cnnlab.inference, "dataset_of", lambda config, **_: data)
    return data


def quick(out, **kw):
    base = dict(dataset="colours", epochs=1, batch_size=32, lr=0.05, optimizer="nesterov", momentum=0.9,
                normalize=True, out=str(out), log_every=2)
    return {**base, **kw}


def test_trainer_fits_the_dataset_and_model_it_is_given(tmp_path):
    data = colour_dataset()
    model = create_model("lenet-relu", num_classes=3, in_channels=3)
    cfg = make_config("lenet-relu", **quick(tmp_path / "r", epochs=3))
    trainer = Trainer(build_run(cfg, dataset=data, model=model), run_dir=tmp_path / "r",
                      observers=[RunFolder(tmp_path / "r")], quiet=True)
    (tmp_path / "r").mkdir()
    history = trainer.fit()
    assert trainer.parts.input_size == 32  # a 28-px book model trains at the dataset's own size
    assert history[-1]["val_acc"] > 0.9 and trainer.result["test_acc"] > 0.9
    ckpt = load_checkpoint(tmp_path / "r" / "last.pt")
    assert ckpt["version"] == 2 and ckpt["num_classes"] == 3 and ckpt["in_channels"] == 3
    assert ckpt["dataset"]["classes"] == list(CLASSES) and ckpt["dataset"]["image_size"] == 32
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["dataset"]["name"] == "colours" and config["dataset"]["channels"] == 3
    trained = load_trained(tmp_path / "r" / "last.pt")
    assert trained.meta.classes == CLASSES and trained.meta.channels == 3
    logits = trained.logits(data.test_images)
    assert logits.shape == (90, 3)
    assert (logits.argmax(1) == data.test_labels).float().mean() == pytest.approx(trainer.result["test_acc"])


def test_a_trainer_without_a_run_folder_keeps_everything_in_memory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = colour_dataset()
    cfg = make_config("lenet-relu", **quick(None))
    trainer = Trainer(build_run(cfg, dataset=data, model=create_model("lenet-relu", num_classes=3, in_channels=3)),
                      quiet=True)
    trainer.fit()
    assert trainer.result["epochs"] == 1 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("channels,side", [(3, 32), (1, 28)])
def test_every_model_takes_two_steps_on_rgb_32_and_grey_28(name, channels, side, tmp_path):
    data = colour_dataset(n_train=16, n_test=8, side=side, channels=channels)
    cfg = make_config(name, dataset="colours", epochs=1, batch_size=8, limit_train_batches=2, limit_val_batches=1,
                      resize=max(side, _min_side(name, channels)), out=str(tmp_path))
    model = create_model(name, num_classes=3, in_channels=channels)
    trainer = Trainer(build_run(cfg, dataset=data, model=model), quiet=True)
    trainer.fit()
    assert trainer.state.step == 2 and math.isfinite(trainer.state.history[0]["train_loss"])


def _min_side(name, channels):
    from cnnlab.models import min_input_size

    return min_input_size(name, channels)


def test_validation_split_is_held_out_of_training_and_test_is_reported_apart(colours, tmp_path):
    history = train("lenet-relu", quiet=True, report=False, **quick(tmp_path / "r", epochs=2, val_split=0.2))
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["val_split"] == 0.2 and result["status"] == "finished" and result["dataset"] == "colours"
    assert result["val_acc"] == history[-1]["val_acc"]
    assert result["test_samples"] == 90  # the final model on the whole test set, apart from validation
    trained = load_trained(tmp_path / "r" / "last.pt")
    test_acc = (trained.logits(colours.test_images).argmax(1) == colours.test_labels).float().mean().item()
    assert result["test_acc"] == pytest.approx(test_acc, abs=1e-6)
    trainer = build_trainer(make_config("lenet-relu", **quick(tmp_path / "s", val_split=60)), quiet=True)
    assert trainer.train_loader.num_samples == 240 and trainer.val_loader.num_samples == 60


def split_stats(images: torch.Tensor, idx: torch.Tensor) -> list[list[float]]:
    """[mean, std] per channel of ``images[idx]`` in [0, 1], computed here apart from cnnlab's channel_stats."""
    part = images[idx].double() / 255
    return [part.mean((0, 2, 3)).tolist(), part.std((0, 2, 3)).tolist()]


def test_normalize_takes_the_training_part_of_a_val_split_and_every_record_agrees(colours, tmp_path):
    # The statistics included the held-out validation images, which the model is not fit on
    train_idx, _ = stratified_split(colours.train_labels, 0.2, 0)
    part, whole = split_stats(colours.train_images, train_idx), split_stats(colours.train_images, slice(None))
    assert abs(part[1][0] - whole[1][0]) > 1e-6  # the two differ, far past the tolerance below
    train("lenet-relu", quiet=True, report=False, **quick(tmp_path / "r", val_split=0.2, seed=0))
    ckpt = load_checkpoint(tmp_path / "r" / "last.pt")
    for got, want in zip(ckpt["normalize"], part, strict=True):
        assert got == pytest.approx(want, rel=1e-9)
    recorded = json.loads((tmp_path / "r" / "config.json").read_text())["dataset"]
    assert [ckpt["dataset"]["mean"], ckpt["dataset"]["std"]] == [recorded["mean"], recorded["std"]] == \
        ckpt["normalize"]
    trained = load_trained(tmp_path / "r" / "last.pt")  # what predict, eval and export feed the model
    assert [trained.meta.mean, trained.meta.std] == [tuple(v) for v in ckpt["normalize"]]


def test_a_resume_keeps_the_statistics_its_run_recorded(colours, tmp_path):
    # A run started before the validation images were left out recorded all the training images' statistics, and its
    # weights were fit on inputs normalised with them: its resume goes on with those, not the training part's.
    run = tmp_path / "r"
    train("lenet-relu", quiet=True, report=False, **quick(run, val_split=0.2, seed=0))
    state = load_checkpoint(run / "last.pt")
    whole = split_stats(colours.train_images, slice(None))
    state["normalize"], state["dataset"]["mean"], state["dataset"]["std"] = whole, *whole
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "version")}, run / "last.pt")
    resume(run, quiet=True, report=False, epochs=2)
    resumed = load_checkpoint(run / "last.pt")
    assert resumed["epoch"] == 2 and resumed["normalize"] == whole
    assert [resumed["dataset"]["mean"], resumed["dataset"]["std"]] == whole


def test_validation_images_that_are_training_images_are_counted_in_a_notice(colours, capsys):
    # The test split's copies of training images were flagged, --val-split's were not
    train_idx, val_idx = stratified_split(colours.train_labels, 0.2, 0)
    config = make_config("lenet-relu", **quick("unused", val_split=0.2, seed=0))
    build_run(config, dataset=colours)
    assert "pixel for pixel" not in capsys.readouterr().out
    images = colours.train_images.clone()
    twin, held = int(train_idx[3]), int(val_idx[1])
    images[held] = images[twin]
    images[int(val_idx[4])] = images[int(train_idx[0])]
    parts = build_run(config, dataset=dataclasses.replace(colours, train_images=images))
    notice = (f"2 of {len(val_idx)} validation images are pixel for pixel a training image as decoded (first: "
              f"training image {held} = training image {twin}); the validation accuracy scores them as unseen, "
              "though the model trains on them")
    assert f"note: {notice}" in capsys.readouterr().out.splitlines()
    assert notice in parts.dataset.notices  # the run's report shows the dataset's notices


def test_on_epoch_sees_every_epoch_and_its_exception_ends_the_run_as_failed(colours, tmp_path):
    seen = []

    def prune(row):
        seen.append(row["epoch"])
        if row["epoch"] == 2:
            raise RuntimeError("pruned by the sweep")

    with pytest.raises(RuntimeError, match="pruned"):
        train("lenet-relu", quiet=True, report=False, on_epoch=prune, **quick(tmp_path / "r", epochs=4))
    assert seen == [1, 2]
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["status"] == "failed" and "pruned by the sweep" in result["error"] and result["epochs"] == 2
    assert len((tmp_path / "r" / "metrics.csv").read_text().splitlines()) == 3  # header + the two epochs


def test_stop_run_from_on_epoch_ends_the_run_as_stopped_not_failed(colours, tmp_path):
    def stop(row):
        if row["epoch"] == 2:
            raise StopRun("enough for this test")

    history = train("lenet-relu", quiet=True, report=False, on_epoch=stop, **quick(tmp_path / "r", epochs=4))
    assert [row["epoch"] for row in history] == [1, 2]
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["status"] == "stopped" and result["stop_reason"] == "enough for this test"
    assert result["epochs"] == 2 and result["test_acc"] == history[-1]["val_acc"]
    assert result["stopped_early_epoch"] is None  # that key is the patience rule's
    assert (tmp_path / "r" / "curves.png").is_file()  # ended like a finished run: its figures are written
    # A run that ends normally says finished and has no reason
    train("lenet-relu", quiet=True, report=False, **quick(tmp_path / "s", epochs=1))
    plain = json.loads((tmp_path / "s" / "result.json").read_text())
    assert plain["status"] == "finished" and plain["stop_reason"] is None


def test_a_nan_run_says_so_in_result_json(colours, tmp_path):
    with pytest.raises(CnnlabError, match="non-finite"):
        train("lenet-relu", quiet=True, report=False, **quick(tmp_path / "r", lr=1e30, optimizer="sgd", momentum=0))
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["status"] == "failed" and "NonFiniteLoss" in result["error"]


def test_early_stop_ends_the_run_after_patience_epochs_without_improvement(colours, tmp_path, capsys):
    # A learning rate of ~0 keeps the accuracy flat, so patience 2 must stop after epoch 3 (best at 1).
    history = train("lenet-relu", quiet=True, report=False,
                    **quick(tmp_path / "r", epochs=10, early_stop=2, lr=1e-12, optimizer="sgd", momentum=0))
    assert len(history) == 3
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["stopped_early_epoch"] == 3
    capsys.readouterr()
    assert resume(tmp_path / "r", quiet=True, epochs=12) is None  # finished: more epochs would stop again at once
    said = capsys.readouterr().out
    assert "it stopped early after 2 epochs" in said and "--epochs" not in said  # not the advice that did nothing
    assert f"start a new run with --init-from {tmp_path / 'r' / 'last.pt'}" in said


def test_gradient_accumulation_matches_one_larger_batch(tmp_path):
    """Two batches of 16 summed before one step give the step of one batch of 32 (no BN, no dropout)."""
    data = colour_dataset(n_train=64, n_test=8)

    def weights(batch_size, accumulate):
        torch.manual_seed(0)
        model = create_model("lenet-relu", num_classes=3, in_channels=3)
        cfg = make_config("lenet-relu", dataset="colours", epochs=1, batch_size=batch_size, accumulate=accumulate,
                          limit_train_batches=accumulate, out=None, lr=0.1,
                          channels_last=False, deterministic=True)
        Trainer(build_run(cfg, dataset=data, model=model), quiet=True).fit()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    # the loaders shuffle by seed, so batches 0-1 of size 16 are exactly batch 0 of size 32
    assert torch.allclose(weights(32, 1), weights(16, 2), atol=1e-6)


def test_deterministic_mode_warns_on_cuda_where_torch_has_no_deterministic_kernel(monkeypatch):
    """torch has no deterministic CUDA kernel for adaptive average pooling's backward (lenet-relu, ResNet, NiN, ...):
    strict mode stopped such a run at its first step on a GPU. There it warns; on a CPU it stays strict. The switch
    is set before any CUDA work, so it is checked here on the flags (conftest.py puts them back)."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # a user's own choice is kept
    config = make_config("lenet-relu", deterministic=True)
    _set_determinism(config, torch.device("cuda"))
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    _set_determinism(config, torch.device("cpu"))
    assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()


def test_train_resume_and_lr_find_leave_torchs_switches_as_they_found_them(colours, tmp_path):
    """--deterministic turns on torch's deterministic algorithms, and its resume the thread count the run started
    with, for that run only: a notebook's next cell, a study's next variant or a sweep's next trial in the same
    process runs as it would have."""
    seen = []

    def during(row):
        seen.append((torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()))

    torch.set_num_threads(2)  # the run records 2; its resume starts from 1 (conftest.py restores the count)
    train("lenet-relu", quiet=True, report=False, on_epoch=during, **quick(tmp_path / "d", epochs=1,
                                                                          deterministic=True))
    assert not torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    resume(tmp_path / "d", quiet=True, report=False, epochs=2, on_epoch=during)
    assert seen == [(True, 2), (True, 2)]  # what the run itself had
    assert not torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == 1
    lr_find("lenet-relu", steps=3, dataset="colours", batch_size=32, deterministic=True)
    assert not torch.are_deterministic_algorithms_enabled()


def test_resume_can_extend_a_constant_schedule_but_not_a_one_cycle(colours, tmp_path, capsys):
    train("lenet-relu", quiet=True, report=False, **quick(tmp_path / "c", epochs=1))
    capsys.readouterr()
    assert resume(tmp_path / "c", quiet=True) is None
    assert capsys.readouterr().out.strip() == (f"{tmp_path / 'c'} is finished: it trained its 1 epoch; nothing to do "
                                               "(pass --epochs N to train it further)")
    history = resume(tmp_path / "c", quiet=True, epochs=2)
    assert [r["epoch"] for r in history] == [1, 2]
    assert not (tmp_path / "c" / "report.html").exists()  # started with --no-report: its resume writes none either
    assert json.loads((tmp_path / "c" / "result.json").read_text())["epochs"] == 2
    capsys.readouterr()
    assert resume(tmp_path / "c", quiet=True) is None
    assert "it trained all 2 epochs; nothing to do (pass --epochs N" in capsys.readouterr().out
    train("lenet-relu", quiet=True, report=False, **quick(tmp_path / "o", epochs=1, schedule="onecycle"))
    with pytest.raises(CnnlabError, match="onecycle schedule of this run was shaped for 1 epoch, so"):
        resume(tmp_path / "o", quiet=True, epochs=3)
    capsys.readouterr()
    assert resume(tmp_path / "o", quiet=True) is None  # finished, and a one-cycle run cannot be given more epochs
    assert capsys.readouterr().out.strip() == (
        f"{tmp_path / 'o'} is finished: it trained its 1 epoch; nothing to do (its onecycle schedule was shaped for "
        f"1 epoch and cannot be extended; start a new run with --init-from {tmp_path / 'o' / 'last.pt'} to train it "
        "further)")
    with pytest.raises(CnnlabError, match="fewer"):
        resume(tmp_path / "c", quiet=True, epochs=1)


def test_a_resume_writes_the_report_a_run_was_started_with(colours, tmp_path):
    train("lenet-relu", quiet=True, **quick(tmp_path / "r", epochs=1))
    (tmp_path / "r" / "report.html").unlink()
    resume(tmp_path / "r", quiet=True, epochs=2)
    assert (tmp_path / "r" / "report.html").is_file()


def test_a_finished_run_given_more_epochs_and_interrupted_reads_as_interrupted(colours, tmp_path):
    train("lenet-relu", quiet=True, report=False, **quick(tmp_path / "c", epochs=1))
    assert Run.open(tmp_path / "c").status == "finished"

    def ctrl_c_after_epoch_2(row):
        if row["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the next step checkpoints and stops

    with pytest.raises(Interrupted):
        resume(tmp_path / "c", quiet=True, report=False, epochs=3, on_epoch=ctrl_c_after_epoch_2)
    run = Run.open(tmp_path / "c")  # not "finished" with epoch 1's figures, as its old result.json said
    assert run.status == "interrupted" and not (tmp_path / "c" / "result.json").exists()
    resume(tmp_path / "c", quiet=True, report=False)
    assert Run.open(tmp_path / "c").status == "finished"
    assert json.loads((tmp_path / "c" / "result.json").read_text())["epochs"] == 3


def test_fine_tuning_keeps_the_body_and_replaces_a_head_of_other_classes(tmp_path, monkeypatch):
    data = colour_dataset()
    monkeypatch.setattr(cnnlab.inference, "dataset_of", lambda config, **_: data)
    train("lenet-relu", quiet=True, report=False, **quick(tmp_path / "src", epochs=1))
    two = colour_dataset(name="two")
    keep = two.train_labels < 2
    two = ImageDataset("two", two.train_images[keep], two.train_labels[keep], two.test_images[two.test_labels < 2],
                       two.test_labels[two.test_labels < 2], ("red", "green"), two.mean, two.std, True)
    monkeypatch.setattr(cnnlab.inference, "dataset_of", lambda config, **_: two)
    trainer = build_trainer(make_config("lenet-relu", **quick(tmp_path / "ft", dataset="two", epochs=1,
                                                              init_from=str(tmp_path / "src" / "last.pt"),
                                                              freeze=True)), quiet=True)
    source = load_checkpoint(tmp_path / "src" / "last.pt")["model"]
    body = "features.0.weight"
    assert torch.equal(trainer.model.state_dict()[body].cpu(), source[body])
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    assert torch.equal(after[body], before[body])  # frozen
    head = "classifier.5.weight"  # the output layer: LeNet's classifier is Flatten, Linear, act, Linear, act, Linear
    assert not torch.equal(after[head], before[head]) and after[head].shape[0] == 2  # the new 2-class head trains


def test_init_from_another_model_is_refused_in_one_line(colours, tmp_path):
    train("lenet-relu", quiet=True, report=False, **quick(tmp_path / "src"))
    with pytest.raises(CnnlabError, match="do not fit this model") as e:
        build_trainer(make_config("lenet-bn-relu", **quick(tmp_path / "x", init_from=str(tmp_path / "src/last.pt"))))
    assert "\n" not in str(e.value) and "--channels" not in str(e.value)


def test_init_from_a_colour_checkpoint_onto_grey_images_names_the_channels_flag(tmp_path, monkeypatch):
    monkeypatch.setattr(cnnlab.inference, "dataset_of", lambda config, **_: colour_dataset())
    train("lenet-relu", quiet=True, report=False, **quick(tmp_path / "src"))
    grey = colour_dataset(channels=1)
    monkeypatch.setattr(cnnlab.inference, "dataset_of", lambda config, **_: grey)
    with pytest.raises(CnnlabError, match=r"3 input channel\(s\)\) do not fit this model: .*; pass --channels 3 to "
                                          r"read this dataset as the checkpoint's input$"):
        build_run(make_config("lenet-relu", **quick(None, init_from=str(tmp_path / "src" / "last.pt"))))
    with pytest.raises(CnnlabError, match="do not fit this model") as e:  # another model: other channels or not
        build_run(make_config("lenet-bn-relu", **quick(None, init_from=str(tmp_path / "src" / "last.pt"))))
    assert "--channels" not in str(e.value)


def test_resuming_against_a_dataset_with_other_classes_is_refused(colours, tmp_path, monkeypatch):
    train("lenet-relu", quiet=True, report=False, **quick(tmp_path / "r", epochs=2, checkpoint_every=3))
    ckpt = load_checkpoint(tmp_path / "r" / "last.pt")
    ckpt["epoch"] = 1  # pretend it was interrupted
    from cnnlab.runs.checkpoint import save_checkpoint

    save_checkpoint({k: v for k, v in ckpt.items() if k not in ("format", "version")}, tmp_path / "r" / "last.pt")
    other = colour_dataset()
    other = ImageDataset("other", other.train_images, other.train_labels, other.test_images, other.test_labels,
                         ("a", "b", "c"), other.mean, other.std, True)
    monkeypatch.setattr(cnnlab.inference, "dataset_of", lambda config, **_: other)
    with pytest.raises(CnnlabError, match="resume it with its own dataset"):
        resume(tmp_path / "r", quiet=True)


def test_images_per_second_after_a_resume_counts_only_this_process(colours, tmp_path):
    """A run resumed mid-epoch trains only the rest of the epoch: its images/s must not count the images the
    killed process trained (the first epoch after a resume once reported 2.5x the real speed)."""
    cfg = quick(tmp_path / "r", epochs=1, checkpoint_every=5)
    trainer = build_trainer(make_config("lenet-relu", **cfg), quiet=True, report=False)
    trainer.train_loader.set_epoch(0)
    # train 5 of the 10 batches and checkpoint, as a run killed after its mid-epoch checkpoint would have
    for b, _ in enumerate(trainer.train_loader):
        if b == 4:
            break
    state = trainer.state_dict()
    assert state["loader"]["batch"] == 5
    state["epoch_metrics"] = {"sums": torch.tensor([160 * 1.1, 50.0], dtype=torch.float64), "count": 160}
    resumed = build_trainer(make_config("lenet-relu", **cfg), quiet=True, report=False, run_dir=tmp_path / "r",
                            resume_state=state)
    metrics = resumed.train_epoch()
    assert metrics["count"] == 300  # the epoch's figures cover the whole epoch ...
    assert metrics["images"] == 300 - 5 * 32  # ... its speed only what this process trained


def test_the_report_reuses_the_runs_own_test_logits_and_ctrl_c_skips_it(colours, tmp_path, monkeypatch, capsys):
    """After training the report must not evaluate the test set a second time (it took minutes for big models),
    and Ctrl-C while it is written ends only the report: the run's results are on disk already."""
    from cnnlab.inference import Trained

    def no_second_pass(self, *args, **kwargs):
        raise AssertionError("the report evaluated the test set again")

    monkeypatch.setattr(Trained, "logits", no_second_pass)
    train("lenet-relu", **quick(tmp_path / "r"))
    page = (tmp_path / "r" / "report.html").read_text()
    assert "90 test images" in page
    out = capsys.readouterr().out
    assert "writing " in out and "report written in" in out

    import cnnlab.report.observer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cnnlab.report.observer, "write_report", interrupted)
    history = train("lenet-relu", **quick(tmp_path / "s"))
    assert len(history) == 1 and (tmp_path / "s" / "result.json").exists()
    assert "report.html skipped (Ctrl-C)" in capsys.readouterr().err


def test_the_progress_bar_moves_every_step_and_reads_the_loss_only_at_sync_points(colours, tmp_path, monkeypatch):
    import cnnlab.train.trainer as trainer_module

    calls = []

    class Bar:
        def __init__(self, *args, disable=False, **kwargs):
            self.disable = False

        def update(self, n):
            calls.append(("update", n))

        def set_postfix(self, **kwargs):
            calls.append(("postfix", kwargs["loss"]))

        def close(self):
            pass

    monkeypatch.setattr(trainer_module, "tqdm", Bar)
    train("lenet-relu", quiet=True, report=False, **quick(tmp_path / "r", log_every=4))
    assert calls.count(("update", 1)) == 10  # 300 images in batches of 32: every step moves the bar
    assert sum(1 for c in calls if c[0] == "postfix") == 2  # the loss is read at steps 4 and 8 only


def test_a_busy_cpu_gets_one_hint_and_the_thread_count_is_left_alone(colours, tmp_path, monkeypatch, capsys):
    import cnnlab.train.trainer as trainer_module

    # the name the Trainer calls (patching cnnlab.device's would leave the real load to decide)
    monkeypatch.setattr(trainer_module, "oversubscription_hint", lambda: "the CPU is busy: set OMP_NUM_THREADS=1")
    threads = torch.get_num_threads()
    train("lenet-relu", report=False, **quick(tmp_path / "r", device="cpu"))
    err = capsys.readouterr().err
    assert err.count("set OMP_NUM_THREADS=1") == 1 and torch.get_num_threads() == threads


def test_lr_find_and_train_build_the_same_input_size_and_preprocessing(colours, tmp_path):
    """LeNet is a 28-px book model: on a 32-px dataset both the range test and the run take 32 px (lr-find once
    used the book's 28 px here), with the same normalisation."""
    settings = quick(tmp_path / "r", normalize=True)
    found = lr_find("lenet", steps=12, **{k: v for k, v in settings.items() if k not in ("out", "lr", "epochs",
                                                                                       "log_every")})
    trainer = build_trainer(make_config("lenet", **settings), quiet=True)
    assert found.input_size == trainer.parts.input_size == 32
    assert found.normalize == trainer.parts.normalize == [list(colours.mean), list(colours.std)]


def test_init_from_other_classes_of_the_same_count_starts_a_fresh_head(tmp_path, monkeypatch):
    """A 3-class checkpoint into another 3-class dataset: the body comes along, the output layer does not (it
    meant other classes), and the note says so."""
    data = colour_dataset()
    monkeypatch.setattr(cnnlab.inference, "dataset_of", lambda config, **_: data)
    train("lenet-relu", quiet=True, report=False, **quick(tmp_path / "src", epochs=1))
    other = colour_dataset(name="other")
    other = ImageDataset("other", other.train_images, other.train_labels, other.test_images, other.test_labels,
                         ("cyan", "magenta", "yellow"), other.mean, other.std, True)
    monkeypatch.setattr(cnnlab.inference, "dataset_of", lambda config, **_: other)
    source = load_checkpoint(tmp_path / "src" / "last.pt")["model"]
    run = build_run(make_config("lenet-relu", **quick(None, dataset="other", init_from=str(tmp_path / "src" /
                                                                                          "last.pt"))))
    state = {k: v.cpu() for k, v in run.model.state_dict().items()}  # the run's device: CUDA where there is one
    assert torch.equal(state["features.0.weight"], source["features.0.weight"])
    assert not torch.equal(state["classifier.5.weight"], source["classifier.5.weight"])  # a fresh head
    monkeypatch.setattr(cnnlab.inference, "dataset_of", lambda config, **_: data)
    same = build_run(make_config("lenet-relu", **quick(None, init_from=str(tmp_path / "src" / "last.pt"))))
    assert torch.equal(same.model.state_dict()["classifier.5.weight"].cpu(), source["classifier.5.weight"])


class Opaque:  # a pickled object: a weights-only read refuses it (building it could run code)
    pass


def test_init_from_a_state_dict_saved_elsewhere(tmp_path, monkeypatch):
    """`--init-from weights.pth`: a state dict of the model's network from another script (inside a Lightning-style
    checkpoint, keys under DataParallel's ``module.``) starts the run; its output layer comes along where its
    shape fits (it names no classes), the input is normalised as --normalize says (it records none), and a pickle
    of objects is still refused unread. It was refused as "not a cnnlab checkpoint"."""
    data = colour_dataset()
    monkeypatch.setattr(cnnlab.inference, "dataset_of", lambda config, **_: data)
    torch.manual_seed(3)
    theirs = create_model("lenet-relu", num_classes=3, in_channels=3).state_dict()
    torch.save({"epoch": 4, "state_dict": {f"module.{k}": v for k, v in theirs.items()}}, tmp_path / "w.ckpt")
    run = build_run(make_config("lenet-relu", **quick(None, init_from=str(tmp_path / "w.ckpt"), normalize=False)))
    state = run.model.state_dict()
    assert all(torch.equal(state[k].cpu(), v) for k, v in theirs.items())
    assert run.normalize is None
    torch.save({k: v for k, v in create_model("lenet-relu", num_classes=7, in_channels=3).state_dict().items()},
               tmp_path / "seven.pth")
    run = build_run(make_config("lenet-relu", **quick(None, init_from=str(tmp_path / "seven.pth"), normalize=True)))
    assert run.model.state_dict()["classifier.5.weight"].shape[0] == 3  # a fresh head for 3 classes
    assert run.normalize == [list(data.mean), list(data.std)]  # --normalize's, the dataset's statistics
    torch.save(create_model("lenet-bn-relu", num_classes=3, in_channels=3).state_dict(), tmp_path / "bn.pth")
    with pytest.raises(CnnlabError, match=r"--init-from .*bn.pth: its weights \(a state dict from elsewhere\) do "
                                          r"not fit this model"):
        build_run(make_config("lenet-relu", **quick(None, init_from=str(tmp_path / "bn.pth"))))
    torch.save(create_model("lenet-relu", num_classes=3, in_channels=1).state_dict(), tmp_path / "grey.pth")
    with pytest.raises(CnnlabError, match=r"grey.pth: its weights \(a state dict from elsewhere\) do not fit this "
                                          r"model: 1 tensors .*; pass --channels 1 to read this dataset as the "
                                          r"checkpoint's input$"):
        build_run(make_config("lenet-relu", **quick(None, init_from=str(tmp_path / "grey.pth"))))
    torch.save({"features.0.weight": Opaque()}, tmp_path / "pickled.pth")
    with pytest.raises(CnnlabError, match=r"^refusing .*pickled.pth: it is not a plain tensor container"):
        build_run(make_config("lenet-relu", **quick(None, init_from=str(tmp_path / "pickled.pth"))))


def test_a_dataset_of_one_class_is_refused_before_training(tmp_path, monkeypatch):
    data = colour_dataset()
    keep, held = data.train_labels == 0, data.test_labels == 0
    one = ImageDataset("one", data.train_images[keep], data.train_labels[keep], data.test_images[held],
                       data.test_labels[held], ("red",), data.mean, data.std, True)
    monkeypatch.setattr(cnnlab.inference, "dataset_of", lambda config, **_: one)
    with pytest.raises(CnnlabError, match=r"^one has 1 class \(red\); a classifier needs at least 2"):
        build_trainer(make_config("lenet-relu", **quick(tmp_path / "r")), quiet=True)
    with pytest.raises(CnnlabError, match="a classifier needs at least 2"):
        lr_find("lenet-relu", steps=12, dataset="one")
    assert not (tmp_path / "r").exists()  # refused before the run folder was made


def test_flags_typed_that_the_run_would_not_use_are_refused_and_a_recipes_are_not(tmp_path, monkeypatch, capsys):
    """--gamma/--step-size/--milestones under another schedule, --momentum with Adam(W), --tta with --no-flip
    trained with no effect and no word (exit 0); typed, they are refused in one line before any folder is made. A
    recipe's or a config file's values are no typing: a run's config.json (holding every field) still repeats it,
    and flip-TTA that a run cannot use gets a note."""
    from cnnlab.cli import main

    monkeypatch.setattr(cnnlab.inference, "dataset_of", lambda config, **_: colour_dataset())
    monkeypatch.chdir(tmp_path)
    base = ["train", "lenet-relu", "--dataset", "colours", "--epochs", "1", "--quiet", "--no-report"]
    for flags, message in (
            (["--gamma", "0.5"], "--gamma applies to the step and multistep schedules, and this run's is constant; "
                                 "expected --schedule step with it, or no --gamma"),
            (["--schedule", "cosine", "--step-size", "2"], "--step-size applies to the step schedule, and this "
                                                           "run's is cosine"),
            (["--schedule", "step", "--step-size", "1", "--milestones", "2"], "--milestones applies to the "
                                                                              "multistep schedule"),
            (["--optimizer", "adamw", "--momentum", "0.9"], "--momentum is SGD's and RMSprop's, and adamw keeps "
                                                            "its own running moments"),
            (["--tta", "--no-flip"], "--tta averages each test image with its mirror, and --no-flip says"),
    ):
        assert main([*base, *flags, "--out", "refused"]) == 2, flags
        assert message in capsys.readouterr().err, flags
    assert not (tmp_path / "refused").exists()
    assert main([*base, "--recipe", "cpu10", "--epochs", "1", "--optimizer", "adamw", "--no-flip", "--out", "r1"]) == 0
    config = json.loads((tmp_path / "r1" / "config.json").read_text())["config"]
    assert config["momentum"] == 0.9 and config["optimizer"] == "adamw" and config["tta"] and not config["flip"]
    assert main(["train", "--config", "r1/config.json", "--out", "r2", "--no-report"]) == 0
    assert "note: no flip-TTA in this run: colours is not mirrored" in capsys.readouterr().out
