"""The seed notebook (shared/seed/000_401e897d5cf20e8e.txt, d2l 7.2-8.6) run against ``cnnlab.d2l``.

Each test is one section: its cells are copied as the student ran them, with only the import line changed from
``from d2l import torch as d2l`` (OCR'd as ``d21``) to ``from cnnlab import d2l``, OCR damage (indentation,
``1`` for ``l``, ``init cnn``) repaired, and the cells the OCR dropped (7.4, 7.5's pool2d) restored from the book.
Asserted are the outputs the seed shows. Training cells keep their code but get ``limit_train_batches`` /
``limit_val_batches`` and, where the network allows, a smaller ``resize``, so the file runs in about a minute.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from cnnlab import d2l
from d2l_support import assert_epoch_lines, needs_real_data, summary_lines


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


# ---------------------------------------------------------------------------------------------------------------
# 7.2 Convolutions for images

def corr2d(X, K):
    h, w = K.shape
    Y = torch.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y[i, j] = (X[i:i + h, j:j + w] * K).sum()
    return Y


class Conv2D(nn.Module):
    def __init__(self, kernel_size):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(kernel_size))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return corr2d(x, self.weight) + self.bias


EDGE_X = [[1.0, 1, 0, 0, 0, 0, 1, 1]] * 6
EDGE_Y = [[0.0, 1, 0, 0, 0, -1, 0]] * 6


def test_7_2_cross_correlation_and_edges():
    X = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]])
    K = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    assert torch.equal(corr2d(X, K), torch.tensor([[19., 25.], [37., 43.]]))
    assert torch.equal(d2l.corr2d(X, K), corr2d(X, K))  # the library's loop agrees with the notebook's

    X = torch.ones((6, 8))
    X[:, 2:6] = 0
    assert torch.equal(X, torch.tensor(EDGE_X))
    K = torch.tensor([[1.0, -1.0]])
    Y = corr2d(X, K)
    assert torch.equal(Y, torch.tensor(EDGE_Y))
    assert torch.equal(corr2d(X.t(), K), torch.zeros(8, 5))

    conv = Conv2D(kernel_size=(1, 2))  # the hand-written layer with the edge kernel gives the same map
    with torch.no_grad():
        conv.weight[:] = K
    assert torch.equal(conv(X), Y)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_7_2_4_learning_a_kernel(capsys, seed):
    torch.manual_seed(seed)
    X = torch.tensor(EDGE_X)
    Y = torch.tensor(EDGE_Y)

    conv2d = nn.LazyConv2d(1, kernel_size=(1, 2), bias=False)
    X = X.reshape((1, 1, 6, 8))
    Y = Y.reshape((1, 1, 6, 7))
    lr = 3e-2
    for i in range(10):
        Y_hat = conv2d(X)
        l = (Y_hat - Y) ** 2
        conv2d.zero_grad()
        l.sum().backward()
        conv2d.weight.data[:] -= lr * conv2d.weight.grad
        if (i + 1) % 2 == 0:
            print(f'epoch {i + 1}, loss {l.sum():.3f}')

    # The seed printed 12.122, 2.714, 0.734, 0.237, 0.087 for its random start: same lines, falling losses.
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == ["epoch 2", "epoch 4", "epoch 6", "epoch 8", "epoch 10"]
    losses = [float(re.fullmatch(r"epoch \d+, loss (\d+\.\d{3})", line).group(1)) for line in lines]
    assert all(a > b for a, b in zip(losses, losses[1:], strict=False)), losses
    assert losses[-1] < 0.3
    kernel = conv2d.weight.data.reshape((1, 2))
    assert torch.allclose(kernel, torch.tensor([[1.0, -1.0]]), atol=0.2), kernel  # seed: [[1.0132, -0.9551]]


# ---------------------------------------------------------------------------------------------------------------
# 7.3 Padding and stride

def comp_conv2d(conv2d, X):
    X = X.reshape((1, 1) + X.shape)
    Y = conv2d(X)
    return Y.reshape(Y.shape[2:])


def test_7_3_padding_and_stride():
    conv2d = nn.LazyConv2d(1, kernel_size=3, padding=1)
    X = torch.rand(size=(8, 8))
    assert comp_conv2d(conv2d, X).shape == torch.Size([8, 8])
    conv2d = nn.LazyConv2d(1, kernel_size=(5, 3), padding=(2, 1))
    assert comp_conv2d(conv2d, X).shape == torch.Size([8, 8])
    conv2d = nn.LazyConv2d(1, kernel_size=3, padding=1, stride=2)
    assert comp_conv2d(conv2d, X).shape == torch.Size([4, 4])
    conv2d = nn.LazyConv2d(1, kernel_size=(3, 5), padding=(0, 1), stride=(3, 4))
    assert comp_conv2d(conv2d, X).shape == torch.Size([2, 2])


# ---------------------------------------------------------------------------------------------------------------
# 7.4 Multiple input and multiple output channels (cells 18-22 restored from the book; the OCR lost them)

def corr2d_multi_in(X, K):
    return sum(d2l.corr2d(x, k) for x, k in zip(X, K))  # noqa: B905  the book's code


def corr2d_multi_in_out(X, K):
    return torch.stack([corr2d_multi_in(X, k) for k in K], 0)


def corr2d_multi_in_out_1x1(X, K):
    c_i, h, w = X.shape
    c_o = K.shape[0]
    X = X.reshape((c_i, h * w))
    K = K.reshape((c_o, c_i))
    Y = torch.matmul(K, X)
    return Y.reshape((c_o, h, w))


def test_7_4_channels():
    X = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]],
                      [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]])
    K = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]]])
    assert torch.equal(corr2d_multi_in(X, K), torch.tensor([[56., 72.], [104., 120.]]))

    K = torch.stack((K, K + 1, K + 2), 0)
    assert K.shape == torch.Size([3, 2, 2, 2])
    assert torch.equal(corr2d_multi_in_out(X, K), torch.tensor(
        [[[56., 72.], [104., 120.]], [[76., 100.], [148., 172.]], [[96., 128.], [192., 224.]]]))

    X = torch.normal(0, 1, (3, 3, 3))
    K = torch.normal(0, 1, (2, 3, 1, 1))
    Y1 = corr2d_multi_in_out_1x1(X, K)
    Y2 = corr2d_multi_in_out(X, K)
    assert float(torch.abs(Y1 - Y2).sum()) < 1e-6


# ---------------------------------------------------------------------------------------------------------------
# 7.5 Pooling (pool2d restored from the book; cell 25 is missing from the seed)

def pool2d(X, pool_size, mode='max'):
    p_h, p_w = pool_size
    Y = torch.zeros((X.shape[0] - p_h + 1, X.shape[1] - p_w + 1))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            if mode == 'max':
                Y[i, j] = X[i: i + p_h, j: j + p_w].max()
            elif mode == 'avg':
                Y[i, j] = X[i: i + p_h, j: j + p_w].mean()
    return Y


def test_7_5_pooling():
    X = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]])
    assert torch.equal(pool2d(X, (2, 2)), torch.tensor([[4., 5.], [7., 8.]]))
    assert torch.equal(pool2d(X, (2, 2), 'avg'), torch.tensor([[2., 3.], [5., 6.]]))

    X = torch.arange(16, dtype=torch.float32).reshape((1, 1, 4, 4))
    pool2d_ = nn.MaxPool2d(3)
    assert torch.equal(pool2d_(X), torch.tensor([[[[10.]]]]))
    pool2d_ = nn.MaxPool2d(3, padding=1, stride=2)
    assert torch.equal(pool2d_(X), torch.tensor([[[[5., 7.], [13., 15.]]]]))
    pool2d_ = nn.MaxPool2d((2, 3), stride=(2, 3), padding=(0, 1))
    assert torch.equal(pool2d_(X), torch.tensor([[[[5., 7.], [13., 15.]]]]))

    X = torch.cat((X, X + 1), 1)
    assert torch.equal(X[0, 1], torch.arange(1, 17, dtype=torch.float32).reshape(4, 4))
    pool2d_ = nn.MaxPool2d(3, padding=1, stride=2)
    assert torch.equal(pool2d_(X), torch.tensor([[[[5., 7.], [13., 15.]], [[6., 8.], [14., 16.]]]]))


# ---------------------------------------------------------------------------------------------------------------
# 7.6 LeNet

def init_cnn(module):
    if type(module) == nn.Linear or type(module) == nn.Conv2d:  # noqa: E721  the book's test, kept verbatim
        nn.init.xavier_uniform_(module.weight)


class LeNet(d2l.Classifier):
    def __init__(self, lr=0.1, num_classes=10):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.LazyConv2d(6, kernel_size=5, padding=2), nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.LazyConv2d(16, kernel_size=5), nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Flatten(),
            nn.LazyLinear(120), nn.Sigmoid(),
            nn.LazyLinear(84), nn.Sigmoid(),
            nn.LazyLinear(num_classes))


# The true sequence; the seed's OCR lost the "Sigmoid 16x10x10" and "AvgPool2d 16x5x5" lines.
LENET_SUMMARY = summary_lines([
    ("Conv2d", [1, 6, 28, 28]), ("Sigmoid", [1, 6, 28, 28]), ("AvgPool2d", [1, 6, 14, 14]),
    ("Conv2d", [1, 16, 10, 10]), ("Sigmoid", [1, 16, 10, 10]), ("AvgPool2d", [1, 16, 5, 5]),
    ("Flatten", [1, 400]), ("Linear", [1, 120]), ("Sigmoid", [1, 120]), ("Linear", [1, 84]),
    ("Sigmoid", [1, 84]), ("Linear", [1, 10]),
])


def test_7_6_lenet_layer_summary(capsys, monkeypatch):
    # The cell redefines Classifier.layer_summary for the whole process; monkeypatch puts d2l's back afterwards.
    monkeypatch.setattr(d2l.Classifier, "layer_summary", d2l.Classifier.layer_summary)

    @d2l.add_to_class(d2l.Classifier)
    def layer_summary(self, X_shape):
        X = torch.randn(*X_shape)
        for layer in self.net:
            X = layer(X)
            print(layer.__class__.__name__, 'output shape:\t', X.shape)

    model = LeNet()
    model.layer_summary((1, 1, 28, 28))
    assert capsys.readouterr().out.splitlines() == LENET_SUMMARY
    assert model.hparams == {"lr": 0.1, "num_classes": 10}


@needs_real_data
def test_7_6_2_lenet_training(capsys):
    trainer = d2l.Trainer(max_epochs=2, num_gpus=1, limit_train_batches=4, limit_val_batches=2)
    data = d2l.FashionMNIST(batch_size=128)
    model = LeNet(lr=0.1)
    model.apply_init([next(iter(data.get_dataloader(True)))[0]], init_cnn)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.fit(model, data)

    assert_epoch_lines(capsys.readouterr().out, 2)
    assert trainer.train_batch_idx == 8 and trainer.val_batch_idx == 4
    assert all(not torch.equal(a, b.cpu()) for a, b in zip(before, model.parameters(), strict=True))  # on a GPU
    curves = model.board.data
    assert list(curves) == ["train_loss", "val_loss", "val_acc"]
    # 2 points per epoch, each at the mean x of its batches, x = batches done / batches per epoch (d2l 3.2.3)
    assert [p.x for p in curves["train_loss"]] == [0.125, 0.625, 1.125, 1.625]
    assert [p.x for p in curves["val_acc"]] == [1, 2]
    assert all(isinstance(p.y, float) and math.isfinite(p.y) for line in curves.values() for p in line)
    assert all(0 <= p.y <= 1 for p in curves["val_acc"])


# ---------------------------------------------------------------------------------------------------------------
# 8.2 VGG

def vgg_block(num_convs, out_channels):
    layers = []
    for _ in range(num_convs):
        layers.append(nn.LazyConv2d(out_channels, kernel_size=3, padding=1))
        layers.append(nn.ReLU())
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class VGG(d2l.Classifier):
    def __init__(self, arch, lr=0.1, num_classes=10):
        super().__init__()
        self.save_hyperparameters()
        conv_blks = []
        for (num_convs, out_channels) in arch:
            conv_blks.append(vgg_block(num_convs, out_channels))
        self.net = nn.Sequential(
            *conv_blks, nn.Flatten(),
            nn.LazyLinear(4096), nn.ReLU(), nn.Dropout(0.5),
            nn.LazyLinear(4096), nn.ReLU(), nn.Dropout(0.5),
            nn.LazyLinear(num_classes))
        self.net.apply(d2l.init_cnn)


def test_8_2_vgg_layer_summary(capsys, recwarn):
    VGG(arch=((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))).layer_summary((1, 1, 224, 224))
    assert capsys.readouterr().out.splitlines() == summary_lines([
        ("Sequential", [1, 64, 112, 112]), ("Sequential", [1, 128, 56, 56]), ("Sequential", [1, 256, 28, 28]),
        ("Sequential", [1, 512, 14, 14]), ("Sequential", [1, 512, 7, 7]), ("Flatten", [1, 25088]),
        ("Linear", [1, 4096]), ("ReLU", [1, 4096]), ("Dropout", [1, 4096]),
        ("Linear", [1, 4096]), ("ReLU", [1, 4096]), ("Dropout", [1, 4096]), ("Linear", [1, 10]),
    ])


@needs_real_data
def test_8_2_3_vgg_training(capsys):
    model = VGG(arch=((1, 16), (1, 32), (2, 64), (2, 128), (2, 128)), lr=0.01)
    trainer = d2l.Trainer(max_epochs=1, num_gpus=1, limit_train_batches=2, limit_val_batches=1)
    data = d2l.FashionMNIST(batch_size=128, resize=(32, 32))  # the book's 224 -> 32, VGG's smallest input
    model.apply_init([next(iter(data.get_dataloader(True)))[0]], d2l.init_cnn)
    trainer.fit(model, data)
    assert_epoch_lines(capsys.readouterr().out, 1)
    assert all(math.isfinite(p.y) for line in model.board.data.values() for p in line)


# ---------------------------------------------------------------------------------------------------------------
# 8.6 ResNet

class Residual(nn.Module):
    def __init__(self, num_channels, use_1x1conv=False, strides=1):
        super().__init__()
        self.conv1 = nn.LazyConv2d(num_channels, kernel_size=3, padding=1,
                                   stride=strides)
        self.conv2 = nn.LazyConv2d(num_channels, kernel_size=3, padding=1)
        if use_1x1conv:
            self.conv3 = nn.LazyConv2d(num_channels, kernel_size=1,
                                       stride=strides)
        else:
            self.conv3 = None
        self.bn1 = nn.LazyBatchNorm2d()
        self.bn2 = nn.LazyBatchNorm2d()

    def forward(self, X):
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.conv3:
            X = self.conv3(X)
        Y += X
        return F.relu(Y)


def test_8_6_2_residual_shapes():
    blk = Residual(3)
    X = torch.randn(4, 3, 6, 6)
    assert blk(X).shape == torch.Size([4, 3, 6, 6])
    blk = Residual(6, use_1x1conv=True, strides=2)
    assert blk(X).shape == torch.Size([4, 6, 3, 3])


class ResNet(d2l.Classifier):
    def b1(self):
        return nn.Sequential(
            nn.LazyConv2d(64, kernel_size=7, stride=2, padding=3),
            nn.LazyBatchNorm2d(), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1))


@d2l.add_to_class(ResNet)
def block(self, num_residuals, num_channels, first_block=False):
    blk = []
    for i in range(num_residuals):
        if i == 0 and not first_block:
            blk.append(Residual(num_channels, use_1x1conv=True, strides=2))
        else:
            blk.append(Residual(num_channels))
    return nn.Sequential(*blk)


@d2l.add_to_class(ResNet)
def __init__(self, arch, lr=0.1, num_classes=10):
    super(ResNet, self).__init__()
    self.save_hyperparameters()
    self.net = nn.Sequential(self.b1())
    for i, b in enumerate(arch):
        self.net.add_module(f'b{i+2}', self.block(*b, first_block=(i==0)))
    self.net.add_module('last', nn.Sequential(
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
        nn.LazyLinear(num_classes)))
    self.net.apply(d2l.init_cnn)


class ResNet18(ResNet):
    def __init__(self, lr=0.1, num_classes=10):
        super().__init__(((2, 64), (2, 128), (2, 256), (2, 512)),
                         lr, num_classes)


def test_8_6_3_resnet18_layer_summary(capsys):
    ResNet18().layer_summary((1, 1, 96, 96))
    assert capsys.readouterr().out.splitlines() == summary_lines([
        ("Sequential", [1, 64, 24, 24]), ("Sequential", [1, 64, 24, 24]), ("Sequential", [1, 128, 12, 12]),
        ("Sequential", [1, 256, 6, 6]), ("Sequential", [1, 512, 3, 3]), ("Sequential", [1, 10]),
    ])
    model = ResNet18(lr=0.01)
    assert model.hparams == {"arch": ((2, 64), (2, 128), (2, 256), (2, 512)), "lr": 0.01, "num_classes": 10}
    assert [name for name, _ in model.net.named_children()] == ["0", "b2", "b3", "b4", "b5", "last"]


@needs_real_data
def test_8_6_4_resnet_training(capsys):
    model = ResNet18(lr=0.01)
    trainer = d2l.Trainer(max_epochs=1, num_gpus=1, limit_train_batches=1, limit_val_batches=1)
    data = d2l.FashionMNIST(batch_size=128, resize=(32, 32))  # the book's 96 -> 32 (stride 32 down to 1 x 1)
    model.apply_init([next(iter(data.get_dataloader(True)))[0]], d2l.init_cnn)
    trainer.fit(model, data)
    assert_epoch_lines(capsys.readouterr().out, 1)
    assert trainer.train_batch_idx == 1 and trainer.val_batch_idx == 1
    assert all(math.isfinite(p.y) for line in model.board.data.values() for p in line)
