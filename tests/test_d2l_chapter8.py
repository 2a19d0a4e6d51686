"""The book's other chapter 8 networks, written as d2l 8.1-8.8 writes them, run on ``cnnlab.d2l``.

AlexNet (8.1), NiN (8.3), GoogLeNet (8.4), BN-LeNet (8.5), ResNeXt block (8.6.5), DenseNet (8.7) and
AnyNet/RegNetX-32 (8.8) are ``d2l.Classifier`` subclasses with Lazy layers and ``self.net.apply(d2l.init_cnn)``
in their constructors, as in the book. Each is built, summarised at the book's input size (final shape checked),
and trained for two batches at a small resize. A last test trains the book's LeNet long enough to leave the
sigmoid plateau and checks its validation accuracy beats chance by a wide margin.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from cnnlab import d2l
from d2l_support import assert_epoch_lines, needs_real_data

# --- 8.1 AlexNet -------------------------------------------------------------------------------------------------


class AlexNet(d2l.Classifier):
    def __init__(self, lr=0.1, num_classes=10):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.LazyConv2d(96, kernel_size=11, stride=4, padding=1),
            nn.ReLU(), nn.MaxPool2d(kernel_size=3, stride=2),
            nn.LazyConv2d(256, kernel_size=5, padding=2), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.LazyConv2d(384, kernel_size=3, padding=1), nn.ReLU(),
            nn.LazyConv2d(384, kernel_size=3, padding=1), nn.ReLU(),
            nn.LazyConv2d(256, kernel_size=3, padding=1), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2), nn.Flatten(),
            nn.LazyLinear(4096), nn.ReLU(), nn.Dropout(p=0.5),
            nn.LazyLinear(4096), nn.ReLU(), nn.Dropout(p=0.5),
            nn.LazyLinear(num_classes))
        self.net.apply(d2l.init_cnn)


# --- 8.3 NiN -----------------------------------------------------------------------------------------------------


def nin_block(out_channels, kernel_size, strides, padding):
    return nn.Sequential(
        nn.LazyConv2d(out_channels, kernel_size, strides, padding), nn.ReLU(),
        nn.LazyConv2d(out_channels, kernel_size=1), nn.ReLU(),
        nn.LazyConv2d(out_channels, kernel_size=1), nn.ReLU())


class NiN(d2l.Classifier):
    def __init__(self, lr=0.1, num_classes=10):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nin_block(96, kernel_size=11, strides=4, padding=0),
            nn.MaxPool2d(3, stride=2),
            nin_block(256, kernel_size=5, strides=1, padding=2),
            nn.MaxPool2d(3, stride=2),
            nin_block(384, kernel_size=3, strides=1, padding=1),
            nn.MaxPool2d(3, stride=2),
            nn.Dropout(0.5),
            nin_block(num_classes, kernel_size=3, strides=1, padding=1),
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Flatten())
        self.net.apply(d2l.init_cnn)


# --- 8.4 GoogLeNet -----------------------------------------------------------------------------------------------


class Inception(nn.Module):
    # c1--c4 are the number of output channels for each branch
    def __init__(self, c1, c2, c3, c4, **kwargs):
        super().__init__(**kwargs)
        self.b1_1 = nn.LazyConv2d(c1, kernel_size=1)
        self.b2_1 = nn.LazyConv2d(c2[0], kernel_size=1)
        self.b2_2 = nn.LazyConv2d(c2[1], kernel_size=3, padding=1)
        self.b3_1 = nn.LazyConv2d(c3[0], kernel_size=1)
        self.b3_2 = nn.LazyConv2d(c3[1], kernel_size=5, padding=2)
        self.b4_1 = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.b4_2 = nn.LazyConv2d(c4, kernel_size=1)

    def forward(self, x):
        b1 = F.relu(self.b1_1(x))
        b2 = F.relu(self.b2_2(F.relu(self.b2_1(x))))
        b3 = F.relu(self.b3_2(F.relu(self.b3_1(x))))
        b4 = F.relu(self.b4_2(self.b4_1(x)))
        return torch.cat((b1, b2, b3, b4), dim=1)


class GoogleNet(d2l.Classifier):
    def b1(self):
        return nn.Sequential(
            nn.LazyConv2d(64, kernel_size=7, stride=2, padding=3),
            nn.ReLU(), nn.MaxPool2d(kernel_size=3, stride=2, padding=1))


@d2l.add_to_class(GoogleNet)
def b2(self):
    return nn.Sequential(
        nn.LazyConv2d(64, kernel_size=1), nn.ReLU(),
        nn.LazyConv2d(192, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1))


@d2l.add_to_class(GoogleNet)
def b3(self):
    return nn.Sequential(Inception(64, (96, 128), (16, 32), 32),
                         Inception(128, (128, 192), (32, 96), 64),
                         nn.MaxPool2d(kernel_size=3, stride=2, padding=1))


@d2l.add_to_class(GoogleNet)
def b4(self):
    return nn.Sequential(Inception(192, (96, 208), (16, 48), 64),
                         Inception(160, (112, 224), (24, 64), 64),
                         Inception(128, (128, 256), (24, 64), 64),
                         Inception(112, (144, 288), (32, 64), 64),
                         Inception(256, (160, 320), (32, 128), 128),
                         nn.MaxPool2d(kernel_size=3, stride=2, padding=1))


@d2l.add_to_class(GoogleNet)
def b5(self):
    return nn.Sequential(Inception(256, (160, 320), (32, 128), 128),
                         Inception(384, (192, 384), (48, 128), 128),
                         nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten())


@d2l.add_to_class(GoogleNet)
def __init__(self, lr=0.1, num_classes=10):
    super(GoogleNet, self).__init__()
    self.save_hyperparameters()
    self.net = nn.Sequential(self.b1(), self.b2(), self.b3(), self.b4(),
                             self.b5(), nn.LazyLinear(num_classes))
    self.net.apply(d2l.init_cnn)


# --- 8.5 Batch normalization -------------------------------------------------------------------------------------


class BNLeNet(d2l.Classifier):
    def __init__(self, lr=0.1, num_classes=10):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.LazyConv2d(6, kernel_size=5), nn.LazyBatchNorm2d(),
            nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
            nn.LazyConv2d(16, kernel_size=5), nn.LazyBatchNorm2d(),
            nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Flatten(), nn.LazyLinear(120), nn.LazyBatchNorm1d(),
            nn.Sigmoid(), nn.LazyLinear(84), nn.LazyBatchNorm1d(),
            nn.Sigmoid(), nn.LazyLinear(num_classes))


# --- 8.7 DenseNet ------------------------------------------------------------------------------------------------


def conv_block(num_channels):
    return nn.Sequential(
        nn.LazyBatchNorm2d(), nn.ReLU(),
        nn.LazyConv2d(num_channels, kernel_size=3, padding=1))


class DenseBlock(nn.Module):
    def __init__(self, num_convs, num_channels):
        super().__init__()
        layer = []
        for i in range(num_convs):  # noqa: B007  the book's loop
            layer.append(conv_block(num_channels))
        self.net = nn.Sequential(*layer)

    def forward(self, X):
        for blk in self.net:
            Y = blk(X)
            # Concatenate input and output of each block along the channels
            X = torch.cat((X, Y), dim=1)
        return X


def transition_block(num_channels):
    return nn.Sequential(
        nn.LazyBatchNorm2d(), nn.ReLU(),
        nn.LazyConv2d(num_channels, kernel_size=1),
        nn.AvgPool2d(kernel_size=2, stride=2))


class DenseNet(d2l.Classifier):
    def b1(self):
        return nn.Sequential(
            nn.LazyConv2d(64, kernel_size=7, stride=2, padding=3),
            nn.LazyBatchNorm2d(), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1))


@d2l.add_to_class(DenseNet)
def __init__(self, num_channels=64, growth_rate=32, arch=(4, 4, 4, 4),  # noqa: F811  (add_to_class)
             lr=0.1, num_classes=10):
    super(DenseNet, self).__init__()
    self.save_hyperparameters()
    self.net = nn.Sequential(self.b1())
    for i, num_convs in enumerate(arch):
        self.net.add_module(f'dense_blk{i+1}', DenseBlock(num_convs,
                                                          growth_rate))
        # The number of output channels in the previous dense block
        num_channels += num_convs * growth_rate
        # A transition layer that halves the number of channels is added
        # between the dense blocks
        if i != len(arch) - 1:
            num_channels //= 2
            self.net.add_module(f'tran_blk{i+1}', transition_block(
                num_channels))
    self.net.add_module('last', nn.Sequential(
        nn.LazyBatchNorm2d(), nn.ReLU(),
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
        nn.LazyLinear(num_classes)))
    self.net.apply(d2l.init_cnn)


# --- 8.8 AnyNet and RegNetX-32 -----------------------------------------------------------------------------------


class AnyNet(d2l.Classifier):
    def stem(self, num_channels):
        return nn.Sequential(
            nn.LazyConv2d(num_channels, kernel_size=3, stride=2, padding=1),
            nn.LazyBatchNorm2d(), nn.ReLU())


@d2l.add_to_class(AnyNet)
def stage(self, depth, num_channels, groups, bot_mul):
    blk = []
    for i in range(depth):
        if i == 0:
            blk.append(d2l.ResNeXtBlock(num_channels, groups, bot_mul,
                       use_1x1conv=True, strides=2))
        else:
            blk.append(d2l.ResNeXtBlock(num_channels, groups, bot_mul))
    return nn.Sequential(*blk)


@d2l.add_to_class(AnyNet)
def __init__(self, arch, stem_channels, lr=0.1, num_classes=10):  # noqa: F811
    super(AnyNet, self).__init__()
    self.save_hyperparameters()
    self.net = nn.Sequential(self.stem(stem_channels))
    for i, s in enumerate(arch):
        self.net.add_module(f'stage{i+1}', self.stage(*s))
    self.net.add_module('head', nn.Sequential(
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
        nn.LazyLinear(num_classes)))
    self.net.apply(d2l.init_cnn)


class RegNetX32(AnyNet):
    def __init__(self, lr=0.1, num_classes=10):
        stem_channels, groups, bot_mul = 32, 16, 1
        depths, channels = (4, 6), (32, 80)
        super().__init__(
            ((depths[0], channels[0], groups, bot_mul),
             (depths[1], channels[1], groups, bot_mul)),
            stem_channels, lr, num_classes)


# --- the tests ---------------------------------------------------------------------------------------------------

# (model, the book's layer_summary input shape, the last printed line, a small training side, the book's lr)
CASES = {
    "AlexNet": (AlexNet, (1, 1, 224, 224), ("Linear", [1, 10]), 68, 0.01),  # 68: about AlexNet's smallest input
    "NiN": (NiN, (1, 1, 224, 224), ("Flatten", [1, 10]), 68, 0.05),
    "GoogleNet": (GoogleNet, (1, 1, 96, 96), ("Linear", [1, 10]), 32, 0.01),
    # Two samples: BatchNorm1d in training mode needs more than one value per channel.
    "BNLeNet": (BNLeNet, (2, 1, 28, 28), ("Linear", [2, 10]), 28, 0.1),
    "DenseNet": (DenseNet, (1, 1, 96, 96), ("Sequential", [1, 10]), 32, 0.01),
    "RegNetX32": (RegNetX32, (1, 1, 96, 96), ("Sequential", [1, 10]), 32, 0.05),
}


@pytest.mark.parametrize("name", CASES)
def test_layer_summary_ends_with_the_books_shape(name, capsys):
    Model, shape, (last_layer, last_shape), _, lr = CASES[name]
    model = Model(lr=lr)
    assert model.hparams["lr"] == lr and model.hparams["num_classes"] == 10
    model.layer_summary(shape)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(model.net)
    assert lines[-1] == f"{last_layer} output shape:\t torch.Size({last_shape})"


def test_summaries_of_the_books_stages(capsys):
    GoogleNet().layer_summary((1, 1, 96, 96))  # d2l 8.4.2's printed shapes
    shapes = [line.split("\t ")[1] for line in capsys.readouterr().out.splitlines()]
    assert shapes == ["torch.Size([1, 64, 24, 24])", "torch.Size([1, 192, 12, 12])", "torch.Size([1, 480, 6, 6])",
                      "torch.Size([1, 832, 3, 3])", "torch.Size([1, 1024])", "torch.Size([1, 10])"]
    RegNetX32().layer_summary((1, 1, 96, 96))  # d2l 8.8.4
    shapes = [line.split("\t ")[1] for line in capsys.readouterr().out.splitlines()]
    assert shapes == ["torch.Size([1, 32, 48, 48])", "torch.Size([1, 32, 24, 24])", "torch.Size([1, 80, 12, 12])",
                      "torch.Size([1, 10])"]
    model = DenseNet()
    assert model.hparams["num_channels"] == 64  # saved before __init__ changes its local copy
    assert [name for name, _ in model.net.named_children()][1:4] == ["dense_blk1", "tran_blk1", "dense_blk2"]


def test_resnext_block_keeps_the_shape():
    blk = d2l.ResNeXtBlock(32, 16, 1)
    X = torch.randn(4, 32, 96, 96)
    assert blk(X).shape == torch.Size([4, 32, 96, 96])


@needs_real_data
@pytest.mark.parametrize("name", CASES)
def test_trains_two_batches_at_a_small_size(name, capsys):
    Model, _, _, side, lr = CASES[name]
    torch.manual_seed(0)
    model = Model(lr=lr)
    trainer = d2l.Trainer(max_epochs=1, num_gpus=1, limit_train_batches=2, limit_val_batches=1)
    data = d2l.FashionMNIST(batch_size=32, resize=(side, side))
    model.apply_init([next(iter(data.get_dataloader(True)))[0]], d2l.init_cnn)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.fit(model, data)
    assert_epoch_lines(capsys.readouterr().out, 1)
    assert trainer.train_batch_idx == 2 and trainer.val_batch_idx == 1
    assert any(not torch.equal(a, b.cpu()) for a, b in zip(before, model.parameters(), strict=True))  # on a GPU
    curves = model.board.data
    assert list(curves) == ["train_loss", "val_loss", "val_acc"]
    assert all(math.isfinite(p.y) for line in curves.values() for p in line)


@needs_real_data
@pytest.mark.slow
def test_lenet_learns_beyond_chance():
    # The sigmoid LeNet sits on the log(10) = 2.30 loss plateau for the first ~350-450 SGD steps at lr 0.9 and
    # batch 128 (a larger lr does not shorten it), then falls fast: 800 steps reach 58-68% over seeds 0-2.
    torch.manual_seed(0)
    data = d2l.FashionMNIST(batch_size=128)
    model = d2l.LeNet(lr=0.9)
    model.apply_init([next(iter(data.get_dataloader(True)))[0]], d2l.init_cnn)
    trainer = d2l.Trainer(max_epochs=2, limit_train_batches=400, limit_val_batches=10)
    trainer.fit(model, data)
    model.eval()
    with torch.no_grad():
        batches = [batch for _, batch in zip(range(10), data.val_dataloader(), strict=False)]
        correct = sum(model.accuracy(model(X), y, averaged=False).sum().item() for X, y in batches)
    accuracy = correct / sum(len(y) for _, y in batches)
    assert accuracy > 0.45, accuracy  # chance is 0.10
    assert model.board.data["val_acc"][-1].y == pytest.approx(accuracy, abs=1e-6)  # the board saw the same
    assert model.board.data["train_loss"][-1].y < 1.6
