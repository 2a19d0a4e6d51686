"""The object-style API of the English edition's chapters 3-6 (linear regression, linear classification,
multilayer perceptrons, builders' guide), run as notebook cells against ``cnnlab.d2l``.

As in the book, several sections redefine the library's methods with ``@d2l.add_to_class(d2l.Trainer)``; the
``restore_d2l_classes`` fixture undoes that after each test. Training cells keep the book's calls; Fashion-MNIST
ones get ``limit_train_batches``/``limit_val_batches`` so each runs a few batches.
"""

from __future__ import annotations

import http.server
import re
import threading
import time

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from cnnlab import d2l
from cnnlab.errors import CnnlabError
from d2l_support import needs_real_data, restore_d2l_classes, run_cells  # noqa: F401  (a fixture)

HEADER = """
from cnnlab import d2l
import torch
from torch import nn
from torch.nn import functional as F
"""


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def test_oo_design_cells(capsys):
    run_cells([HEADER, """
    import numpy as np
    class B(d2l.HyperParameters):
        def __init__(self, a, b, c):
            self.save_hyperparameters(ignore=['c'])
            print('self.a =', self.a, 'self.b =', self.b)
            print('There is no self.c =', not hasattr(self, 'c'))
    b = B(a=1, b=2, c=3)
    """, """
    board = d2l.ProgressBoard('x')
    for x in np.arange(0, 10, 0.1):
        board.draw(x, np.sin(x), 'sin', every_n=2)
        board.draw(x, np.cos(x), 'cos', every_n=10)
    """])
    assert capsys.readouterr().out == "self.a = 1 self.b = 2\nThere is no self.c = True\n"


def test_synthetic_regression_data_cells(capsys):
    ns = run_cells([HEADER, """
    data = d2l.SyntheticRegressionData(w=d2l.tensor([2, -3.4]), b=4.2)
    print('features:', data.X[0].shape, '\\nlabel:', data.y[0].shape)
    X, y = next(iter(data.train_dataloader()))
    print('X shape:', X.shape, '\\ny shape:', y.shape)
    """, "len(data.train_dataloader())"])
    assert capsys.readouterr().out.splitlines()[2:] == ["X shape: torch.Size([32, 2]) ", "y shape: torch.Size([32, 1])"]
    data = ns["data"]
    assert ns["_"] == 32 and len(data.val_dataloader().dataset) == 1000
    assert (data.y - (data.X @ torch.tensor([[2], [-3.4]]) + 4.2)).std() < 0.02


LINEAR_SCRATCH = [HEADER, """
@d2l.add_to_class(d2l.Trainer)
def prepare_batch(self, batch):
    return batch
@d2l.add_to_class(d2l.Trainer)
def fit_epoch(self):  # the book's own loop (d2l 3.4.4), with the optimizer step under no_grad
    self.model.train()
    for batch in self.train_dataloader:
        loss = self.model.training_step(self.prepare_batch(batch))
        self.optim.zero_grad()
        with torch.no_grad():
            loss.backward()
            if self.gradient_clip_val > 0:
                self.clip_gradients(self.gradient_clip_val, self.model)
            self.optim.step()
        self.train_batch_idx += 1
    if self.val_dataloader is None:
        return
    self.model.eval()
    for batch in self.val_dataloader:
        with torch.no_grad():
            self.model.validation_step(self.prepare_batch(batch))
        self.val_batch_idx += 1
""", """
model = d2l.LinearRegressionScratch(2, lr=0.03)
data = d2l.SyntheticRegressionData(w=d2l.tensor([2, -3.4]), b=4.2)
trainer = d2l.Trainer(max_epochs=3)
trainer.fit(model, data)
""", """
with torch.no_grad():
    print(f'error in estimating w: {data.w - d2l.reshape(model.w, data.w.shape)}')
    print(f'error in estimating b: {data.b - model.b}')
"""]


@pytest.mark.usefixtures("restore_d2l_classes")
def test_linear_regression_scratch_with_the_books_own_fit_epoch(capsys, monkeypatch):
    library = {name: vars(d2l.Trainer)[name] for name in ("fit_epoch", "prepare_batch")}
    ns = run_cells(LINEAR_SCRATCH)
    out = capsys.readouterr().out.splitlines()
    # the book's fit_epoch does not refresh the board; Trainer.fit still prints one line per epoch
    assert [line.split(":")[0] for line in out[:3]] == ["epoch 1", "epoch 2", "epoch 3"]
    assert ", val_loss " in out[0] and out[3].startswith("error in estimating w: tensor([")
    model, data = ns["model"], ns["data"]
    assert torch.allclose(model.w.detach().reshape(-1), data.w, atol=0.3) and abs(model.b.item() - 4.2) < 0.3
    # the library's own loop (the scratch SGD updating its leaves under no_grad itself) computes the same
    for name, method in library.items():
        monkeypatch.setattr(d2l.Trainer, name, method)
    torch.manual_seed(0)
    ours = run_cells([HEADER, LINEAR_SCRATCH[2]])
    assert torch.equal(ours["model"].w, model.w) and torch.equal(ours["model"].b, model.b)
    optim = model.configure_optimizers()
    assert isinstance(optim, d2l.SGD) and optim.params == [model.w, model.b] and optim.lr == 0.03


def test_linear_regression_concise_and_weight_decay(capsys):
    ns = run_cells([HEADER, """
    model = d2l.LinearRegression(lr=0.03)
    data = d2l.SyntheticRegressionData(w=d2l.tensor([2, -3.4]), b=4.2)
    trainer = d2l.Trainer(max_epochs=3)
    trainer.fit(model, data)
    w, b = model.get_w_b()
    """, """
    class Data(d2l.DataModule):
        def __init__(self, num_train, num_val, num_inputs, batch_size):
            self.save_hyperparameters()
            n = num_train + num_val
            self.X = d2l.randn(n, num_inputs)
            noise = d2l.randn(n, 1) * 0.01
            w, b = d2l.ones((num_inputs, 1)) * 0.01, 0.05
            self.y = d2l.matmul(self.X, w) + b + noise
        def get_dataloader(self, train):
            i = slice(0, self.num_train) if train else slice(self.num_train, None)
            return self.get_tensorloader([self.X, self.y], train, i)
    def l2_penalty(w):
        return d2l.reduce_sum(w**2) / 2
    class WeightDecayScratch(d2l.LinearRegressionScratch):
        def __init__(self, num_inputs, lambd, lr, sigma=0.01):
            super().__init__(num_inputs, lr, sigma)
            self.save_hyperparameters()
        def loss(self, y_hat, y):
            return super().loss(y_hat, y) + self.lambd * l2_penalty(self.w)
    data = Data(num_train=20, num_val=100, num_inputs=200, batch_size=5)
    trainer = d2l.Trainer(max_epochs=10)
    def train_scratch(lambd):
        model = WeightDecayScratch(num_inputs=200, lambd=lambd, lr=0.01)
        model.board.yscale = 'log'
        trainer.fit(model, data)
        print('L2 norm of w:', float(l2_penalty(model.w)))
    train_scratch(3)
    """, """
    class WeightDecay(d2l.LinearRegression):
        def __init__(self, wd, lr):
            super().__init__(lr)
            self.save_hyperparameters()
            self.wd = wd
        def configure_optimizers(self):
            return torch.optim.SGD([{'params': self.net.weight, 'weight_decay': self.wd},
                                    {'params': self.net.bias}], lr=self.lr)
    model = WeightDecay(wd=3, lr=0.01)
    model.board.yscale = 'log'
    trainer.fit(model, data)
    print('L2 norm of w:', float(l2_penalty(model.get_w_b()[0])))
    """])
    w, b = ns["w"], ns["b"]
    assert torch.allclose(w.reshape(-1), torch.tensor([2, -3.4]), atol=0.1) and abs(b.item() - 4.2) < 0.1
    out = capsys.readouterr().out.splitlines()
    norms = [float(line.split()[-1]) for line in out if line.startswith("L2 norm of w:")]
    assert len(out) == 3 + 10 + 1 + 10 + 1 and len(norms) == 2 and norms[0] < 0.1 and norms[1] < 0.1


def test_classification_accuracy_and_concise_softmax_loss():
    run_cells([HEADER])
    model = d2l.SoftmaxRegression(num_outputs=3, lr=0.1)
    X = torch.randn(4, 2, 2)
    logits = model(X)
    assert logits.shape == (4, 3) and model.lr == 0.1
    y = torch.tensor([0, 1, 2, 1])
    assert model.accuracy(logits, y) == (logits.argmax(1) == y).float().mean()
    assert torch.equal(model.accuracy(logits, y, averaged=False), (logits.argmax(1) == y).float())
    assert torch.allclose(model.loss(logits, y), nn.functional.cross_entropy(logits, y))


@needs_real_data
def test_image_classification_dataset_cells(capsys):
    ns = run_cells([HEADER, """
    d2l.use_svg_display()
    data = d2l.FashionMNIST(resize=(32, 32))
    len(data.train), len(data.val)
    """, "data.train[0][0].shape", """
    X, y = next(iter(data.train_dataloader()))
    print(X.shape, X.dtype, y.shape, y.dtype)
    """, """
    batch = next(iter(data.val_dataloader()))
    data.visualize(batch)
    """])
    assert ns["Out"][1] == (60000, 10000) and ns["Out"][2] == (1, 32, 32)
    assert capsys.readouterr().out == "torch.Size([64, 1, 32, 32]) torch.float32 torch.Size([64]) torch.int64\n"
    assert ns["Out"][4] is None  # nothing for Jupyter to show a second time


@needs_real_data
def test_softmax_regression_scratch_and_concise_cells(capsys):
    ns = run_cells([HEADER, """
    def softmax(X):
        X_exp = d2l.exp(X)
        partition = d2l.reduce_sum(X_exp, 1, keepdims=True)
        return X_exp / partition
    class SoftmaxRegressionScratch(d2l.Classifier):
        def __init__(self, num_inputs, num_outputs, lr, sigma=0.01):
            super().__init__()
            self.save_hyperparameters()
            self.W = torch.normal(0, sigma, size=(num_inputs, num_outputs), requires_grad=True)
            self.b = torch.zeros(num_outputs, requires_grad=True)
        def parameters(self):
            return [self.W, self.b]
    @d2l.add_to_class(SoftmaxRegressionScratch)
    def forward(self, X):
        X = d2l.reshape(X, (-1, self.W.shape[0]))
        return softmax(d2l.matmul(X, self.W) + self.b)
    def cross_entropy(y_hat, y):
        return -d2l.reduce_mean(d2l.log(y_hat[list(range(len(y_hat))), y]))
    @d2l.add_to_class(SoftmaxRegressionScratch)
    def loss(self, y_hat, y):
        return cross_entropy(y_hat, y)
    data = d2l.FashionMNIST(batch_size=256)
    model = SoftmaxRegressionScratch(num_inputs=784, num_outputs=10, lr=0.1)
    trainer = d2l.Trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=2)
    trainer.fit(model, data)
    """, """
    X, y = next(iter(data.val_dataloader()))
    preds = d2l.argmax(model(X), axis=1)
    preds.shape
    """, """
    wrong = d2l.astype(preds, y.dtype) != y
    X, y, preds = X[wrong], y[wrong], preds[wrong]
    labels = [a + '\\n' + b for a, b in zip(data.text_labels(y), data.text_labels(preds))]
    data.visualize([X, y], labels=labels)
    """, """
    model = d2l.SoftmaxRegression(num_outputs=10, lr=0.1)
    trainer.fit(model, data)
    """])
    assert ns["Out"][2] == (256,)
    out = capsys.readouterr().out.splitlines()
    pattern = r"epoch {}: train_loss [\d.]+, val_loss [\d.]+, val_acc [\d.]+"
    assert all(re.fullmatch(pattern.format(e), line) for e, line in zip((1, 2, 1, 2), out, strict=True))


@needs_real_data
def test_mlp_and_dropout_cells(capsys):
    ns = run_cells([HEADER, """
    class MLPScratch(d2l.Classifier):
        def __init__(self, num_inputs, num_outputs, num_hiddens, lr, sigma=0.01):
            super().__init__()
            self.save_hyperparameters()
            self.W1 = nn.Parameter(torch.randn(num_inputs, num_hiddens) * sigma)
            self.b1 = nn.Parameter(torch.zeros(num_hiddens))
            self.W2 = nn.Parameter(torch.randn(num_hiddens, num_outputs) * sigma)
            self.b2 = nn.Parameter(torch.zeros(num_outputs))
    @d2l.add_to_class(MLPScratch)
    def forward(self, X):
        X = d2l.reshape(X, (-1, self.num_inputs))
        H = torch.max(d2l.matmul(X, self.W1) + self.b1, torch.zeros(1))
        return d2l.matmul(H, self.W2) + self.b2
    model = MLPScratch(num_inputs=784, num_outputs=10, num_hiddens=256, lr=0.1)
    data = d2l.FashionMNIST(batch_size=256)
    trainer = d2l.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, data)
    """, """
    class DropoutMLP(d2l.Classifier):
        def __init__(self, num_outputs, num_hiddens_1, num_hiddens_2, dropout_1, dropout_2, lr):
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(
                nn.Flatten(), nn.LazyLinear(num_hiddens_1), nn.ReLU(), nn.Dropout(dropout_1),
                nn.LazyLinear(num_hiddens_2), nn.ReLU(), nn.Dropout(dropout_2), nn.LazyLinear(num_outputs))
    hparams = {'num_outputs': 10, 'num_hiddens_1': 256, 'num_hiddens_2': 256,
               'dropout_1': 0.5, 'dropout_2': 0.5, 'lr': 0.1}
    model = DropoutMLP(**hparams)
    trainer.fit(model, data)
    """])
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert ns["model"].net[1].weight.shape == (256, 784)


def test_activation_plots_draw_on_pyplots_current_axes():
    plt.close("all")
    ns = run_cells([HEADER, """
    x = torch.arange(-8.0, 8.0, 0.1, requires_grad=True)
    y = torch.relu(x)
    d2l.plot(x.detach(), y.detach(), 'x', 'relu(x)', figsize=(5, 2.5))
    """, """
    y.backward(torch.ones_like(x), retain_graph=True)
    d2l.plot(x.detach(), x.grad, 'x', 'grad of relu', figsize=(5, 2.5))
    """, """
    y = torch.sigmoid(x)
    x.grad.data.zero_()
    y.backward(torch.ones_like(x))
    d2l.plot(x.detach().numpy(), [y.detach().numpy(), x.grad.numpy()], legend=['sigmoid', 'gradient'],
             figsize=(4.5, 2.5))
    """])
    assert ns["Out"][1:] == [None, None, None]
    axes = plt.gca()
    lines = axes.get_lines()
    assert len(lines) == 2 and [t.get_text() for t in axes.get_legend().get_texts()] == ["sigmoid", "gradient"]
    assert torch.allclose(torch.tensor(lines[1].get_ydata()), torch.sigmoid(ns["x"]).detach() * (1 - torch.sigmoid(
        ns["x"]).detach()))
    assert tuple(plt.rcParams["figure.figsize"]) == (4.5, 2.5)
    d2l.set_figsize()
    assert tuple(plt.rcParams["figure.figsize"]) == (3.5, 2.5)
    d2l.plot([1.0, 2.0, 4.0])  # a single series against its index
    assert list(plt.gca().get_lines()[0].get_ydata()) == [1.0, 2.0, 4.0]
    plt.close("all")


@pytest.mark.usefixtures("restore_d2l_classes")
def test_builders_guide_cells(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # read-write's files land in the scratch folder
    ns = run_cells([HEADER, """
    net = nn.Sequential(nn.LazyLinear(256), nn.ReLU(), nn.LazyLinear(10))
    X = torch.rand(2, 20)
    net(X).shape
    """, """
    @d2l.add_to_class(d2l.Module)
    def apply_init(self, inputs, init=None):
        self.forward(*inputs)
        if init is not None:
            self.net.apply(init)
    """, """
    torch.save(net.state_dict(), 'mlp.params')
    clone = nn.Sequential(nn.LazyLinear(256), nn.ReLU(), nn.LazyLinear(10))
    clone(X)
    clone.load_state_dict(torch.load('mlp.params'))
    bool((clone(X) == net(X)).all())
    """, """
    d2l.cpu(), d2l.num_gpus(), d2l.try_gpu(10), d2l.try_all_gpus()[-1]
    """, """
    @d2l.add_to_class(d2l.Trainer)
    def __init__(self, max_epochs, num_gpus=0, gradient_clip_val=0):
        self.save_hyperparameters()
        self.gpus = [d2l.gpu(i) for i in range(min(num_gpus, d2l.num_gpus()))]
    @d2l.add_to_class(d2l.Trainer)
    def prepare_batch(self, batch):
        if self.gpus:
            batch = [d2l.to(a, self.gpus[0]) for a in batch]
        return batch
    model = d2l.LinearRegression(lr=0.03)
    data = d2l.SyntheticRegressionData(w=d2l.tensor([2, -3.4]), b=4.2)
    trainer = d2l.Trainer(max_epochs=2, num_gpus=1)  # the book's own __init__: no batch limits
    trainer.fit(model, data)
    """])
    assert ns["Out"][1] == (2, 10) and ns["Out"][3] is True
    assert ns["Out"][4][0] == torch.device("cpu") and ns["Out"][4][2] == torch.device("cpu")
    assert len(capsys.readouterr().out.splitlines()) == 2


class _Files(http.server.BaseHTTPRequestHandler):
    files: dict = {}

    def do_GET(self):  # noqa: N802  the http.server hook's name
        body = self.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        if body is not None:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_saves_checks_and_reuses_the_file(server, tmp_path, capsys):
    import hashlib

    body = b"Id,SalePrice\n1,208500\n"
    _Files.files = {"/kaggle_house_pred_train.csv": body}
    sha1 = hashlib.sha1(body).hexdigest()
    path = d2l.download(server + "/kaggle_house_pred_train.csv", tmp_path, sha1_hash=sha1)
    assert open(path, "rb").read() == body and "Downloading" in capsys.readouterr().out
    _Files.files = {}
    assert d2l.download(server + "/kaggle_house_pred_train.csv", tmp_path, sha1_hash=sha1) == path  # no network
    d2l.DATA_HUB["house"] = (server + "/kaggle_house_pred_train.csv", sha1)
    try:
        assert d2l.download("house", tmp_path) == path
    finally:
        del d2l.DATA_HUB["house"]
    with pytest.raises(CnnlabError, match="expected a URL or a DATA_HUB name"):
        d2l.download("no-such-name", tmp_path)
    _Files.files = {"/other.csv": b"x"}
    with pytest.raises(CnnlabError, match="SHA-1"):
        d2l.download(server + "/other.csv", tmp_path, sha1_hash=sha1)
    assert not (tmp_path / "other.csv").exists()  # no half-checked file left behind


def test_download_without_a_network_fails_fast_with_one_line(tmp_path, server):
    _Files.files = {}
    start = time.monotonic()
    with pytest.raises(CnnlabError, match=r"could not download .*404.*this needs the internet"):
        d2l.download(server + "/missing.csv", tmp_path)
    import socket

    with socket.socket() as s:  # a port nobody listens on: connection refused, as offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CnnlabError, match="could not download"):
        d2l.download(f"http://127.0.0.1:{port}/kaggle_house_pred_test.csv", tmp_path)
    assert time.monotonic() - start < 30 and list(tmp_path.iterdir()) == []


def test_download_extract_unpacks_a_data_hub_archive(server, tmp_path, monkeypatch):
    import hashlib
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hotdog/train/a.txt", "a")
    body = buffer.getvalue()
    _Files.files = {"/hotdog.zip": body}
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notebook").mkdir()
    monkeypatch.chdir(tmp_path / "notebook")  # d2l's default folder is ../data
    monkeypatch.setitem(d2l.DATA_HUB, "hotdog", (server + "/hotdog.zip", hashlib.sha1(body).hexdigest()))
    folder = d2l.download_extract("hotdog")
    assert (tmp_path / "data" / "hotdog" / "train" / "a.txt").read_text() == "a"
    assert folder.endswith("data/hotdog")
    # d2l strips one extension: glove.6B.50d.zip unpacks to glove.6B.50d (two made it glove.6B, not a folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("glove.6B.50d/vec.txt", "the 0.1")
    _Files.files = {"/glove.6B.50d.zip": buffer.getvalue()}
    monkeypatch.setitem(d2l.DATA_HUB, "glove.6b.50d", (server + "/glove.6B.50d.zip",
                                                       hashlib.sha1(buffer.getvalue()).hexdigest()))
    folder = d2l.download_extract("glove.6b.50d")
    assert folder.endswith("data/glove.6B.50d") and (tmp_path / "data" / "glove.6B.50d" / "vec.txt").is_file()
    with pytest.raises(CnnlabError, match="expected a .zip, .tar or .gz archive"):
        d2l.extract(tmp_path / "data" / "hotdog" / "train" / "a.txt")
