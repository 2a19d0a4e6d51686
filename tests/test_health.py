"""Runs that are not learning: chance_warning, and the fast recipe on a short schedule (it used to end at chance)."""

import math

import pytest
import torch
from torch import nn

from cnnlab import layers
from cnnlab.data import ImageDataset
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from cnnlab.train import build_run, build_trainer, make_config
from cnnlab.train.health import BN_SETTLED, MARGIN, batch_norm_updates, chance_warning
from cnnlab.train.trainer import CHANCE_CHECK_STEPS, Trainer


def test_a_network_at_chance_is_named_with_its_figures():
    message = chance_warning({"epoch": 1, "val_acc": 0.1, "train_loss": 2.55}, 10)
    assert message == ("epoch 1: validation accuracy 0.1000 is no better than chance (1/10 = 0.1000), training loss "
                       "2.55 above the 2.3 of a uniform guess: the steps are too large for the network (try a smaller "
                       "--lr, a longer schedule or --grad-clip 1)")


def test_a_network_that_has_not_started_is_told_apart_from_a_diverged_one():
    # The book's sigmoid LeNet after its first epoch at lr 0.1: loss 2.308, accuracy 0.1000; it learns from epoch 3.
    message = chance_warning({"epoch": 1, "val_acc": 0.1, "train_loss": 2.30829}, 10)
    assert message.endswith("training loss 2.31 (a uniform guess: 2.3): the network is not learning yet (the book's "
                            "sigmoid LeNet takes 1-2 epochs to start); if it stays at chance, change --lr")


def test_a_frozen_body_is_not_told_its_steps_are_too_large():
    """Fine-tuning's frozen phase: only the fresh head trained, whose first logits are not uniform; a smaller lr
    would make it worse, so the advice names the frozen phase (docs/benchmarks.md, "A misleading note")."""
    message = chance_warning({"epoch": 1, "val_acc": 0.1365, "train_loss": 2.72}, 10, frozen=True)
    assert message == ("epoch 1: validation accuracy 0.1365 is no better than chance (1/10 = 0.1000), training loss "
                       "2.72: only the new head trained, on a frozen body; a frozen phase of few steps (a small "
                       "dataset's epoch) leaves it near chance, and --freeze-epochs 0 trains every layer from the "
                       "start")
    assert "smaller --lr" in chance_warning({"epoch": 2, "val_acc": 0.1365, "train_loss": 2.72}, 10)


def test_the_trainer_says_which_epochs_were_frozen(tmp_path, data_dir, capsys):
    source = tmp_path / "source"
    build_trainer(make_config("lenet-relu", epochs=1, limit_train_batches=2, limit_val_batches=1, out=str(source)),
                  quiet=True, report=False).fit()
    trainer = build_trainer(make_config("lenet-relu", "finetune", init_from=str(source / "last.pt"), epochs=2,
                                        freeze_epochs=1, lr=1e-7, batch_size=16, limit_train_batches=CHANCE_CHECK_STEPS,
                                        limit_val_batches=1, out=str(tmp_path / "ft")), quiet=True, report=False)
    trainer.fit()
    notes = [line for line in capsys.readouterr().err.splitlines() if "no better than chance" in line]
    assert notes and "epoch 1:" in notes[0] and "only the new head trained" in notes[0]
    assert all("only the new head trained" not in line for line in notes if line.startswith("cnnlab: note: epoch 2"))


@pytest.mark.parametrize("classes", [2, 10, 100])
def test_the_line_is_a_fixed_share_of_the_way_from_chance_to_perfect(classes):
    chance = 1 / classes
    line = chance + MARGIN * (1 - chance)
    assert chance_warning({"val_acc": line}, classes) is not None
    assert chance_warning({"val_acc": line + 1e-3}, classes) is None
    assert chance_warning({"val_acc": 0.0}, classes) is not None  # below chance is no better either


def test_a_learning_network_gets_no_warning():
    assert chance_warning({"epoch": 1, "val_acc": 0.81, "train_loss": 0.6}, 10) is None


def test_the_loss_is_left_out_when_it_says_nothing():
    message = chance_warning({"epoch": 3, "val_acc": 0.1, "train_loss": math.nan}, 10)
    assert message == "epoch 3: validation accuracy 0.1000 is no better than chance (1/10 = 0.1000): the network is " \
                      "not learning"
    assert chance_warning({"val_acc": 0.1}, 10).startswith("validation accuracy 0.1000")


def test_a_network_that_learned_but_is_at_chance_in_evaluation_is_told_apart():
    row = {"epoch": 3, "val_acc": 0.1067, "train_acc": 0.9295, "train_loss": 0.514}
    head = ("epoch 3: validation accuracy 0.1067 is no better than chance (1/10 = 0.1000) while training accuracy is "
            "0.9295: ")
    assert chance_warning(row, 10, bn_updates=18) == head + (
        "evaluation uses BatchNorm's running statistics, which have had only 18 updates (one a training batch) and "
        "are still far from the batches' own; train more --epochs or use a smaller --batch-size")
    other = head + ("the network predicts differently in evaluation mode, or the validation images differ from the "
                    "training images")
    assert chance_warning(row, 10, bn_updates=BN_SETTLED) == other  # settled statistics are not the likely cause
    assert chance_warning(row, 10) == other  # no BatchNorm layer
    # A training accuracy short of LEARNED keeps the advice about the loss (a slow start or too large steps).
    assert "BatchNorm" not in chance_warning({**row, "train_acc": 0.5}, 10, bn_updates=18)


def test_batch_norm_updates_is_the_least_updated_layer_that_keeps_a_moving_average():
    scratch = layers.BatchNorm2d(3)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 3, 3), scratch,
                        nn.BatchNorm2d(3, momentum=None))
    assert batch_norm_updates(net) == 0
    net.train()
    for _ in range(3):
        net(torch.randn(4, 1, 8, 8))
    scratch.num_batches_tracked.zero_()  # cnnlab's own layer counts too
    assert batch_norm_updates(net) == 0
    net(torch.randn(4, 1, 8, 8))
    assert batch_norm_updates(net) == 1
    # A cumulative average (momentum=None) holds nothing of its start after one update; no BatchNorm at all: None.
    assert batch_norm_updates(nn.Sequential(nn.BatchNorm2d(3, momentum=None), nn.Conv2d(3, 3, 1))) is None
    assert batch_norm_updates(nn.Linear(2, 2)) is None


def _quadrants(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Four classes, each a dim square in its own quadrant (pixel value 2 of 255: batch variances far below the
    running variance's starting 1)."""
    labels = torch.arange(n) % 4
    images = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    for k in range(4):
        row, col = divmod(k, 2)
        images[labels == k, :, 14 * row:14 * row + 14, 14 * col:14 * col + 14] = 2
    return images, labels


def test_a_short_run_that_fits_its_images_but_evaluates_at_chance_names_batch_norm(capsys):
    # A small dataset at a large batch: 8 steps an epoch, too few for the first-epoch check, and too few for
    # BatchNorm's running statistics to leave their start (mean 0 / variance 1), which evaluation uses. Training
    # accuracy reaches 1.0 while every test image is predicted as one class; the run said nothing.
    data = ImageDataset("quadrants", *_quadrants(256), *_quadrants(64), ("a", "b", "c", "d"), (0.5,), (0.25,),
                        flip=False)
    parts = build_run(make_config("lenet-bn-relu", epochs=3, batch_size=32, device="cpu"), dataset=data, quiet=True)
    trainer = Trainer(parts, quiet=True)
    history = trainer.fit()
    assert parts.steps_per_epoch == 8 and history[-1]["train_acc"] == 1.0 and history[-1]["val_acc"] == 0.25
    notes = [line for line in capsys.readouterr().err.splitlines() if "chance" in line]
    assert len(notes) == 1, notes  # once a run, at the first epoch it applies to (epoch 1: training accuracy 0.80)
    # the test set validates (no --val-split): the line calls it the test set, not a validation set
    assert notes[0].startswith("cnnlab: note: epoch 1: test accuracy 0.2500 is no better than chance (1/4 = "
                               "0.2500) while training accuracy is 0.")
    assert notes[0].endswith(": evaluation uses BatchNorm's running statistics, which have had only 8 updates (one a "
                             "training batch) and are still far from the batches' own; train more --epochs or use a "
                             "smaller --batch-size")
    # The statistics are the cause: recomputed over the training set (an exact average), the same weights are right
    # on every test image.
    model = trainer.model
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        for x, _ in parts.train_loader:
            model(x)
    assert trainer.evaluate()["acc"] == 1.0


def test_a_run_of_few_steps_is_not_told_its_steps_are_too_large(tmp_path, data_dir, capsys):
    """20 steps of the compact net: in a healthy run (40 reach 0.62-0.70) the loss after so few steps is still
    mostly the starting weights', above a uniform guess's. The chance check read that as a divergence and advised
    a smaller --lr (docs/benchmarks.md, "Short schedules"); it waits for CHANCE_CHECK_STEPS steps."""
    # An lr of 1e-6 keeps the starting weights' loss and chance accuracy after the 20 steps on any host and thread
    # count: at the recipe's own lr, where those 20 steps end depends on how the kernels round (one thread or two).
    config = make_config("compact", "cpu10", epochs=1, limit_train_batches=20, limit_val_batches=8, seed=2, lr=1e-6,
                         data_dir=str(data_dir), out=str(tmp_path / "run"), device="cpu")
    row = build_trainer(config, quiet=True, report=False).fit()[-1]
    assert "steps are too large" in chance_warning(row, 10)  # what the check would have said of this epoch
    assert "no better than chance" not in capsys.readouterr().err


def test_a_small_dataset_is_checked_at_the_first_epoch_end_after_enough_steps(capsys):
    """8 steps an epoch: the check waits for CHANCE_CHECK_STEPS steps in all (epoch 5 here) and is made once; it
    was never made for a dataset this small, whatever its loss said."""
    data = ImageDataset("quadrants", *_quadrants(256), *_quadrants(64), ("a", "b", "c", "d"), (0.5,), (0.25,),
                        flip=False)
    parts = build_run(make_config("lenet", epochs=7, batch_size=32, lr=1e-6, device="cpu"), dataset=data, quiet=True)
    assert parts.steps_per_epoch == 8 and CHANCE_CHECK_STEPS == 40  # so it is epoch 5's end that reaches it
    history = Trainer(parts, quiet=True).fit()
    assert all(row["val_acc"] == 0.25 for row in history)  # at chance throughout: every epoch could be told
    notes = [line for line in capsys.readouterr().err.splitlines() if "no better than chance" in line]
    assert len(notes) == 1 and notes[0].startswith("cnnlab: note: epoch 5: "), notes


def test_unbalanced_classes_are_judged_by_their_balanced_accuracy():
    """On unbalanced validation classes a network that names one class for every image scores that class's share
    (0.8919 for 33 of 37 images), far above 1/classes, and was never told; the mean of the classes' recalls (the
    balanced accuracy) is 1/classes for any such network, whatever the shares."""
    row = {"epoch": 6, "val_acc": 0.8919, "train_loss": 0.42}
    assert chance_warning(row, 3) is None  # accuracy alone cannot see it
    message = chance_warning(row, 3, recalls=[1.0, 0.0, 0.0])
    assert message == ("epoch 6: validation accuracy 0.8919, balanced accuracy 0.3333 (the mean of the 3 classes' "
                       "recalls, as the validation classes are unbalanced), is no better than chance (1/3 = 0.3333), "
                       "training loss 0.42 (a uniform guess: 1.1): the network is not learning yet (the book's "
                       "sigmoid LeNet takes 1-2 epochs to start); if it stays at chance, change --lr")
    # Chance is of the classes the split holds: one without validation images is not counted.
    assert "(1/2 = 0.5000)" in chance_warning(row, 3, recalls=[1.0, 0.0, None])
    # A network that learned every class is not at chance, though its accuracy is below the largest class's share
    # (what --balance trades for the small classes' recall).
    assert chance_warning({**row, "val_acc": 0.80}, 3, recalls=[0.78, 1.0, 1.0]) is None
    # The same recalls for a network that learned its training images: told as the evaluation gap; but a training
    # accuracy that is the largest class's share of the training images is one class named for every image too.
    gap = chance_warning({**row, "train_acc": 0.99}, 3, recalls=[1.0, 0.0, 0.0], train_share=0.8867)
    assert gap.endswith("while training accuracy is 0.9900: the network predicts differently in evaluation mode, or "
                        "the validation images differ from the training images")
    same = chance_warning({**row, "train_acc": 0.8867}, 3, recalls=[1.0, 0.0, 0.0], train_share=0.8867)
    assert "while training accuracy" not in same and same.endswith("if it stays at chance, change --lr")


def test_a_run_that_names_the_largest_class_for_every_image_is_told(capsys):
    """A network that predicts the most frequent class for every image (here by its output bias) scores 0.9375 on
    test classes of 60 and 4 images, far above 1/2: the run said nothing; it is now told, and a balanced test
    split is still judged by its accuracy alone."""
    def images(n_a: int, n_b: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.zeros(n_a + n_b, 1, 28, 28, dtype=torch.uint8)
        x[n_a:, :, 8:20, 8:20] = 200
        return x, torch.tensor([0] * n_a + [1] * n_b)

    def run(test: tuple[int, int]) -> list[str]:
        data = ImageDataset("skewed", *images(230, 26), *images(*test), ("common", "rare"), (0.1,), (0.3,),
                            flip=False)
        model = create_model("lenet-relu", num_classes=2, in_channels=1)
        head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        with torch.no_grad():  # names "common" whatever the image, and the tiny lr keeps it so
            head.weight.zero_()
            head.bias.copy_(torch.tensor([4.0, -4.0]))
        parts = build_run(make_config("lenet-relu", epochs=5, batch_size=32, lr=1e-9, device="cpu"), dataset=data,
                          model=model, quiet=True)
        history = Trainer(parts, quiet=True).fit()
        assert history[-1]["val_acc"] == test[0] / sum(test)
        return [line for line in capsys.readouterr().err.splitlines() if "no better than chance" in line]

    notes = run((60, 4))
    assert len(notes) == 1 and notes[0].startswith(
        "cnnlab: note: epoch 5: test accuracy 0.9375, balanced accuracy 0.5000 (the mean of the 2 classes' "
        "recalls, as the test classes are unbalanced), is no better than chance (1/2 = 0.5000)"), notes
    notes = run((32, 32))
    assert len(notes) == 1 and notes[0].startswith(
        "cnnlab: note: epoch 5: test accuracy 0.5000 is no better than chance (1/2 = 0.5000)"), notes


@pytest.mark.parametrize("row, classes, expected", [
    ({"val_acc": 0.1}, 1, "num_classes must be an integer >= 2, got 1"),
    ({"val_acc": 0.1}, 10.0, "num_classes must be an integer >= 2, got 10.0"),
    ({"train_acc": 0.1}, 10, "row must hold an accuracy val_acc in [0, 1], got None"),
    ({"val_acc": 1.5}, 10, r"row must hold an accuracy val_acc in [0, 1], got 1.5"),
])
def test_bad_input_is_a_one_line_error(row, classes, expected):
    with pytest.raises(CnnlabError) as info:
        chance_warning(row, classes)
    assert str(info.value) == expected


@pytest.mark.slow
@pytest.mark.parametrize("model", ["lenet-relu", "lenet-bn-relu"])
def test_the_fast_recipe_learns_on_a_short_schedule(model, data_dir, tmp_path):
    # 40 batches of one epoch: the one-cycle's warm-up is 10 steps long, and lenet-relu (no batch norm) used to
    # end at exactly 0.1000 test accuracy with a training loss above that of a uniform guess.
    from cnnlab.train import train

    history = train(model, "fast", epochs=1, limit_train_batches=40, device="cpu", data_dir=str(data_dir),
                    out=str(tmp_path / "run"), quiet=True, report=False)
    row = history[-1]
    assert chance_warning(row, 10) is None
    assert row["val_acc"] > 0.6, row
    assert row["train_loss"] < math.log(10), row
