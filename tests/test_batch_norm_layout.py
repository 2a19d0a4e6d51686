"""BatchNorm layers with few channels train on contiguous inputs in a channels-last model on the CPU (ATen's
channels-last backward is several times slower there), with torch's own results, in the run and the book's loops."""

import copy

import pytest
import torch
from torch import nn

from cnnlab import d2l
from cnnlab.device import SMALL_BATCH_NORM, train_small_batch_norms_contiguous
from cnnlab.train import build_trainer, make_config

CL = torch.channels_last


def _net() -> nn.Sequential:
    """A BatchNorm of 8 channels (hooked) and one of SMALL_BATCH_NORM (left alone)."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, SMALL_BATCH_NORM, 3), nn.BatchNorm2d(SMALL_BATCH_NORM), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(SMALL_BATCH_NORM, 3))


def _record_inputs(model: nn.Module) -> dict[int, list[str]]:
    """The layout each BatchNorm's forward gets (after every pre-hook), by its index in the Sequential."""
    seen: dict[int, list[str]] = {}
    for i, m in enumerate(model):
        if isinstance(m, nn.BatchNorm2d):
            seen[i] = []
            m.register_forward_hook(lambda mod, args, out, i=i: seen[i].append(
                "contiguous" if args[0].is_contiguous() else "channels_last"))
    return seen


def test_a_small_batch_norm_trains_on_a_contiguous_input_with_torchs_results():
    torch.manual_seed(0)
    plain = _net().to(memory_format=CL)
    hooked = copy.deepcopy(plain)
    handles = train_small_batch_norms_contiguous(hooked)
    assert len(handles) == 1  # only the 8-channel layer
    seen = _record_inputs(hooked)
    x = torch.randn(16, 1, 12, 12).contiguous(memory_format=CL)
    y = torch.randint(0, 3, (16,))
    for model in (plain, hooked):
        nn.functional.cross_entropy(model(x), y).backward()
    assert seen == {1: ["contiguous"], 4: ["channels_last"]}
    for (name, a), b in zip(plain.named_parameters(), hooked.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=name)
    for (name, a), b in zip(plain.named_buffers(), hooked.buffers(), strict=True):
        torch.testing.assert_close(b, a, msg=name)  # the running statistics and the batch count

    with torch.no_grad():  # a training-mode forward without gradients, and evaluation: left as they are
        plain(x), hooked(x)  # (both: it updates the running statistics)
        out_plain, out_hooked = plain.eval()(x), hooked.eval()(x)
    assert seen[1][1:] == ["channels_last", "channels_last"]
    torch.testing.assert_close(out_hooked, out_plain)

    for handle in handles:
        handle.remove()
    hooked.train()(x)
    assert seen[1][-1] == "channels_last"


def test_a_contiguous_input_and_other_layers_are_left_alone():
    model = nn.Sequential(nn.BatchNorm2d(8), nn.BatchNorm1d(4), nn.LazyBatchNorm2d())
    handles = train_small_batch_norms_contiguous(model)
    assert len(handles) == 1  # the 1-D layer and the lazy one (no channel count yet) are not hooked
    x = torch.randn(4, 8, 5, 5)
    seen = _record_inputs(nn.Sequential(model[0]))
    model[0](x)
    assert seen == {0: ["contiguous"]}


@pytest.mark.slow
def test_a_cpu_run_in_channels_last_hooks_its_small_batch_norms(tmp_path, data_dir):
    config = make_config("compact", "cpu10", epochs=1, limit_train_batches=2, limit_val_batches=1, batch_size=32,
                         out=str(tmp_path / "run"), device="cpu")
    trainer = build_trainer(config, quiet=True, report=False)
    hooked = [m.num_features for m in trainer.model.modules()
              if isinstance(m, nn.BatchNorm2d) and m._forward_pre_hooks]
    assert hooked == [8]  # the stem; the stages' 24, 48 and 96 channels run channels-last
    trainer.fit()
    contiguous = build_trainer(make_config("compact", "cpu10", epochs=1, channels_last=False, device="cpu",
                                           out=str(tmp_path / "run2")), quiet=True, report=False)
    assert not any(m._forward_pre_hooks for m in contiguous.model.modules())


class BNNet(d2l.Classifier):
    """A 6-channel BatchNorm as in the book's BN-LeNet (d2l 8.5), after a conv of 4 input channels (one of a single
    channel keeps a contiguous input's layout), recording the layout its forward gets."""

    def __init__(self, lr=0.1):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.BatchNorm2d(6), nn.ReLU(),
                                 nn.Flatten(), nn.LazyLinear(3))
        self.seen = _record_inputs(self.net)


def test_the_books_trainer_hooks_small_batch_norms_while_it_fits_and_removes_them():
    torch.manual_seed(0)
    model = BNNet()
    model(torch.rand(1, 1, 8, 8))
    model.seen[3].clear()
    images = d2l.DataModule()
    images.X, images.y = torch.rand(48, 1, 8, 8), torch.randint(0, 3, (48,))
    images.batch_size = 8
    images.get_dataloader = lambda train: images.get_tensorloader(
        (images.X, images.y), train, slice(0, 32) if train else slice(32, None))
    d2l.Trainer(max_epochs=1).fit(model, images)
    # the layout check's forward before the first step (evaluation mode: not hooked), 4 training steps, 2 validation
    assert model.seen[3] == ["channels_last"] + ["contiguous"] * 4 + ["channels_last"] * 2
    assert not model.net[3]._forward_pre_hooks  # handed back as the user built it
    assert all(p.is_contiguous() for p in model.parameters())
