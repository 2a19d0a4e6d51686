"""Runs that are not learning: chance_warning, and the fast recipe on a short schedule (it used to end at chance)."""

import math

import pytest

from cnnlab.errors import CnnlabError
from cnnlab.train.health import MARGIN, chance_warning


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
