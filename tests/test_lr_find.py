"""cnnlab.lr_find: the exponential sweep, the smoothing, the suggestion rule, and `cnnlab lr-find` end to end."""

from __future__ import annotations

import math
import re

import pytest
import torch

import cnnlab.train
from cli_support import assert_one_line, file_appears_while_saving, run
from cnnlab import cli
from cnnlab import lr_find as lr_find_module
from cnnlab.data import balanced_class_weights
from cnnlab.errors import CnnlabError
from cnnlab.lr_find import SKIP_BEGIN, lr_find, lr_find_figure, lr_schedule, smooth, suggest_lr
from cnnlab.models import create_model
from cnnlab.train import build_run
from test_dataset_runs import write_folder


def test_the_schedule_is_exponential_between_both_ends():
    lrs = lr_schedule(1e-6, 10.0, 100)
    assert len(lrs) == 100 and lrs[0] == 1e-6 and lrs[-1] == pytest.approx(10.0, rel=1e-12)
    ratios = [b / a for a, b in zip(lrs, lrs[1:], strict=False)]
    assert ratios == pytest.approx([10 ** (7 / 99)] * 99, rel=1e-9)


def test_smoothing_is_the_bias_corrected_moving_average():
    g = torch.Generator().manual_seed(0)
    losses = (torch.rand(40, generator=g, dtype=torch.float64) * 3).tolist()
    beta = 0.9
    # Closed form: a weighted mean with weights beta^(age), which is what bias correction makes of the EMA.
    expected = []
    for n in range(1, len(losses) + 1):
        w = torch.tensor([beta ** (n - 1 - i) for i in range(n)], dtype=torch.float64)
        expected.append(float((w * torch.tensor(losses[:n], dtype=torch.float64)).sum() / w.sum()))
    assert smooth(losses, beta) == pytest.approx(expected, rel=1e-12)
    assert smooth([2.5] * 10) == pytest.approx([2.5] * 10)  # no warm-up bias towards zero


def test_the_steepest_descent_of_a_known_curve_is_found():
    lrs = lr_schedule(1e-6, 10.0, 100)
    centre = math.log(1e-3)
    # a descent centred on lr 1e-3, then a rise past lr 1 (divergence)
    curve = [2.3 - 1.5 / (1 + math.exp(-3 * (math.log(lr) - centre))) + 0.3 * max(0.0, math.log(lr)) for lr in lrs]
    lr, method, reason, steepest, minimum = suggest_lr(lrs, curve)
    assert method == "steepest" and lr == steepest and "falls fastest" in reason
    assert abs(math.log10(lr) - (-3)) <= 7 / 99 + 1e-9  # within one grid step of the true inflection
    assert minimum == pytest.approx(lrs[min(range(100), key=curve.__getitem__)])


def test_a_flat_or_short_curve_falls_back_to_a_tenth_of_the_minimum():
    lrs = lr_schedule(1e-6, 10.0, 100)
    g = torch.Generator().manual_seed(1)
    flat = (2.3 + 0.01 * torch.randn(100, generator=g, dtype=torch.float64)).tolist()
    lr, method, reason, _, minimum = suggest_lr(lrs, flat)
    assert method == "min/10" and lr == pytest.approx(minimum / 10) and "fell only" in reason
    short = lr_schedule(1e-3, 1.0, SKIP_BEGIN + 2)
    lr, method, reason, _, minimum = suggest_lr(short, [2.0 - 0.1 * i for i in range(len(short))])
    assert method == "min/10" and "too short" in reason and minimum == short[-1]


def test_a_loss_that_only_rises_is_not_said_to_have_fallen():
    # It read "the smoothed loss fell only 1%", measured from past its lowest point (the sweep's start), and gave
    # no word that the lr it suggested lay below the range swept.
    lrs = lr_schedule(1e-4, 1e-3, 15)
    lr, method, reason, _, minimum = suggest_lr(lrs, [2.33 + 0.002 * i for i in range(15)])
    assert method == "min/10" and minimum == lrs[0] and lr == pytest.approx(lrs[0] / 10)
    assert reason.startswith("the smoothed loss did not fall over the sweep (it is lowest at its start, 1.00e-04; a "
                             "smaller --start-lr sweeps where it falls)") and reason.endswith(", below the range swept")


@pytest.mark.parametrize("kwargs, message", [
    (dict(start_lr=0), "start-lr must be a number > 0"),
    (dict(start_lr=1e39, end_lr=1e40), r"start-lr must be a number > 0 \(and finite\) that float32 holds"),
    (dict(start_lr=1.0, end_lr=0.5), "start-lr must be below end-lr"),
    (dict(steps=1), "steps must be an integer >= 2"),
    (dict(end_lr=math.inf), "end-lr must be a number > 0 .and finite."),
    (dict(batch_size=0), "batch-size must be a positive integer"),
])
def test_bad_arguments_fail_before_any_data_is_read(kwargs, message, monkeypatch):
    import cnnlab.data

    monkeypatch.setattr(cnnlab.data, "load_dataset", lambda *a, **k: pytest.fail("read the data"))
    with pytest.raises(CnnlabError, match=message):
        lr_find("lenet-relu", **kwargs)


def test_a_sweep_on_the_real_data_leaves_the_model_and_the_random_state_alone(data_dir):
    net = create_model("lenet-relu")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    result = lr_find(net, model_name="lenet-relu", optimizer="adam", start_lr=1e-5, end_lr=1.0, steps=25,
                     batch_size=64, data_dir=str(data_dir), device="cpu")
    assert torch.equal(torch.rand(3), expected_draw)  # the caller's RNG did not move
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # a copy was trained
    assert result.lrs == lr_schedule(1e-5, 1.0, 25)[:len(result.lrs)]
    assert len(result.losses) == len(result.smoothed) == len(result.lrs)
    assert all(math.isfinite(v) for v in result.losses)
    assert 1e-5 <= result.suggestion <= 1.0 and result.method in ("steepest", "min/10")
    assert result.model == "lenet-relu" and result.dataset == "fashion-mnist"


def test_a_sweep_stops_once_the_loss_diverges(data_dir):
    result = lr_find("lenet-relu", optimizer="adam", start_lr=1e-2, end_lr=1e5, steps=60, batch_size=64,
                     data_dir=str(data_dir), device="cpu")
    assert result.diverged and len(result.lrs) < 60
    assert max(result.smoothed) <= 4 * min(result.smoothed)  # the diverged point itself is left out


def test_a_sweep_that_diverges_at_once_suggests_nothing(data_dir):
    # It suggested a tenth of the only lr it had tried, one that diverged (a lenet-relu trained at 100 ended at chance)
    with pytest.raises(CnnlabError, match=r"the loss diverged after \d step\(s\), at lr .* before the sweep could "
                                          r"see it fall; expected a --start-lr low enough to train \(got 1.00e\+03; "
                                          r"try 1e\+00\)"):
        lr_find("lenet-relu", start_lr=1e3, end_lr=1e5, steps=50, batch_size=64, data_dir=str(data_dir), device="cpu")


def test_cli_lr_find_writes_the_plot_and_prints_the_suggestion(tmp_path, data_dir, capsys, monkeypatch):
    plot = tmp_path / "lr.png"
    argv = ["lr-find", "lenet-relu", "--optimizer", "adam", "--steps", "20", "--batch-size", "64", "--out", str(plot),
            "--data-dir", str(data_dir), "--device", "cpu"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob(".*.tmp"))
    assert re.match(r"swept \d+ steps from 1.0e-06 to ", out[0]) and str(plot) in out[0]
    assert out[1].startswith("suggested lr ") and ("(steepest)" in out[1] or "(min/10)" in out[1])
    # An existing plot is refused before a minute of sweeping, and --force replaces it.
    monkeypatch.setattr(lr_find_module, "lr_find", lambda *a, **k: pytest.fail("swept before checking --out"))
    assert cli.main(argv) == 2
    assert "already exists; pass --force (force=True in Python)" in capsys.readouterr().err
    assert cli.main([*argv[:-4], "--out", str(tmp_path / "lr.svg")]) == 2
    assert "must be a .png file" in capsys.readouterr().err


def test_cli_lr_find_refuses_a_flag_the_sweep_would_not_use(tmp_path, capsys, monkeypatch):
    # `cnnlab train` refuses --momentum with Adam, which keeps its own moments; lr-find swept with it, exit 0
    monkeypatch.setattr(lr_find_module, "lr_find", lambda *a, **k: pytest.fail("swept with a flag that does nothing"))
    plot = tmp_path / "lr.png"
    assert_one_line(*run(["lr-find", "lenet-relu", "--optimizer", "adam", "--momentum", "0.9", "--steps", "12",
                          "--out", str(plot)], capsys),
                    "--momentum is SGD's and RMSprop's, and adam keeps its own running moments; expected no "
                    "--momentum with --optimizer adam", command="lr-find")
    assert not plot.exists()


def test_cli_lr_find_keeps_a_plot_that_appears_while_it_sweeps(tmp_path, unbalanced_folder, capsys, monkeypatch):
    plot = tmp_path / "lr.png"
    file_appears_while_saving(monkeypatch, plot)  # a second lr-find to the same name, say, ending first
    assert_one_line(*run(["lr-find", "lenet-relu", "--dataset", f"folder:{unbalanced_folder}", "--image-size", "16",
                          "--batch-size", "8", "--steps", "12", "--out", str(plot), "--device", "cpu"], capsys),
                    f"{plot} appeared while it was being written", command="lr-find")
    assert plot.read_text() == "another program's"


@pytest.fixture
def unbalanced_folder(tmp_path, monkeypatch):
    """A folder of 12 training images of one class and 4 of each other (noisy squares of each class's colour)."""
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    data = write_folder(tmp_path / "photos", per_class=(12, 3))
    for name in ("grass", "sky"):
        for image in sorted((data / "train" / name).iterdir())[4:]:
            image.unlink()
    return data


def test_a_sweep_under_balance_loss_weighs_the_loss_as_the_run_does(unbalanced_folder):
    # lr-find had no --balance, and its loss no class weights: a run trained with --balance loss was given an lr
    # swept on another loss
    sweep = dict(dataset=f"folder:{unbalanced_folder}", image_size=16, batch_size=8, start_lr=1e-4, end_lr=1e-2,
                 steps=12, device="cpu")
    plain = lr_find("lenet-relu", **sweep)
    weighted = lr_find("lenet-relu", balance="loss", **sweep)
    # the same weights and first batch (the sampler is not balanced): only the loss's class weights differ
    assert weighted.losses[0] != pytest.approx(plain.losses[0], rel=1e-4)
    assert lr_find("lenet-relu", balance="loss", **sweep).losses == weighted.losses  # seeded, as a run is
    # the plot's loss axis says which loss it is, as a run's curves do (it read "training loss" either way)
    assert lr_find_figure(weighted).axes[0].get_ylabel() == "training loss (class-weighted)"
    assert lr_find_figure(plain).axes[0].get_ylabel() == "training loss"


@pytest.mark.parametrize("balance", ["loss", "sampler"])
def test_cli_lr_find_takes_balance(tmp_path, unbalanced_folder, capsys, balance):
    plot = tmp_path / "lr.png"
    argv = ["lr-find", "lenet-relu", "--balance", balance, "--dataset", f"folder:{unbalanced_folder}", "--image-size",
            "16", "--batch-size", "8", "--steps", "12", "--out", str(plot), "--device", "cpu"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_cli_lr_find_sweeps_the_training_part_of_a_val_split(tmp_path, unbalanced_folder, capsys, monkeypatch):
    # lr-find took --balance but not --val-split: its class weights came from all the training images, where a run
    # with --val-split weighs (and trains on) its training part only
    built = []

    def spy(*args, **kwargs):
        built.append(build_run(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(cnnlab.train, "build_run", spy)
    argv = ["lr-find", "lenet-relu", "--balance", "loss", "--val-split", "6", "--dataset",
            f"folder:{unbalanced_folder}", "--image-size", "16", "--batch-size", "8", "--steps", "12", "--out",
            str(tmp_path / "lr.png"), "--device", "cpu"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    (run,) = built
    loader, images = run.train_loader, sum(1 for _ in (unbalanced_folder / "train").rglob("*.png"))
    assert loader.indices is not None and len(loader.indices) == images - 6  # the steps draw from these only
    assert not set(loader.indices.tolist()) & set(run.val_loader.indices.tolist())
    kept = loader.labels[loader.indices]
    weights = run.class_weights.cpu()  # float32, as the loss takes them
    assert torch.equal(weights, balanced_class_weights(kept, run.dataset.num_classes).float())
    assert not torch.equal(weights, balanced_class_weights(loader.labels, run.dataset.num_classes).float())
