"""The function-style API of d2l-zh v2 (chapters 3-7 of the Chinese edition), run as notebook cells.

Each test is one section: its cells (this suite's own code, calling every name the way the chapter does) run in
one namespace through ``run_cells``. Training cells keep the book's calls; a loader gets ``limit_batches`` (a
DeviceLoader attribute the book's DataLoader lacks) so each runs a few batches. Asserted are what the cells show
that does not depend on training (shapes, printed formats), and, with torch as the oracle, that the loops compute
what the book's loops compute.
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

from cnnlab import d2l
from d2l_support import needs_real_data, run_cells

HEADER = """
from cnnlab import d2l
import torch
from torch import nn
"""


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def test_linear_regression_from_scratch_and_concise(capsys):
    ns = run_cells([HEADER, """
    true_w = d2l.tensor([2, -3.4])
    true_b = 4.2
    features, labels = d2l.synthetic_data(true_w, true_b, 1000)
    """, """
    def data_iter(batch_size, features, labels):  # the chapter's own reader, in order here
        for i in range(0, len(features), batch_size):
            yield features[i:i + batch_size], labels[i:i + batch_size]
    w = torch.normal(0, 0.01, size=(2, 1), requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    lr, num_epochs, batch_size = 0.03, 3, 10
    net, loss = d2l.linreg, d2l.squared_loss
    for epoch in range(num_epochs):
        for X, y in data_iter(batch_size, features, labels):
            l = loss(net(X, w, b), y)
            l.sum().backward()
            d2l.sgd([w, b], lr, batch_size)
        with torch.no_grad():
            print(f'epoch {epoch + 1}, loss {float(loss(net(features, w, b), labels).mean()):f}')
    """, """
    data_iter = d2l.load_array((features, labels), 10)
    next(iter(data_iter))
    """, """
    net = nn.Sequential(nn.Linear(2, 1))
    net[0].weight.data.normal_(0, 0.01)
    net[0].bias.data.fill_(0)
    mse = nn.MSELoss()
    trainer = torch.optim.SGD(net.parameters(), lr=0.03)
    for epoch in range(3):
        for X, y in data_iter:
            l = mse(net(X), y)
            trainer.zero_grad()
            l.backward()
            trainer.step()
    """])
    features, labels = ns["features"], ns["labels"]
    assert features.shape == (1000, 2) and labels.shape == (1000, 1)
    residual = labels - (features @ ns["true_w"].reshape(-1, 1) + ns["true_b"])
    assert 0.005 < residual.std() < 0.02  # the N(0, 0.01^2) noise, nothing else
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == ["epoch 1", "epoch 2", "epoch 3"]
    assert float(lines[-1].split()[-1]) < 1e-3
    assert torch.allclose(ns["w"].reshape(-1), ns["true_w"], atol=0.02)  # sgd did its job
    X, y = ns["Out"][3]
    assert X.shape == (10, 2) and y.shape == (10, 1)
    assert torch.allclose(ns["net"][0].weight.reshape(-1), ns["true_w"], atol=0.02)
    assert abs(ns["net"][0].bias.item() - 4.2) < 0.02


def test_load_array_is_a_shuffled_minibatch_loader():
    X, y = torch.arange(10.0).reshape(5, 2), torch.arange(5)
    train, test = d2l.load_array((X, y), 2), d2l.load_array((X, y), 2, is_train=False)
    assert len(train) == 3 and len(train.dataset) == 5 and [len(b[1]) for b in test] == [2, 2, 1]
    assert torch.equal(torch.cat([b[1] for b in test]), y)
    torch.manual_seed(0)
    order = torch.cat([b[1] for b in train])
    torch.manual_seed(0)
    assert torch.equal(order, torch.randperm(5))  # a DataLoader's RandomSampler: torch's global generator
    assert torch.equal(torch.cat([b[0] for b in train]).sort(0).values, X)


def test_squared_loss_sgd_and_accuracy_against_torch():
    y_hat, y = torch.tensor([[1.0], [3.0]]), torch.tensor([2.0, 1.0])
    assert torch.equal(d2l.squared_loss(y_hat, y), torch.tensor([[0.5], [2.0]]))
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    (w * torch.tensor([3.0, 4.0])).sum().backward()
    d2l.sgd([w], lr=0.5, batch_size=2)
    assert torch.equal(w.detach(), torch.tensor([0.25, 1.0])) and torch.equal(w.grad, torch.zeros(2))
    scores = torch.tensor([[0.1, 0.3, 0.6], [0.3, 0.2, 0.5], [0.9, 0.05, 0.05]])
    labels = torch.tensor([2, 1, 0])
    assert d2l.accuracy(scores, labels) == 2.0 and type(d2l.accuracy(scores, labels)) is float
    assert d2l.accuracy(torch.tensor([2, 2, 0]), labels) == 2.0  # already labels: no arg-max


def test_timer_accumulator_and_benchmark(capsys):
    timer = d2l.Timer()
    first = timer.stop()
    timer.start()
    second = timer.stop()
    assert timer.times == [first, second] and timer.sum() == pytest.approx(first + second)
    assert timer.avg() == pytest.approx((first + second) / 2) and timer.cumsum()[-1] == pytest.approx(timer.sum())
    metric = d2l.Accumulator(2)
    metric.add(1, torch.tensor(2.5))
    metric.add(2, 0.5)
    assert metric[0] == 3.0 and metric[1] == 3.0 and metric[:] == [3.0, 3.0]
    metric.reset()
    assert metric.data == [0.0, 0.0]
    with d2l.Benchmark("matmul"):
        torch.ones(8, 8) @ torch.ones(8, 8)
    assert re.fullmatch(r"matmul: \d+\.\d{4} sec\n", capsys.readouterr().out)


def test_animator_prints_one_line_per_epoch_outside_a_notebook(capsys):
    animator = d2l.Animator(xlabel="epoch", xlim=[1, 2], legend=["train loss", "train acc", "test acc"])
    lines = []
    for epoch in range(2):
        for i in range(5):  # train_ch6's pattern: fractional points, then the test accuracy at the epoch's end
            animator.add(epoch + (i + 1) / 5, (1.0 / (epoch + 1), 0.5 + epoch / 10, None))
        assert capsys.readouterr().out == ""  # the epoch's line waits for its test accuracy
        animator.add(epoch + 1, (None, None, torch.tensor(0.25 * (epoch + 1))))
        lines += capsys.readouterr().out.splitlines()
    assert lines == ["epoch 1: train loss 1, train acc 0.5, test acc 0.25",
                     "epoch 2: train loss 0.5, train acc 0.6, test acc 0.5"]
    assert animator.Y[2] == [0.25, 0.5] and len(animator.X[0]) == 10
    fig = animator.fig
    assert [len(line.get_xdata()) for line in fig.axes[0].get_lines()] == [10, 10, 2]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["train loss", "train acc", "test acc"]
    every_fifth = d2l.Animator(xlabel="epochs", legend=["train", "test"])
    every_fifth.add(5, (0.1, 0.2))
    single = d2l.Animator(xlabel="epoch", ylabel="loss")
    single.add(1.5, 3.0)  # not a whole epoch: no line until a later one
    single.add(2, 2.0)
    assert capsys.readouterr().out.splitlines() == ["epochs 5: train 0.1, test 0.2", "epoch 2: loss 2"]


def test_animator_in_a_notebook_redraws_one_display(monkeypatch):
    import cnnlab.d2l.animator as animator_module

    shown = []
    monkeypatch.setattr(animator_module, "in_notebook", lambda: True)
    monkeypatch.setattr(animator_module, "show_in_place", lambda fig, handle: shown.append((fig, handle)) or "h")
    animator = d2l.Animator(legend=["a"])
    animator.add(1, 0.5)
    animator.add(2, 0.25)
    assert shown == [(animator.fig, None), (animator.fig, "h")]  # the same figure, updated in place


# --- with Fashion-MNIST -----------------------------------------------------------------------------------------


def _limit(*loaders, batches):
    for loader in loaders:
        loader.limit_batches = batches


@needs_real_data
def test_image_classification_dataset_cells(capsys):
    ns = run_cells([HEADER, """
    train_iter, test_iter = d2l.load_data_fashion_mnist(32, resize=64)
    for X, y in train_iter:
        print(X.shape, X.dtype, y.shape, y.dtype)
        break
    """, """
    len(train_iter.dataset), len(test_iter.dataset), len(train_iter), len(test_iter)
    """, """
    timer = d2l.Timer()
    for X, y in test_iter:
        continue
    f'{timer.stop():.2f} sec'
    """, """
    X, y = next(iter(d2l.load_data_fashion_mnist(18)[1]))
    axes = d2l.show_images(X.reshape(18, 28, 28), 2, 9, titles=d2l.get_fashion_mnist_labels(y))
    """, """
    d2l.get_dataloader_workers()
    """])
    assert capsys.readouterr().out == "torch.Size([32, 1, 64, 64]) torch.float32 torch.Size([32]) torch.int64\n"
    assert ns["Out"][2] == (60000, 10000, 1875, 313)
    assert re.fullmatch(r"\d+\.\d\d sec", ns["Out"][3])
    assert [ax.get_title() for ax in ns["axes"][:3]] == ["ankle boot", "pullover", "trouser"]
    assert ns["Out"][5] == 4
    image, label = ns["train_iter"].dataset[0]
    assert image.shape == (1, 64, 64) and label == 9


SOFTMAX_SCRATCH = [HEADER, """
batch_size = 256
train_iter, test_iter = d2l.load_data_fashion_mnist(batch_size)
""", "LIMIT", """
num_inputs, num_outputs = 784, 10
W = torch.normal(0, 0.01, size=(num_inputs, num_outputs), requires_grad=True)
b = torch.zeros(num_outputs, requires_grad=True)
def softmax(X):
    X_exp = d2l.exp(X)
    return X_exp / d2l.reduce_sum(X_exp, 1, keepdim=True)
def net(X):
    return softmax(d2l.matmul(d2l.reshape(X, (-1, W.shape[0])), W) + b)
def cross_entropy(y_hat, y):
    return - d2l.log(y_hat[range(len(y_hat)), y])
""", """
d2l.evaluate_accuracy(net, test_iter)
""", """
lr = 0.1
def updater(batch_size):
    return d2l.sgd([W, b], lr, batch_size)
num_epochs = 2
d2l.train_ch3(net, train_iter, test_iter, cross_entropy, num_epochs, updater)
""", """
d2l.predict_ch3(net, test_iter)
"""]


@needs_real_data
def test_softmax_regression_from_scratch_cells(capsys):
    cells = [c if c != "LIMIT" else "train_iter.limit_batches = test_iter.limit_batches = 3" for c in SOFTMAX_SCRATCH]
    ns = run_cells(cells)
    assert 0.0 <= ns["Out"][4] <= 1.0 and abs(ns["Out"][4] - 0.1) < 0.1  # untrained: near chance
    lines = capsys.readouterr().out.splitlines()
    pattern = r"epoch {}: train loss [\d.]+, train acc [\d.]+, test acc [\d.]+"
    assert len(lines) == 2 and all(re.fullmatch(pattern.format(e), line) for e, line in zip((1, 2), lines, strict=True))
    # the loop's figures, recomputed by hand with torch over the same 3 test batches
    W, b, test_iter = ns["W"], ns["b"], ns["test_iter"]
    right = sum(int((ns["net"](X).argmax(1) == y).sum()) for X, y in test_iter)
    assert float(lines[-1].split()[-1]) == pytest.approx(right / 768, abs=5e-4)
    assert W.grad is not None and not torch.equal(W, torch.zeros_like(W)) and b.abs().sum() > 0


@needs_real_data
def test_train_epoch_ch3_matches_a_plain_torch_loop():
    train_iter, _ = d2l.load_data_fashion_mnist(64)
    same_iter, _ = d2l.load_data_fashion_mnist(64)
    _limit(train_iter, same_iter, batches=4)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    ref = copy.deepcopy(net)
    loss = nn.CrossEntropyLoss(reduction="none")
    torch.manual_seed(1)  # the same seed before each pass: the same shuffle, as with DataLoaders
    train_l, train_acc = d2l.train_epoch_ch3(net, train_iter, loss, torch.optim.SGD(net.parameters(), lr=0.1))
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    total = right = count = 0.0
    torch.manual_seed(1)
    for X, y in same_iter:
        out = ref(X)
        l = loss(out, y)
        opt.zero_grad()
        l.mean().backward()
        opt.step()
        total, right, count = total + float(l.detach().sum()), right + float((out.argmax(1) == y).sum()), count + len(y)
    assert train_l == pytest.approx(total / count, rel=1e-5) and train_acc == pytest.approx(right / count)
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p, q)


LENET = """
net = nn.Sequential(
    nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(),
    nn.AvgPool2d(kernel_size=2, stride=2),
    nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(),
    nn.AvgPool2d(kernel_size=2, stride=2),
    nn.Flatten(),
    nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(),
    nn.Linear(120, 84), nn.Sigmoid(),
    nn.Linear(84, 10))
"""


@needs_real_data
def test_lenet_train_ch6_prints_the_books_lines_and_trains_as_torch_does(capsys):
    torch.manual_seed(3)
    ns = run_cells([HEADER, LENET, """
    batch_size = 256
    train_iter, test_iter = d2l.load_data_fashion_mnist(batch_size=batch_size)
    train_iter.limit_batches, test_iter.limit_batches = 6, 2
    X = torch.rand(size=(1, 1, 28, 28), dtype=torch.float32)
    for layer in net:
        X = layer(X)
        print(layer.__class__.__name__, 'output shape: \\t', X.shape)
    """, """
    lr, num_epochs = 0.9, 2
    d2l.train_ch6(net, train_iter, test_iter, num_epochs, lr, d2l.try_gpu())
    """])
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["Conv2d output shape: \t torch.Size([1, 6, 28, 28])",
                       "Sigmoid output shape: \t torch.Size([1, 6, 28, 28])"]
    assert out[11] == "Linear output shape: \t torch.Size([1, 10])"
    assert out[12] == f"training on {d2l.try_gpu()}"  # the book trains on its first GPU
    assert re.fullmatch(r"epoch 1: train loss [\d.]+, train acc [\d.]+, test acc [\d.]+", out[13])
    assert re.fullmatch(r"loss \d\.\d{3}, train acc \d\.\d{3}, test acc \d\.\d{3}", out[15])
    assert re.fullmatch(rf"\d+\.\d examples/sec on {d2l.try_gpu()}", out[16]) and len(out) == 17
    net = ns["net"]
    assert all(p.is_contiguous() for p in net.parameters())  # handed back in the default layout
    test_acc = d2l.evaluate_accuracy_gpu(net, ns["test_iter"])
    assert f"test acc {test_acc:.3f}" in out[15]


@needs_real_data
def test_train_ch6_equals_the_books_loop_step_for_step():
    def book_loop(net, train_iter, lr):  # d2l's train_ch6 body for one epoch, float per step and all
        optimizer, loss = torch.optim.SGD(net.parameters(), lr=lr), nn.CrossEntropyLoss()
        metric = d2l.Accumulator(3)
        for X, y in train_iter:
            optimizer.zero_grad()
            y_hat = net(X)
            l = loss(y_hat, y)
            l.backward()
            optimizer.step()
            with torch.no_grad():
                metric.add(l * X.shape[0], d2l.accuracy(y_hat, y), X.shape[0])
        return metric[0] / metric[2], metric[1] / metric[2]

    loaders = []
    for _ in range(2):
        torch.manual_seed(7)
        loaders.append(d2l.load_data_fashion_mnist(128))
        _limit(*loaders[-1], batches=3)
    torch.manual_seed(0)
    net = run_cells([HEADER, LENET])["net"]
    ref = copy.deepcopy(net)
    torch.manual_seed(11)
    d2l.train_ch6(net, *loaders[0], 1, 0.9, torch.device("cpu"))
    torch.manual_seed(11)
    ref.apply(lambda m: nn.init.xavier_uniform_(m.weight) if type(m) in (nn.Linear, nn.Conv2d) else None)
    book_loop(ref, loaders[1][0], 0.9)
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5)  # channels-last kernels round differently, nothing more


@needs_real_data
def test_batch_norm_from_scratch_in_a_function_style_net(capsys):
    ns = run_cells([HEADER, """
    def batch_norm(X, gamma, beta, moving_mean, moving_var, eps, momentum):
        if not torch.is_grad_enabled():
            X_hat = (X - moving_mean) / torch.sqrt(moving_var + eps)
        else:
            dims = (0,) if len(X.shape) == 2 else (0, 2, 3)
            mean = X.mean(dim=dims, keepdim=True)
            var = ((X - mean) ** 2).mean(dim=dims, keepdim=True)
            X_hat = (X - mean) / torch.sqrt(var + eps)
            moving_mean = momentum * moving_mean + (1.0 - momentum) * mean
            moving_var = momentum * moving_var + (1.0 - momentum) * var
        return gamma * X_hat + beta, moving_mean.data, moving_var.data
    class BatchNorm(nn.Module):
        def __init__(self, num_features, num_dims):
            super().__init__()
            shape = (1, num_features) if num_dims == 2 else (1, num_features, 1, 1)
            self.gamma, self.beta = nn.Parameter(torch.ones(shape)), nn.Parameter(torch.zeros(shape))
            self.moving_mean, self.moving_var = torch.zeros(shape), torch.ones(shape)
        def forward(self, X):
            Y, self.moving_mean, self.moving_var = batch_norm(
                X, self.gamma, self.beta, self.moving_mean.to(X.device), self.moving_var.to(X.device),
                eps=1e-5, momentum=0.9)
            return Y
    net = nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5), BatchNorm(6, num_dims=4), nn.Sigmoid(), nn.AvgPool2d(2, 2),
        nn.Conv2d(6, 16, kernel_size=5), BatchNorm(16, num_dims=4), nn.Sigmoid(), nn.AvgPool2d(2, 2),
        nn.Flatten(), nn.Linear(256, 120), BatchNorm(120, num_dims=2), nn.Sigmoid(),
        nn.Linear(120, 84), BatchNorm(84, num_dims=2), nn.Sigmoid(), nn.Linear(84, 10))
    lr, num_epochs, batch_size = 1.0, 1, 256
    train_iter, test_iter = d2l.load_data_fashion_mnist(batch_size)
    train_iter.limit_batches = test_iter.limit_batches = 2
    d2l.train_ch6(net, train_iter, test_iter, num_epochs, lr, d2l.try_gpu())
    """, """
    net[1].gamma.reshape((-1,)), net[1].beta.reshape((-1,))
    """])
    gamma, beta = ns["_"]
    assert gamma.shape == beta.shape == (6,) and not torch.equal(gamma.cpu(), torch.ones(6))  # it learned
    assert capsys.readouterr().out.splitlines()[0] == f"training on {d2l.try_gpu()}"


# The Chinese edition's own Residual (7.6.1), the oracle for d2l.Residual's Chinese form below.
ZH_RESIDUAL = """
    class Residual(nn.Module):
        def __init__(self, input_channels, num_channels, use_1x1conv=False, strides=1):
            super().__init__()
            self.conv1 = nn.Conv2d(input_channels, num_channels, kernel_size=3, padding=1, stride=strides)
            self.conv2 = nn.Conv2d(num_channels, num_channels, kernel_size=3, padding=1)
            self.conv3 = (nn.Conv2d(input_channels, num_channels, kernel_size=1, stride=strides)
                          if use_1x1conv else None)
            self.bn1, self.bn2 = nn.BatchNorm2d(num_channels), nn.BatchNorm2d(num_channels)
        def forward(self, X):
            Y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(X)))))
            return torch.relu(Y + (self.conv3(X) if self.conv3 else X))
"""

MODERN = {
    "resnet": ZH_RESIDUAL + """
    b1 = nn.Sequential(nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3), nn.BatchNorm2d(64), nn.ReLU(),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    def resnet_block(input_channels, num_channels, num_residuals, first_block=False):
        return [Residual(input_channels, num_channels, use_1x1conv=True, strides=2) if i == 0 and not first_block
                else Residual(num_channels, num_channels) for i in range(num_residuals)]
    net = nn.Sequential(b1, nn.Sequential(*resnet_block(64, 64, 2, first_block=True)),
                        nn.Sequential(*resnet_block(64, 128, 2)), nn.AdaptiveAvgPool2d((1, 1)),
                        nn.Flatten(), nn.Linear(128, 10))
    lr, num_epochs, batch_size = 0.05, 1, 16
    train_iter, test_iter = d2l.load_data_fashion_mnist(batch_size, resize=96)
    """,
    "nin": """
    def nin_block(in_channels, out_channels, kernel_size, strides, padding):
        return nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size, strides, padding), nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU())
    net = nn.Sequential(
        nin_block(1, 96, kernel_size=11, strides=4, padding=0), nn.MaxPool2d(3, stride=2),
        nin_block(96, 256, kernel_size=5, strides=1, padding=2), nn.MaxPool2d(3, stride=2),
        nin_block(256, 384, kernel_size=3, strides=1, padding=1), nn.MaxPool2d(3, stride=2), nn.Dropout(0.5),
        nin_block(384, 10, kernel_size=3, strides=1, padding=1), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten())
    lr, num_epochs, batch_size = 0.1, 1, 4
    train_iter, test_iter = d2l.load_data_fashion_mnist(batch_size, resize=224)
    """,
}


def test_residual_takes_the_chinese_signature_with_ordinary_layers():
    # d2l-zh saves its Residual(input_channels, num_channels, ...) into d2l (7.6.1) and its multi-GPU chapter
    # builds ResNet-18 from it, initialising the convs before any forward.
    ns = run_cells([HEADER, ZH_RESIDUAL, """
    def resnet_block(in_channels, out_channels, num_residuals, first_block=False):
        blk = []
        for i in range(num_residuals):
            if i == 0 and not first_block:
                blk.append(d2l.Residual(in_channels, out_channels, use_1x1conv=True, strides=2))
            else:
                blk.append(d2l.Residual(out_channels, out_channels))
        return nn.Sequential(*blk)
    net = nn.Sequential(resnet_block(3, 3, 2, first_block=True), resnet_block(3, 6, 2))
    def init_weights(m):
        if type(m) in [nn.Linear, nn.Conv2d]:
            nn.init.normal_(m.weight, std=0.01)
    net.apply(init_weights)
    X = torch.rand(4, 3, 6, 6)
    net(X).shape
    """])
    assert ns["_"] == (4, 6, 3, 3)
    convs = [m for m in ns["net"].modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 9 and all(float(c.weight.detach().std()) < 0.02 for c in convs)  # the book's init reached them
    for args, kwargs in [((3, 3), {}), ((3, 6), {"use_1x1conv": True, "strides": 2}),
                         ((), {"input_channels": 3, "num_channels": 6, "use_1x1conv": True})]:
        torch.manual_seed(1)
        ours = d2l.Residual(*args, **kwargs)
        torch.manual_seed(1)
        book = ns["Residual"](*args, **kwargs)
        assert ours.state_dict().keys() == book.state_dict().keys()
        for name, value in book.state_dict().items():
            assert torch.equal(ours.state_dict()[name], value), name
        torch.testing.assert_close(ours(ns["X"]), book(ns["X"]), rtol=0, atol=0)
    assert d2l.Residual(6, use_1x1conv=True, strides=2)(ns["X"]).shape == (4, 6, 3, 3)  # the English form


@needs_real_data
@pytest.mark.slow
@pytest.mark.parametrize("chapter", sorted(MODERN))
def test_modern_cnn_cells_train_with_train_ch6(chapter, capsys):
    ns = run_cells([HEADER, MODERN[chapter], """
    train_iter.limit_batches = test_iter.limit_batches = 1
    d2l.train_ch6(net, train_iter, test_iter, num_epochs, lr, d2l.try_gpu())
    """])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"training on {d2l.try_gpu()}" and out[1].startswith("epoch 1: train loss ")
    assert next(iter(ns["test_iter"]))[0].shape[-1] == (96 if chapter == "resnet" else 224)


def test_evaluate_loss_and_the_polynomial_fit_cells(capsys):
    ns = run_cells([HEADER, """
    import math
    import numpy as np
    max_degree, n_train, n_test = 20, 100, 100
    true_w = np.zeros(max_degree)
    true_w[0:4] = np.array([5, 1.2, -3.4, 5.6])
    features = np.random.default_rng(0).normal(size=(n_train + n_test, 1))
    poly_features = np.power(features, np.arange(max_degree).reshape(1, -1))
    for i in range(max_degree):
        poly_features[:, i] /= math.gamma(i + 1)
    labels = np.dot(poly_features, true_w)
    true_w, features, poly_features, labels = [d2l.tensor(x, dtype=d2l.float32)
                                               for x in [true_w, features, poly_features, labels]]
    """, """
    def train(train_features, test_features, train_labels, test_labels, num_epochs=40):
        loss = nn.MSELoss(reduction='none')
        net = nn.Sequential(nn.Linear(train_features.shape[-1], 1, bias=False))
        batch_size = min(10, train_labels.shape[0])
        train_iter = d2l.load_array((train_features, train_labels.reshape(-1, 1)), batch_size)
        test_iter = d2l.load_array((test_features, test_labels.reshape(-1, 1)), batch_size, is_train=False)
        trainer = torch.optim.SGD(net.parameters(), lr=0.01)
        animator = d2l.Animator(xlabel='epoch', ylabel='loss', yscale='log', xlim=[1, num_epochs],
                                ylim=[1e-3, 1e2], legend=['train', 'test'])
        for epoch in range(num_epochs):
            d2l.train_epoch_ch3(net, train_iter, loss, trainer)
            if epoch == 0 or (epoch + 1) % 20 == 0:
                animator.add(epoch + 1, (d2l.evaluate_loss(net, train_iter, loss),
                                         d2l.evaluate_loss(net, test_iter, loss)))
        print('weight:', net[0].weight.data.numpy())
        return net, test_iter, loss
    net, test_iter, loss = train(poly_features[:n_train, :4], poly_features[n_train:, :4],
                                 labels[:n_train], labels[n_train:])
    """])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1", "epoch 20", "epoch 40", "weight"]
    net, test_iter, loss = ns["net"], ns["test_iter"], ns["loss"]
    X, y = test_iter.dataset.tensors
    assert d2l.evaluate_loss(net, test_iter, loss) == pytest.approx(float(loss(net(X), y).detach().mean()), rel=1e-5)
    assert float(lines[2].split("test ")[1]) == pytest.approx(d2l.evaluate_loss(net, test_iter, loss), rel=1e-3)


def test_weight_decay_cells_with_the_function_style_helpers(capsys):
    run_cells([HEADER, """
    n_train, n_test, num_inputs, batch_size = 20, 100, 200, 5
    true_w, true_b = d2l.ones((num_inputs, 1)) * 0.01, 0.05
    train_iter = d2l.load_array(d2l.synthetic_data(true_w, true_b, n_train), batch_size)
    test_iter = d2l.load_array(d2l.synthetic_data(true_w, true_b, n_test), batch_size, is_train=False)
    def train(lambd):
        w = torch.normal(0, 1, size=(num_inputs, 1), requires_grad=True)
        b = torch.zeros(1, requires_grad=True)
        net, loss = lambda X: d2l.linreg(X, w, b), d2l.squared_loss
        animator = d2l.Animator(xlabel='epochs', ylabel='loss', yscale='log', xlim=[5, 10], legend=['train', 'test'])
        for epoch in range(10):
            for X, y in train_iter:
                l = loss(net(X), y) + lambd * torch.sum(w.pow(2)) / 2
                l.sum().backward()
                d2l.sgd([w, b], 0.003, batch_size)
            if (epoch + 1) % 5 == 0:
                animator.add(epoch + 1, (d2l.evaluate_loss(net, train_iter, loss),
                                         d2l.evaluate_loss(net, test_iter, loss)))
        print('L2 norm of w:', torch.norm(w).item())
    train(lambd=3)
    """])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["epochs 5", "epochs 10", "L2 norm of w"]


def test_resnet18_is_d2l_1_0_3s(capsys):
    net = d2l.resnet18(10, in_channels=3)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    # What d2l 1.0.3's resnet18(10, 3) and resnet18(10) count once materialised (run in its own venv).
    assert sum(p.numel() for p in net.parameters()) == 11_176_970
    gray = d2l.resnet18(10)
    gray(torch.rand(1, 1, 28, 28))
    assert sum(p.numel() for p in gray.parameters()) == 11_175_818
    assert [name for name, _ in net.named_children()] == [
        "0", "1", "2", "resnet_block1", "resnet_block2", "resnet_block3", "resnet_block4", "global_avg_pool", "fc"]


def test_split_batch_and_train_ch13(capsys):
    X, y = torch.arange(12.0).reshape(6, 2), torch.arange(6)
    parts_X, parts_y = d2l.split_batch(X, y, [torch.device("cpu")] * 2)
    assert [p.tolist() for p in parts_y] == [[0, 1, 2], [3, 4, 5]] and torch.equal(torch.cat(parts_X), X)
    torch.manual_seed(0)
    features = torch.randn(64, 1, 8, 8)
    labels = (features.mean(dim=(1, 2, 3)) > 0).long()
    train_iter = d2l.load_array((features, labels), 16)
    test_iter = d2l.load_array((features, labels), 16, is_train=False)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2))
    loss = nn.CrossEntropyLoss(reduction="none")
    d2l.train_ch13(net, train_iter, test_iter, loss, torch.optim.SGD(net.parameters(), lr=0.1), 2,
                   d2l.try_all_gpus())
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out[:2]] == ["epoch 1", "epoch 2"]
    assert re.fullmatch(r"loss [\d.]+, train acc [\d.]+, test acc [\d.]+", out[2])
    assert re.fullmatch(rf"[\d.]+ examples/sec on {re.escape(str(d2l.try_all_gpus()))}", out[3])


def test_empty_loaders_raise_one_line_errors():
    from cnnlab.errors import CnnlabError

    empty = d2l.load_array((torch.zeros(0, 2), torch.zeros(0)), 4)
    with pytest.raises(CnnlabError, match="empty"):
        d2l.train_ch6(nn.Linear(2, 2), empty, empty, 1, 0.1, "cpu")
    with pytest.raises(CnnlabError, match="empty"):
        d2l.train_epoch_ch3(nn.Linear(2, 2), empty, nn.MSELoss(), torch.optim.SGD(nn.Linear(2, 2).parameters(), 1))


def test_convolution_chapter_cells_on_the_tensor_names(capsys):
    ns = run_cells([HEADER, """
    def corr2d_multi_in(X, K):
        return sum(d2l.corr2d(x, k) for x, k in zip(X, K))
    def corr2d_multi_in_out(X, K):
        return d2l.stack([corr2d_multi_in(X, k) for k in K], 0)
    def corr2d_multi_in_out_1x1(X, K):
        c_i, h, w = X.shape
        Y = d2l.matmul(d2l.reshape(K, (K.shape[0], c_i)), d2l.reshape(X, (c_i, h * w)))
        return d2l.reshape(Y, (K.shape[0], h, w))
    X = d2l.tensor([[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]],
                    [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]])
    K = d2l.tensor([[[0.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]]])
    corr2d_multi_in(X, K)
    """, """
    K = d2l.stack((K, K + 1, K + 2), 0)
    corr2d_multi_in_out(X, K).shape
    """, """
    X = d2l.normal(0, 1, (3, 3, 3))
    K = d2l.normal(0, 1, (2, 3, 1, 1))
    assert float(d2l.reduce_sum(d2l.abs(corr2d_multi_in_out_1x1(X, K) - corr2d_multi_in_out(X, K)))) < 1e-5
    """, """
    X = d2l.ones((6, 8))
    X[:, 2:6] = 0
    d2l.corr2d(d2l.transpose(X), d2l.tensor([[1.0, -1.0]]))
    """, """
    X = d2l.reshape(d2l.arange(16, dtype=d2l.float32), (1, 1, 4, 4))
    X = d2l.concat((X, X + 1), 1)
    nn.MaxPool2d(3, padding=1, stride=2)(X).shape
    """])
    assert torch.equal(ns["Out"][1], torch.tensor([[56.0, 72.0], [104.0, 120.0]]))  # the book's printed values
    assert ns["Out"][2] == (3, 2, 2) and torch.equal(ns["Out"][4], torch.zeros(8, 5))
    assert ns["Out"][5] == (1, 2, 2, 2)


@needs_real_data
@pytest.mark.slow
def test_the_train_ch6_benchmark_program_runs(tmp_path):
    """benchmarks/d2l_train_ch6.py on cnnlab.d2l for two batches (its figures are docs/benchmarks.md's)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "d2l_train_ch6.py"
    out = tmp_path / "ch6.json"
    subprocess.run([sys.executable, str(script), "--d2l", "cnnlab", "--epochs", "1", "--limit", "2",
                    "--workdir", str(tmp_path / "work"), "--json-out", str(out)], check=True, capture_output=True)
    result = json.loads(out.read_text())
    assert result["train_images"] == 512 and result["test_samples"] == 512 and 0 <= result["test_acc"] <= 1
    assert result["printed"][0].startswith("loss ")
    assert result["printed"][1].endswith(f"examples/sec on {d2l.try_gpu()}")


def test_train_batch_ch13_is_one_sgd_step_with_summed_loss():
    torch.manual_seed(0)
    net, X, y = nn.Linear(3, 2), torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])
    ref = copy.deepcopy(net)
    loss = nn.CrossEntropyLoss(reduction="none")
    l, right = d2l.train_batch_ch13(net, X, y, loss, torch.optim.SGD(net.parameters(), lr=0.1), [torch.device("cpu")])
    out = ref(X)
    loss(out, y).sum().backward()
    with torch.no_grad():
        for p in ref.parameters():
            p -= 0.1 * p.grad
    assert torch.allclose(l, loss(out, y).sum()) and int(right) == int((out.argmax(1) == y).sum())
    assert all(torch.allclose(p, q) for p, q in zip(net.parameters(), ref.parameters(), strict=True))


@needs_real_data
def test_book_loaders_move_to_a_device_whole_and_other_loaders_stay():
    from cnnlab.d2l.data import on_device

    train_iter, test_iter = d2l.load_data_fashion_mnist(64)
    assert on_device(train_iter, torch.device("cpu")) is train_iter  # already there: no copy
    other = d2l.load_array((torch.zeros(4, 2), torch.zeros(4)), 2)
    assert on_device(other, torch.device("cpu")) is other  # not ours: the loops move its batches
    torch.manual_seed(0)
    first = next(iter(train_iter))[1]
    moved = on_device(train_iter, torch.device("cpu", 0))  # another device, as far as the loader can tell
    assert moved is not train_iter and moved.device == torch.device("cpu", 0)
    assert moved.dataset is train_iter.dataset and len(moved) == len(train_iter) == 938
    second = next(iter(moved))[1]  # a pass of its own, from torch's generator as it is now
    torch.manual_seed(0)
    assert not torch.equal(second, first) and torch.equal(next(iter(moved))[1], first)  # the seed's order
    assert on_device(train_iter, torch.device("cpu", 0)) is moved  # kept: a second train_ch6 reuses the copy
