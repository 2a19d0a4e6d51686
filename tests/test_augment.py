"""Augmentation presets per image (torchvision's policies as the oracle), MixUp/CutMix, the old augment switch."""

import dataclasses
import re

import pytest
import torch

from cnnlab import cli
from cnnlab.data import AUGMENTS, BatchMix, DeviceLoader, augment_batch, augment_images
from cnnlab.data.autoaugment import _space, apply_ops, auto_augment, policy
from cnnlab.errors import CnnlabError
from cnnlab.runs.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.train import build_trainer, make_config, resume
from cnnlab.train import config as config_module
from cnnlab.train.config import TrainConfig


# ------------------------------------------------------------------------------------------ each operation
@pytest.mark.parametrize("preset", ["trivial", "randaugment", "autoaugment"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_operation_matches_torchvision_on_each_image(preset, channels):
    """Every operation of the policy, at low, middle and high magnitudes of both signs, equals torchvision's
    own (``_apply_image_or_video_transform``, what its policies call) applied to each image alone."""
    tv = policy(preset)
    bins = 10 if preset == "autoaugment" else tv.num_magnitude_bins
    x = torch.rand(6, channels, 11, 11, generator=torch.Generator().manual_seed(channels))
    names, table, signed = _space(tv, bins, 11, 11)
    for k, name in enumerate(names):
        for level in (0, bins // 3, bins - 1):
            for sign in (1, -1) if signed[k] else (1,):
                magnitude = float(table[k, level]) * sign
                ours = apply_ops(x, names, torch.full((6,), k), torch.full((6,), magnitude, dtype=torch.float64))
                theirs = torch.cat([tv._apply_image_or_video_transform(x[i:i + 1], name, magnitude,
                                                                        interpolation=tv.interpolation, fill=tv._fill)
                                    for i in range(6)])
                torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0, msg=f"{name} {magnitude}")


def test_apply_ops_mixes_operations_in_one_batch_and_keeps_skipped_images():
    tv = policy("trivial")
    x = torch.rand(5, 3, 9, 9)
    names, table, _ = _space(tv, 31, 9, 9)
    op = torch.tensor([names.index("Rotate"), -1, names.index("Posterize"), names.index("ShearX"), -1])
    magnitude = torch.tensor([30.0, 5.0, 3.0, 0.5, 0.0], dtype=torch.float64)
    out = apply_ops(x, names, op, magnitude)
    assert torch.equal(out[1], x[1]) and torch.equal(out[4], x[4])
    for i in (0, 2, 3):
        theirs = tv._apply_image_or_video_transform(x[i:i + 1], names[op[i]], float(magnitude[i]),
                                                    interpolation=tv.interpolation, fill=tv._fill)
        torch.testing.assert_close(out[i:i + 1], theirs, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------ the presets
@pytest.mark.parametrize("preset", ["trivial", "randaugment", "autoaugment"])
def test_each_image_gets_its_own_draw_and_a_generator_fixes_them(preset):
    x = torch.rand(1, 3, 12, 12).expand(64, 3, 12, 12).contiguous()  # 64 copies of one image
    out = augment_images(x, preset, torch.Generator().manual_seed(0))
    distinct = {tuple(row.flatten().tolist()) for row in out}
    assert len(distinct) > 16, f"{preset}: {len(distinct)} distinct results for 64 images (one draw per batch?)"
    assert torch.equal(out, augment_images(x, preset, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, augment_images(x, preset, torch.Generator().manual_seed(1)))
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("flip", [True, False])
def test_policies_follow_crop_flip_and_keep_its_flip_policy(flip):
    """A policy preset is crop-flip (the same draws: crop-flip batches are what they were) and then the policy, so
    flip=False (digits) never mirrors; none is the identity."""
    x = torch.rand(16, 1, 10, 10)
    assert augment_images(x, "none", torch.Generator()) is x
    crop = augment_images(x, "crop-flip", torch.Generator().manual_seed(3), flip=flip)
    assert torch.equal(crop, augment_batch(x, torch.Generator().manual_seed(3), flip=flip))
    g = torch.Generator().manual_seed(3)
    expected = auto_augment(augment_batch(x, g, flip=flip), "trivial", g)
    assert torch.equal(augment_images(x, "trivial", torch.Generator().manual_seed(3), flip=flip), expected)


def test_the_preset_names_are_the_same_in_config_and_data():
    assert config_module.AUGMENTS == AUGMENTS


# ------------------------------------------------------------------------------------------ mixing
def test_mixup_and_cutmix_give_soft_targets_of_two_labels():
    x, y = torch.rand(8, 1, 8, 8), torch.arange(8) % 4
    for mix in (BatchMix(4, mixup=0.4), BatchMix(4, cutmix=1.0), BatchMix(4, mixup=0.2, cutmix=0.5)):
        mixed, soft = mix(x, y, torch.Generator().manual_seed(0))
        assert mixed.shape == x.shape and soft.shape == (8, 4) and soft.dtype.is_floating_point
        torch.testing.assert_close(soft.sum(1), torch.ones(8))
        partner = y.roll(1)  # torchvision mixes each image with the previous one
        assert bool(((soft > 0).sum(1) <= 2).all())
        assert bool((soft.gather(1, y[:, None]) + soft.gather(1, partner[:, None]) >= 1 - 1e-6).all())
        again = mix(x, y, torch.Generator().manual_seed(0))
        assert torch.equal(again[0], mixed) and torch.equal(again[1], soft)


def test_mixing_leaves_the_global_random_stream_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    BatchMix(3, mixup=1.0)(torch.rand(4, 1, 5, 5, generator=torch.Generator()), torch.tensor([0, 1, 2, 0]),
                           torch.Generator().manual_seed(1))
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("kwargs", [dict(mixup=1.5), dict(cutmix=-0.1), dict(mixup=float("nan")), {}])
def test_batch_mix_refuses_bad_alphas(kwargs):
    with pytest.raises(CnnlabError):
        BatchMix(3, **kwargs)


def test_loader_resumes_augmented_and_mixed_batches_exactly():
    images = torch.randint(0, 256, (70, 1, 10, 10), dtype=torch.uint8)
    labels = torch.arange(70) % 5
    make = lambda: DeviceLoader(images, labels, 16, shuffle=True, augment="randaugment", seed=9,  # noqa: E731
                                mixup=0.5, cutmix=0.5, num_classes=5)
    full = make()
    full.set_epoch(2)
    batches = list(full)
    resumed = make()
    resumed.load_state_dict({"epoch": 2, "batch": 3})
    resumed.set_epoch(2)
    rest = list(resumed)
    assert len(rest) == len(batches) - 3
    for (xa, ya), (xb, yb) in zip(batches[3:], rest, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert batches[0][1].shape == (16, 5)  # soft targets


# ------------------------------------------------------------------------------------------ the config
def test_the_old_switch_means_crop_flip_or_none():
    assert TrainConfig(augment=True).augment == "crop-flip" and TrainConfig(augment=False).augment == "none"
    assert TrainConfig(augment=True) == TrainConfig(augment="crop-flip")
    assert dataclasses.replace(TrainConfig(augment=True), seed=1).augment == "crop-flip"
    for recipe, preset in (("book", "none"), ("fast", "none"), ("cpu10", "crop-flip"), ("speedrun", "crop-flip"),
                           ("best", "crop-flip")):
        assert make_config("lenet", recipe).augment == preset


@pytest.mark.parametrize("field, value, message", [
    ("augment", "flip", "augment must be one of none, crop-flip, trivial, randaugment, autoaugment (or true or "
                        "false), got 'flip'"),
    ("augment", "no", "augment must be true or false, got 'no' (a string)"),
    ("mixup", 1.5, "mixup must be a Beta(alpha, alpha) parameter in [0, 1] (0: off), got 1.5"),
    ("mixup", -0.2, "mixup must be a Beta(alpha, alpha) parameter in [0, 1]"),
    ("cutmix", 2, "cutmix must be a Beta(alpha, alpha) parameter in [0, 1]"),
])
def test_bad_augmentation_settings_get_one_line(field, value, message):
    with pytest.raises(CnnlabError, match=re.escape(message)) as info:
        make_config("lenet", **{field: value})
    assert "\n" not in str(info.value)


def test_cli_flags(capsys):
    parser = cli.build_parser()
    assert parser.parse_args(["train", "lenet", "--augment"]).augment == "crop-flip"
    assert parser.parse_args(["train", "lenet", "--augment", "trivial"]).augment == "trivial"
    assert parser.parse_args(["train", "lenet", "--no-augment"]).augment is False
    args = parser.parse_args(["train", "lenet", "--mixup", "0.2", "--cutmix", "1", "--label-smoothing", "0.1"])
    assert (args.mixup, args.cutmix, args.label_smoothing) == (0.2, 1.0, 0.1)
    assert cli.main(["train", "lenet", "--mixup", "1.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "mixup must be a Beta(alpha, alpha) parameter in [0, 1]" in err


# ------------------------------------------------------------------------------------------ training
@pytest.fixture
def _one_thread():  # conftest.py puts back the deterministic mode a run turns on
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_run_with_a_policy_and_mixing_trains(tmp_path, data_dir, _one_thread):
    cfg = make_config("lenet-relu", epochs=1, limit_train_batches=3, limit_val_batches=1, batch_size=32,
                      augment="trivial", mixup=0.2, cutmix=0.2, label_smoothing=0.1, out=str(tmp_path / "r"))
    trainer = build_trainer(cfg, quiet=True, report=False)
    history = trainer.fit()
    assert 0 <= history[0]["train_acc"] <= 1 and history[0]["train_loss"] > 0
    assert load_checkpoint(tmp_path / "r" / "last.pt")["config"]["augment"] == "trivial"


def test_an_old_style_checkpoint_resumes_exactly(tmp_path, data_dir, _one_thread):
    """last.pt of an older cnnlab holds "augment": true and no mixup/cutmix/balance: it resumes as crop-flip, and
    ends where an uninterrupted run ends."""
    common = dict(limit_train_batches=3, limit_val_batches=1, batch_size=32, augment=True, deterministic=True)
    build_trainer(make_config("lenet-relu", epochs=2, **common, out=str(tmp_path / "ref")), quiet=True,
                  report=False).fit()
    build_trainer(make_config("lenet-relu", epochs=1, **common, out=str(tmp_path / "old")), quiet=True,
                  report=False).fit()
    state = load_checkpoint(tmp_path / "old" / "last.pt")
    state["config"]["augment"] = True
    for key in ("mixup", "cutmix", "balance"):
        del state["config"][key]
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "version")}, tmp_path / "old" / "last.pt")
    resume(tmp_path / "old", quiet=True, report=False, epochs=2)
    ours, reference = (load_checkpoint(tmp_path / d / "last.pt") for d in ("old", "ref"))
    assert ours["config"]["augment"] == "crop-flip" and ours["step"] == reference["step"] == 6
    for key, tensor in reference["model"].items():
        assert torch.equal(ours["model"][key], tensor), key


# ------------------------------------------------------------------------------------------ the benchmark
def test_augment_cost_benchmark_measures_every_variant(tmp_path):
    """benchmarks/augment_cost.py on a tiny budget, so it cannot rot (no timing is asserted)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "augment_cost.py"
    spec = importlib.util.spec_from_file_location("cnnlab_augment_cost", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "cost.json"
    result = bench.main(["--batch", "8", "--steps", "1", "--repeats", "1", "--device", "cpu", "--json", str(out)])
    names = [row["variant"] for row in result["rows"]]
    assert names[:len(AUGMENTS)] == list(AUGMENTS) and len(names) == len(bench.VARIANTS)
    assert all(row["step_ms"] > 0 and row["batch_ms"] > 0 for row in result["rows"])
    assert "cnnlab" in out.read_text()
