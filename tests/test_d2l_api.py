"""cnnlab.d2l's API piece by piece: d2l 1.0.3's names and semantics, and the places it deliberately differs."""

from __future__ import annotations

import sys
import types
import warnings

import matplotlib.figure
import matplotlib.image
import matplotlib.pyplot
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import cnnlab.d2l.board as board_module
import cnnlab.d2l.data as data_module
import cnnlab.d2l.models as models_module
from cnnlab import d2l
from cnnlab.data import DeviceLoader, load_fashion_mnist
from cnnlab.errors import CnnlabError
from cnnlab.layers import Conv2d
from d2l_support import needs_real_data, summary_lines

# --- HyperParameters and add_to_class ----------------------------------------------------------------------------


class Saver(d2l.HyperParameters):
    def __init__(self, a, b=2, *args, _private=3, c=4, **kwargs):
        helper = a + b  # a local that is not an argument: not saved (d2l would save it)
        del helper
        self.save_hyperparameters(ignore=["c"])


def test_save_hyperparameters_takes_the_callers_arguments():
    s = Saver(1, 5, 6, 7, _private=0, c=9, d=10)
    assert s.hparams == {"a": 1, "b": 5, "args": (6, 7), "kwargs": {"d": 10}}
    assert (s.a, s.b, s.args, s.kwargs) == (1, 5, (6, 7), {"d": 10})
    assert not hasattr(s, "c") and not hasattr(s, "_private") and not hasattr(s, "helper")


def test_add_to_class_sets_a_method_and_returns_none():
    class A:
        pass

    @d2l.add_to_class(A)
    def twice(self, x):
        return 2 * x

    assert twice is None  # as d2l's decorator: the name is not bound at module level
    assert A().twice(4) == 8


# --- ProgressBoard -----------------------------------------------------------------------------------------------


def test_board_averages_every_n_points_and_keeps_tensors_until_read():
    board = d2l.ProgressBoard(xlabel="x")
    for i in range(6):
        board.draw(i, torch.tensor(float(i)), "loss", every_n=3)
    board.draw(6, 7.0, "acc")  # plain numbers work too
    assert all(isinstance(p.y, torch.Tensor) for p in board._lines["loss"])  # nothing read back yet
    assert board.data["loss"] == [(1.0, 1.0), (4.0, 4.0)]
    assert all(type(p.y) is float for p in board.data["loss"])
    assert board.data["acc"] == [(6.0, 7.0)]


def test_the_board_is_a_hyperparameters_as_the_books():
    # d2l 1.0.3: class ProgressBoard(d2l.HyperParameters), whose __init__ saves its arguments; a board of one's own
    # that saved its own (a subclass calling self.save_hyperparameters()) was an AttributeError
    board = d2l.ProgressBoard("x", ylim=(0, 1))
    assert isinstance(board, d2l.HyperParameters)
    assert board.hparams["xlabel"] == "x" and board.hparams["ylim"] == (0, 1) and board.hparams["display"] is True
    assert (board.xlabel, board.ylim, board.xscale) == ("x", (0, 1), "linear")

    class SmoothBoard(d2l.ProgressBoard):
        def __init__(self, xlabel="step", smooth=3, _private=1, skipped=2):
            super().__init__(xlabel=xlabel)
            self.save_hyperparameters(ignore=["skipped"])

    smooth = SmoothBoard(smooth=5)
    assert smooth.hparams == {"xlabel": "step", "smooth": 5} and smooth.smooth == 5
    assert not hasattr(smooth, "skipped") and not hasattr(smooth, "_private")
    smooth.draw(0, torch.tensor(2.0), "loss")
    assert smooth.data["loss"] == [(0.0, 2.0)] and smooth.epoch_line() == "step 0: loss 2"


def test_board_rejects_bad_points():
    board = d2l.ProgressBoard()
    with pytest.raises(CnnlabError, match="every_n"):
        board.draw(0, 1.0, "a", every_n=0)
    with pytest.raises(CnnlabError, match="one value per point"):
        board.draw(0, torch.ones(2), "a")


def test_board_in_a_script_prints_one_line_per_refresh_and_saves(tmp_path, capsys):
    board = d2l.ProgressBoard(xlabel="epoch", ylim=(0, 1))
    for i in range(4):
        board.draw(i, torch.tensor(0.1 * i), "train_loss")
    board.refresh()
    assert capsys.readouterr().out == "epoch 3: train_loss 0.15\n"  # the mean of the points since the last line
    board.draw(4, torch.tensor(0.5), "train_loss")
    board.draw(4, 0.75, "val_acc")
    board.refresh()
    board.refresh()  # nothing new: no line
    assert capsys.readouterr().out == "epoch 4: train_loss 0.5, val_acc 0.75\n"
    board.display = False  # d2l's switch (k-fold cells turn it off after the first fold): silent
    board.draw(5, 0.1, "train_loss")
    board.refresh()
    assert board._fig is None  # nothing drawn until asked
    fig = board.fig  # d2l's attribute after training (model.board.fig.savefig in a script): it was None
    assert isinstance(fig, matplotlib.figure.Figure) and board.figure() is fig
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["train_loss", "val_acc"]
    assert len(fig.axes[0].lines[0].get_xdata()) == 6  # every train_loss point drawn so far
    fig.axes[0].set_title("my run")
    assert board.fig.axes[0].get_title() == "my run"  # nothing new: not redrawn over the cell's changes
    board.draw(6, 0.05, "train_loss")
    assert len(board.fig.axes[0].lines[0].get_xdata()) == 7
    board.save(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert capsys.readouterr().out == ""


@pytest.fixture
def fake_notebook(monkeypatch):
    """Pretend to run in Jupyter: record what the board displays instead of showing it."""
    shown = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj))

    display_module = types.ModuleType("IPython.display")
    display_module.Image = lambda data, format: ("image", format, data[:4])
    display_module.display = lambda obj, display_id: shown.append(("display", obj)) or Handle()
    monkeypatch.setitem(sys.modules, "IPython.display", display_module)
    monkeypatch.setattr(board_module, "in_notebook", lambda: True)
    return shown


def test_board_in_jupyter_redraws_in_place_at_a_modest_rate(fake_notebook):
    board = d2l.ProgressBoard(refresh_s=3600)
    for i in range(5):
        board.draw(i, torch.tensor(1.0), "loss")
    assert [kind for kind, _ in fake_notebook] == ["display"]  # the first point, then throttled
    board.refresh()  # the trainer's end of epoch always redraws
    assert [kind for kind, _ in fake_notebook] == ["display", "update"]
    assert fake_notebook[-1][1] == ("image", "png", b"\x89PNG")
    board.display = False
    board.refresh()
    assert len(fake_notebook) == 2


def test_no_notebook_outside_jupyter():
    assert board_module.in_notebook() is False


# --- Module and Classifier ---------------------------------------------------------------------------------------


def test_module_without_net_or_trainer_raises_one_line_errors():
    module = d2l.Module()
    with pytest.raises(CnnlabError, match="self.net"):
        module(torch.ones(1))
    with pytest.raises(CnnlabError, match="trainer"):
        module.plot("loss", torch.tensor(1.0), train=True)


def test_module_plot_places_points_in_epochs_and_passes_tensors():
    module = d2l.Module(plot_train_per_epoch=2)
    module.trainer = types.SimpleNamespace(train_batch_idx=0, num_train_batches=4, epoch=0, num_val_batches=1)
    for i in range(4):
        module.trainer.train_batch_idx = i
        module.plot("loss", torch.tensor(float(i), requires_grad=True) * 1, train=True)
    module.plot("acc", torch.tensor(0.5), train=False)
    line = module.board._lines["train_loss"]
    assert [p.x for p in line] == [0.125, 0.625]
    assert all(isinstance(p.y, torch.Tensor) and not p.y.requires_grad for p in line)
    assert module.board.data["train_loss"] == [(0.125, 0.5), (0.625, 2.5)]
    assert module.board.data["val_acc"] == [(1, 0.5)]
    assert module.board.xlabel == "epoch"


def test_plot_with_fewer_batches_than_points_still_plots():
    module = d2l.Module(plot_train_per_epoch=2)
    module.trainer = types.SimpleNamespace(train_batch_idx=0, num_train_batches=1)
    module.plot("loss", torch.tensor(1.0), train=True)  # d2l: every_n = int(0.5) = 0, never drawn
    assert module.board.data["train_loss"] == [(0.0, 1.0)]


def test_classifier_loss_and_accuracy_match_torch():
    clf = d2l.Classifier()
    Y_hat = torch.randn(2, 5, 10)
    Y = torch.randint(0, 10, (2, 5))
    flat_hat, flat = Y_hat.reshape(-1, 10), Y.reshape(-1)
    assert torch.allclose(clf.loss(Y_hat, Y), F.cross_entropy(flat_hat, flat))
    assert torch.allclose(clf.loss(Y_hat, Y, averaged=False), F.cross_entropy(flat_hat, flat, reduction="none"))
    per_row = (flat_hat.argmax(1) == flat).float()
    assert torch.equal(clf.accuracy(Y_hat, Y, averaged=False), per_row)
    assert clf.accuracy(Y_hat, Y).item() == pytest.approx(per_row.mean().item())
    assert clf.accuracy(torch.eye(3), torch.tensor([0, 1, 0])).item() == pytest.approx(2 / 3)


def test_configure_optimizers_is_plain_sgd_at_lr():
    model = d2l.LeNet(lr=0.3)
    model.apply_init([torch.zeros(1, 1, 28, 28)])
    opt = model.configure_optimizers()
    assert type(opt) is torch.optim.SGD
    assert opt.param_groups[0]["lr"] == 0.3 and opt.param_groups[0]["momentum"] == 0


def test_lenet_layer_summary_prints_the_books_lines(capsys):
    d2l.LeNet().layer_summary((1, 1, 28, 28))
    assert capsys.readouterr().out.splitlines() == summary_lines([
        ("Conv2d", [1, 6, 28, 28]), ("Sigmoid", [1, 6, 28, 28]), ("AvgPool2d", [1, 6, 14, 14]),
        ("Conv2d", [1, 16, 10, 10]), ("Sigmoid", [1, 16, 10, 10]), ("AvgPool2d", [1, 16, 5, 5]),
        ("Flatten", [1, 400]), ("Linear", [1, 120]), ("Sigmoid", [1, 120]), ("Linear", [1, 84]),
        ("Sigmoid", [1, 84]), ("Linear", [1, 10]),
    ])


def test_apply_init_runs_the_dry_run_before_init():
    model = d2l.LeNet()
    seen = []
    model.apply_init([torch.zeros(2, 1, 28, 28)], lambda m: seen.append(type(m)))
    assert seen.count(nn.Conv2d) == 2 and seen.count(nn.Linear) == 3  # materialised, no Lazy class left
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


# --- init_cnn and the book's models ------------------------------------------------------------------------------


def test_init_cnn_is_xavier_on_materialised_layers():
    torch.manual_seed(0)
    layer = nn.Linear(300, 200)
    d2l.init_cnn(layer)
    bound = (6 / (300 + 200)) ** 0.5
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
    assert layer.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)


def test_init_cnn_takes_the_types_d2l_takes_exactly():
    # d2l tests type(m) == nn.Conv2d / nn.Linear: a subclass keeps its own init, and a student's own class named
    # Linear (with self.W, no weight) was re-initialised, or failed with an AttributeError.
    class WSConv2d(nn.Conv2d):
        pass

    class Linear(nn.Module):
        def __init__(self):
            super().__init__()
            self.W = nn.Parameter(torch.ones(3, 2))

    torch.manual_seed(0)
    own, student = WSConv2d(2, 4, 3), Linear()
    before = own.weight.detach().clone()
    nn.Sequential(own, student).apply(d2l.init_cnn)
    assert torch.equal(own.weight, before) and torch.equal(student.W, torch.ones(3, 2))
    scratch = Conv2d(2, 4, 3)  # cnnlab's from-scratch twin of nn.Conv2d is initialised as torch's
    before = scratch.weight.detach().clone()
    d2l.init_cnn(scratch)
    assert not torch.equal(scratch.weight, before)


def test_init_cnn_on_lazy_layers_skips_and_warns_once(monkeypatch):
    monkeypatch.setattr(models_module, "_warned_lazy", False)
    net = nn.Sequential(nn.LazyConv2d(4, 3), nn.ReLU(), nn.LazyLinear(2))
    with pytest.warns(UserWarning, match=r"apply_init\(\[X\], d2l.init_cnn\)") as record:
        net.apply(d2l.init_cnn)
        net.apply(d2l.init_cnn)
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nn.Sequential(nn.Linear(2, 2)).apply(d2l.init_cnn)  # materialised layers: no warning


def test_residual_and_resnext_block_shapes():
    X = torch.randn(4, 3, 6, 6)
    assert d2l.Residual(3)(X).shape == (4, 3, 6, 6)
    assert d2l.Residual(6, use_1x1conv=True, strides=2)(X).shape == (4, 6, 3, 3)
    blk = d2l.ResNeXtBlock(32, 16, 1)
    assert blk(torch.randn(4, 32, 96, 96)).shape == (4, 32, 96, 96)  # d2l 8.6.5's example
    assert blk.conv2.groups == 2
    blk = d2l.ResNeXtBlock(16, 4, 0.5, use_1x1conv=True, strides=2)
    assert blk(torch.randn(2, 8, 8, 8)).shape == (2, 16, 4, 4)


# --- devices, aliases --------------------------------------------------------------------------------------------


def test_devices_fall_back_to_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr("cnnlab.d2l.devices.mps_available", lambda: False)
    assert d2l.num_gpus() == 0 and d2l.cpu() == torch.device("cpu")
    assert d2l.try_gpu() == torch.device("cpu") and d2l.try_all_gpus() == [torch.device("cpu")]
    assert d2l.Trainer(max_epochs=1, num_gpus=1).gpus == []
    monkeypatch.setattr("cnnlab.d2l.devices.mps_available", lambda: True)  # MPS counts as one GPU
    assert d2l.num_gpus() == 1 and d2l.try_gpu() == torch.device("mps") and d2l.try_gpu(1) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert d2l.try_all_gpus() == [torch.device("cuda:0"), torch.device("cuda:1")]


def test_tensor_aliases_are_the_torch_operations():
    x = torch.arange(6.0).reshape(2, 3)
    assert d2l.tensor is torch.tensor and d2l.concat is torch.cat and d2l.float32 is torch.float32
    assert torch.equal(d2l.reshape(x, (3, 2)), x.reshape(3, 2))
    assert torch.equal(d2l.transpose(x), x.t())
    assert d2l.size(x) == d2l.numel(x) == 6
    assert torch.equal(d2l.reduce_sum(x, 0), x.sum(0)) and torch.equal(d2l.argmax(x, axis=1), torch.tensor([2, 2]))
    assert d2l.astype(x, torch.int32).dtype == torch.int32
    assert torch.equal(d2l.expand_dims(x, 0), x[None])
    assert isinstance(d2l.numpy(x.requires_grad_()), np.ndarray)
    assert d2l.to(x, d2l.cpu()).device.type == "cpu"
    assert d2l.corr2d.__module__ == "cnnlab.ops.reference"
    import matplotlib.pyplot

    assert d2l.plt is matplotlib.pyplot
    with pytest.raises(AttributeError):
        d2l.no_such_name  # noqa: B018


# --- Trainer -----------------------------------------------------------------------------------------------------


class Line(d2l.DataModule):
    """y = 2x - 1 with a validation split, through d2l's get_tensorloader."""

    def __init__(self, batch_size=8, num_train=64, with_val=True):
        super().__init__()
        self.save_hyperparameters()
        self.X = torch.randn(num_train + 32, 1)
        self.y = 2 * self.X - 1

    def get_dataloader(self, train):
        if not train and not self.with_val:
            return None
        i = slice(0, self.num_train) if train else slice(self.num_train, None)
        return self.get_tensorloader((self.X, self.y), train, i)


class Regression(d2l.Module):
    def __init__(self, lr=0.1):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(1, 1)

    def loss(self, y_hat, y):
        return F.mse_loss(y_hat, y)


def test_trainer_fits_a_line_and_counts_batches(capsys):
    torch.manual_seed(0)
    data, model = Line(), Regression()
    trainer = d2l.Trainer(max_epochs=20)
    trainer.fit(model, data)
    assert (trainer.num_train_batches, trainer.num_val_batches) == (8, 4)
    assert (trainer.epoch, trainer.train_batch_idx, trainer.val_batch_idx) == (19, 160, 80)
    assert model.net.weight.item() == pytest.approx(2, abs=1e-2)
    assert model.net.bias.item() == pytest.approx(-1, abs=1e-2)
    assert model.trainer is trainer and model.board.xlim == [0, 20]
    assert len(model.board.data["train_loss"]) == 40 and len(model.board.data["val_loss"]) == 20
    assert all(type(p.y) is float for p in model.board._lines["val_loss"])  # converted at each epoch's end
    lines = capsys.readouterr().out.splitlines()  # a script gets one line per epoch, not silence
    assert len(lines) == 20 and lines[0].startswith("epoch 1: train_loss ") and ", val_loss " in lines[0]
    assert lines[-1].startswith("epoch 20: ")


def test_trainer_limits_batches_and_works_without_validation():
    trainer = d2l.Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=100)
    trainer.fit(Regression(), Line())
    assert (trainer.num_train_batches, trainer.num_val_batches) == (2, 4)
    assert (trainer.train_batch_idx, trainer.val_batch_idx) == (6, 12)
    trainer = d2l.Trainer(max_epochs=1)
    trainer.fit(Regression(), Line(with_val=False))
    assert trainer.num_val_batches == 0 and trainer.val_batch_idx == 0


class Images(d2l.DataModule):
    """Random 1x8x8 images in 3 classes, through d2l's get_tensorloader."""

    def __init__(self, batch_size=8):
        super().__init__()
        self.save_hyperparameters()
        self.X, self.y = torch.rand(48, 1, 8, 8), torch.randint(0, 3, (48,))

    def get_dataloader(self, train):
        return self.get_tensorloader((self.X, self.y), train, slice(0, 32) if train else slice(32, None))


class TinyConvNet(d2l.Classifier):
    """Records, at every training step, whether its second conv weight (6 -> 4 channels) is channels-last."""

    def __init__(self, lazy: bool, lr=0.1):
        super().__init__()
        self.save_hyperparameters()
        conv1 = nn.LazyConv2d(6, 3) if lazy else nn.Conv2d(1, 6, 3)
        conv2 = nn.LazyConv2d(4, 3) if lazy else nn.Conv2d(6, 4, 3)
        self.net = nn.Sequential(conv1, nn.ReLU(), conv2, nn.Flatten(), nn.LazyLinear(3))
        self.layouts = []

    def training_step(self, batch):
        weight = self.net[2].weight
        self.layouts.append(None if nn.parameter.is_lazy(weight) else
                            weight.is_contiguous(memory_format=torch.channels_last))
        return super().training_step(batch)


@pytest.mark.parametrize("lazy", [False, True])
def test_trainer_holds_conv_weights_channels_last_while_fitting_and_hands_them_back(lazy):
    torch.manual_seed(0)
    model = TinyConvNet(lazy)
    if not lazy:
        model(torch.rand(1, 1, 8, 8))  # the LazyLinear head
    d2l.Trainer(max_epochs=2).fit(model, Images())
    # A lazy model has no shapes before its first step; it is converted right after it.
    assert model.layouts == ([None] if lazy else [True]) + [True] * 7
    assert all(p.is_contiguous() for p in model.parameters())  # as the user gave it (and as d2l leaves it)
    assert all(torch.isfinite(p).all() for p in model.parameters())


class ViewFlattened(d2l.Classifier):
    """Two convolutions, then ``x.view(n, -1)``: a view of a channels-last map fails (d2l trains it as it is)."""

    def __init__(self, lr=0.1):
        super().__init__()
        self.save_hyperparameters()
        self.conv1, self.conv2, self.fc = nn.Conv2d(1, 6, 3, padding=1), nn.Conv2d(6, 4, 3, padding=1), \
            nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.view(x.size(0), -1))


def test_a_model_that_flattens_with_view_trains_in_the_default_layout_with_a_warning():
    torch.manual_seed(0)
    model = ViewFlattened()
    with pytest.warns(UserWarning, match=r"ViewFlattened trains in the default memory layout, not channels-last: its "
                                         r"forward fails on channels-last feature maps \(view size is not compatible"):
        d2l.Trainer(max_epochs=2).fit(model, Images())
    assert all(p.is_contiguous() and torch.isfinite(p).all() for p in model.parameters())
    net = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.Flatten(), nn.Linear(64, 3))
    train_iter = d2l.load_array((Images().X, Images().y), batch_size=8)
    with pytest.warns(UserWarning, match="ViewFlattened trains in the default memory layout") as caught:
        d2l.train_ch6(model, train_iter, train_iter, 1, 0.1, torch.device("cpu"))
    assert len(caught) == 1 and all(p.is_contiguous() for p in model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d2l.train_ch6(net, train_iter, train_iter, 1, 0.1, torch.device("cpu"))  # nn.Flatten reshapes: no warning


class Checking(TinyConvNet):
    """A student's forward: asserts its batch size, and prints."""

    def forward(self, X):
        assert X.shape[0] == 8, X.shape
        print("forward")
        return super().forward(X)


def test_the_layout_check_runs_the_users_forward_as_training_does(capsys):
    # The check ran the first two examples: an assert on the batch size stopped training (d2l trains), left the
    # weights channels-last, and its print showed once more than under d2l.
    torch.manual_seed(0)
    model = Checking(lazy=False)
    model(torch.rand(8, 1, 8, 8))
    capsys.readouterr()
    weight, state = model.net[2].weight.data, model.state_dict()  # taken before training, as the book does
    before = weight.clone()
    d2l.Trainer(max_epochs=1).fit(model, Images())
    assert capsys.readouterr().out.count("forward") == 4 + 2  # the epoch's 4 training and 2 validation batches
    assert model.layouts == [True] * 4 and all(p.is_contiguous() for p in model.parameters())
    # what was taken from the weights before shares their storage again, trained, as under d2l
    assert not torch.equal(weight, before)
    assert torch.equal(weight, model.net[2].weight) and torch.equal(state["net.2.weight"], model.net[2].weight)


def test_a_forward_that_fails_in_any_layout_fails_with_its_own_error_and_the_model_handed_back():
    class Broken(TinyConvNet):
        def forward(self, X):
            raise ValueError("the student's own mistake")

    model = Broken(lazy=False)
    model.net(torch.rand(1, 1, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not blamed on channels-last
        with pytest.raises(ValueError, match="the student's own mistake"):
            d2l.Trainer(max_epochs=1).fit(model, Images())
    assert all(p.is_contiguous() for p in model.parameters())
    assert all(not m._forward_pre_hooks for m in model.modules())  # the small-BatchNorm hooks went too


def test_trainer_leaves_a_channels_last_model_and_a_dense_model_as_they_are():
    model = TinyConvNet(lazy=False)
    model(torch.rand(1, 1, 8, 8))
    model.to(memory_format=torch.channels_last)
    d2l.Trainer(max_epochs=1).fit(model, Images())
    assert model.layouts == [True] * 4 and model.net[2].weight.is_contiguous(memory_format=torch.channels_last)
    dense = Regression()
    d2l.Trainer(max_epochs=1).fit(dense, Line())
    assert all(p.is_contiguous() for p in dense.parameters())


def test_trainer_hands_the_model_back_contiguous_when_fit_is_interrupted():
    class Interrupting(TinyConvNet):
        def training_step(self, batch):
            if len(self.layouts) == 2:
                raise KeyboardInterrupt
            return super().training_step(batch)

    model = Interrupting(lazy=False)
    model(torch.rand(1, 1, 8, 8))
    with pytest.raises(KeyboardInterrupt):
        d2l.Trainer(max_epochs=1).fit(model, Images())
    assert model.layouts == [True, True] and all(p.is_contiguous() for p in model.parameters())


@pytest.mark.parametrize("kwargs", [{"limit_train_batches": 0}, {"limit_val_batches": 1.5},
                                    {"max_epochs": -1}, {"num_gpus": -1}, {"limit_train_batches": True}])
def test_trainer_rejects_bad_arguments(kwargs):
    with pytest.raises(CnnlabError):
        d2l.Trainer(**{"max_epochs": 1, **kwargs})


def test_clip_gradients_rescales_by_the_global_norm():
    model = nn.Linear(3, 2)
    grads = [torch.full_like(p, 2.0) for p in model.parameters()]  # 8 entries of 2: norm sqrt(32)
    for p, g in zip(model.parameters(), grads, strict=True):
        p.grad = g.clone()
    trainer = d2l.Trainer(max_epochs=1)
    trainer.clip_gradients(1.0, model)
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
    assert norm.item() == pytest.approx(1.0)
    assert torch.allclose(model.weight.grad, grads[0] / 32**0.5)
    trainer.clip_gradients(10.0, model)  # below the threshold: unchanged
    assert norm.item() == pytest.approx(torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters())).item())


def test_prepare_batch_keeps_cpu_batches_without_gpus():
    trainer = d2l.Trainer(max_epochs=1, num_gpus=0)
    batch = [torch.ones(2), torch.zeros(2)]
    assert trainer.prepare_batch(batch) is batch and trainer.device == torch.device("cpu")


# --- DataModule and FashionMNIST ---------------------------------------------------------------------------------


def test_get_tensorloader_shuffles_only_for_training():
    data = Line(batch_size=16)
    train = data.get_tensorloader((data.X, data.y), True)
    torch.manual_seed(1)
    first = next(iter(train))
    torch.manual_seed(1)
    assert torch.equal(next(iter(train))[0], first[0])  # the order comes from torch's global generator
    assert not torch.equal(next(iter(train))[0], first[0])  # and is drawn anew each pass
    seen = torch.cat([X for X, _ in train])
    assert torch.equal(seen.sort(dim=0).values, data.X.sort(dim=0).values)  # a permutation of every row
    val = data.get_dataloader(False)
    X, y = next(iter(val))
    assert torch.equal(X, data.X[64:80]) and torch.equal(y, data.y[64:80])
    assert len(val) == 2 and len(val.dataset) == 32 and isinstance(next(iter(val)), list)  # as a DataLoader's
    X[:] = 0
    assert not torch.equal(data.X[64:80], X)  # a batch is a copy, as collating makes one


def test_fashion_mnist_rejects_bad_arguments():
    with pytest.raises(CnnlabError, match="square"):
        d2l.FashionMNIST(resize=(28, 32))
    with pytest.raises(CnnlabError, match="batch_size"):
        d2l.FashionMNIST(batch_size=0)


@pytest.fixture(scope="module")
def fmnist():
    return d2l.FashionMNIST(batch_size=128)


@needs_real_data
def test_fashion_mnist_datasets_are_books(fmnist):
    assert len(fmnist.train) == 60000 and len(fmnist.val) == 10000
    image, label = fmnist.train[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and label == 9
    assert 0 <= image.min() and image.max() <= 1 and image.max() > 0.9
    assert torch.equal(image[0], fmnist.train.data[0].float() / 255)
    assert fmnist.text_labels([0, 9, torch.tensor(3)]) == ["t-shirt", "ankle boot", "dress"]
    assert fmnist.hparams["batch_size"] == 128 and fmnist.resize == (28, 28)


@needs_real_data
def test_fashion_mnist_loaders_have_the_books_batches(fmnist):
    train = fmnist.get_dataloader(True)
    assert isinstance(train, DeviceLoader) and len(train) == 469
    sizes, labels = [], []
    for _, y in train:
        sizes.append(len(y))
        labels.append(y)
    X, y = next(iter(train))
    assert X.dtype == torch.float32 and X.shape == (128, 1, 28, 28) and y.dtype == torch.int64
    assert sizes[-1] == 60000 % 128 and sum(sizes) == 60000  # the last partial batch is kept
    assert torch.equal(torch.cat(labels).bincount(), fmnist.train.targets.bincount())
    first_a, first_b = next(iter(train))[1], next(iter(train))[1]
    assert not torch.equal(first_a, first_b)  # a new shuffle every pass, as a shuffling DataLoader
    val = fmnist.val_dataloader()
    X, y = next(iter(val))
    assert torch.equal(y, fmnist.val.targets[:128]) and torch.equal(next(iter(val))[1], y)  # in order
    assert torch.equal(X[0, 0], fmnist.val.data[0].float() / 255)
    assert [len(b[1]) for b in val][-1] == 10000 % 128


@needs_real_data
def test_fashion_mnist_shuffle_follows_torch_manual_seed(fmnist):
    torch.manual_seed(3)
    a = next(iter(fmnist.train_dataloader()))[1]
    torch.manual_seed(3)
    assert torch.equal(next(iter(fmnist.train_dataloader()))[1], a)


@needs_real_data
def test_a_pass_is_shuffled_as_a_torch_dataloaders_and_passes_do_not_disturb_each_other(fmnist):
    """Each pass draws its order from torch's generator as a DataLoader's iterator and RandomSampler do: the book's
    own order for a seed, whenever the seed is set (the loader's seed was drawn once, when it was made, so a
    `torch.manual_seed` before each run of d2l-zh's reused loaders changed nothing), the generator left as a
    DataLoader leaves it, and a second pass started mid-way (evaluate_accuracy_gpu on train_iter inside the batch
    loop) no longer reshuffles the rest of the first (a quarter of the epoch's images came twice, as many never).
    Batches are [X, y] lists, as the DataLoader's collate makes them."""
    from torch.utils.data import DataLoader, TensorDataset

    train = fmnist.train_dataloader()
    book = DataLoader(TensorDataset(fmnist.train.targets), batch_size=128, shuffle=True)
    for seed in (0, 7):
        torch.manual_seed(seed)
        ours = [y for _, y in train]
        after_ours = torch.rand(3)
        torch.manual_seed(seed)
        theirs = [y for (y,) in book]
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True)), seed
        assert torch.equal(torch.rand(3), after_ours)  # the same draws from the global generator
    torch.manual_seed(1)
    reference = [y for _, y in train]
    torch.manual_seed(1)
    first = iter(train)
    seen = [next(first)[1] for _ in range(3)]
    sum(len(y) for _, y in train)  # a whole second pass, begun and ended inside the first
    seen += [y for _, y in first]
    assert all(torch.equal(a, b) for a, b in zip(seen, reference, strict=True))
    batch = next(iter(train))
    assert type(batch) is list and type(next(iter(fmnist.val_dataloader()))) is list
    batch[0] = batch[0] * 2  # the book's cells may assign into a batch


@needs_real_data
def test_fashion_mnist_resize_and_d2l_root(tmp_path):
    import os

    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in os.listdir(os.environ["CNNLAB_DATA"]):
        (raw / name).symlink_to(os.path.join(os.environ["CNNLAB_DATA"], name))
    data = d2l.FashionMNIST(batch_size=32, resize=64, root=tmp_path)  # where d2l 1.0.3 downloads to
    with pytest.raises(CnnlabError, match=r"^FashionMNIST\(root='.*/nowhere'\): .*/nowhere is not a folder; "
                                          r"expected one with the four Fashion-MNIST .gz files"):
        d2l.FashionMNIST(root=tmp_path / "nowhere")  # the line named --data-dir, a flag of the command line
    X, y = next(iter(data.val_dataloader()))
    assert X.shape == (32, 1, 64, 64) and 0 <= X.min() and X.max() <= 1
    assert data.val[0][0].shape == (1, 64, 64)
    assert torch.allclose(data.val[0][0], X[0])


@needs_real_data
@pytest.mark.parametrize("side", [20, 64])
def test_resize_is_within_one_level_of_torchvisions_pil_resize_shrinking_too(side):
    # The book's loader resizes each PIL image (transforms.Resize, antialiased); shrinking without antialiasing
    # was up to 0.34 off at 20 px.
    from PIL import Image
    from torchvision import transforms

    X, _ = next(iter(d2l.FashionMNIST(batch_size=16, resize=side).val_dataloader()))
    raw = load_fashion_mnist().test_images[:16]
    book = torch.stack([transforms.ToTensor()(transforms.Resize(side)(Image.fromarray(x.numpy()))) for x in raw])
    assert (X - book).abs().max() <= 1 / 255 + 1e-6


@needs_real_data
def test_visualize_returns_nothing_so_jupyter_shows_one_figure(fmnist, capsys, monkeypatch):
    drawn = []
    monkeypatch.setattr(data_module, "show_images", lambda *a, **k: drawn.append((a, k)) or ["axes"])
    batch = next(iter(fmnist.val_dataloader()))
    assert fmnist.visualize(batch, nrows=2, ncols=4) is None  # a returned figure is the cell's value: shown twice
    (imgs, nrows, ncols), kwargs = drawn[0]
    assert imgs.shape == (128, 28, 28) and (nrows, ncols) == (2, 4)
    assert kwargs["titles"][:2] == ["ankle boot", "pullover"] and capsys.readouterr().out == ""


def test_show_images_in_a_script_is_what_plt_savefig_saves(tmp_path):
    # It drew on a bare Figure outside Jupyter: the book's script idiom, d2l.plt.savefig (or plt.show) after it,
    # saved (or showed) a blank picture.
    axes = d2l.show_images(torch.rand(8, 5, 5, generator=torch.Generator().manual_seed(0)), 2, 4,
                           titles=list("abcdefgh"))
    try:
        assert len(axes) == 8 and [ax.get_title() for ax in axes[:2]] == ["a", "b"]
        assert axes[0].figure is d2l.plt.gcf()
        d2l.plt.savefig(tmp_path / "images.png")
        saved = matplotlib.image.imread(tmp_path / "images.png")[..., :3]
        assert saved.std() > 0.1  # the images' colours, not a white page
    finally:
        d2l.plt.close(axes[0].figure)
