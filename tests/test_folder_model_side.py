"""A folder of photos decoded at the side of the model it is for: the images' median shorter side, capped at the larger
of 224 and the model's input side (cnnlab.data.folder.default_cap), for the run and for every reader of it.

No weights are needed: the runs start from random weights (no --pretrained), one batch of one epoch."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli import main
from cnnlab.data import folder, load_dataset
from cnnlab.train import build_run, make_config

V2_S = "imagenet-efficientnet_v2_s"  # its weights' crop: 384 px


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "folders"


def photos(root: Path, height: int, width: int, per_class: int = 6) -> Path:
    """``root/a/`` and ``root/b/`` of smooth colour JPEGs of ``height`` x ``width`` (small files of large images)."""
    rng = np.random.default_rng(height)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
            coarse.resize((width, height), Image.Resampling.BICUBIC).save(root / name / f"{i}.jpg")
    return root


def entries(cache: Path) -> list[str]:
    """The cache entries of decoded folders, by key (each is a .u8, a .digests and, written last, a .json)."""
    return sorted(p.stem for p in cache.glob("*.json"))


def stored_side(cache: Path, key: str) -> int:
    shape = json.loads((cache / f"{key}.json").read_text())["shape"]
    assert shape[2] == shape[3]
    return shape[2]


def assert_eval_of_its_export_reads_the_runs_entry(pics: Path, stored: int, tmp_path: Path, cache: Path, capsys,
                                                   *train: str) -> None:
    """`cnnlab train *train` on ``pics`` stores them at ``stored`` px in one cache entry, and `cnnlab eval` of the
    run's ONNX export scores its test split from that entry, decoding nothing more."""
    run, onnx = tmp_path / "run", tmp_path / "run.onnx"
    assert main(["train", *train, "--dataset", f"folder:{pics}", "--epochs", "1", "--batch-size", "2",
                 "--limit-train-batches", "1", "--device", "cpu", "--no-report", "--out", str(run)]) == 0
    [key] = entries(cache)
    assert stored_side(cache, key) == stored
    assert main(["export", str(run / "best.pt"), "--format", "onnx", "--output", str(onnx)]) == 0
    assert main(["eval", str(onnx)]) == 0
    assert "the 2 test images drawn from" in capsys.readouterr().out
    assert entries(cache) == [key]


def decoded_for(model: str, pics: Path, **overrides) -> int:
    """The side a run of ``model`` on ``pics`` has its images at (build_run loads them as `cnnlab train` does)."""
    cfg = make_config(model, dataset=f"folder:{pics}", epochs=1, batch_size=2, device="cpu", **overrides)
    return build_run(cfg, quiet=True).dataset.image_size


def key_of_todays_cap(pics: Path) -> str:
    """The cache key the loader gave a folder of ``pics`` decoded without --image-size (a class-folder layout, a test
    split drawn) before caps other than 224 existed: the options written out as that code wrote them."""
    listing = folder._list(pics.resolve())
    options = {"format": folder.FORMAT, "image_size": "median, at most 224", "channels": None, "skip_bad": False,
               "holdout": [folder.HOLDOUT, folder.HOLDOUT_SEED], "val": False}
    return folder._cache_key(listing.root, listing.train + listing.test + listing.val, options)


def test_photos_trained_on_a_384_backbone_are_stored_at_384_and_its_eval_and_report_decode_nothing(tmp_path, cache,
                                                                                                    capsys):
    """`cnnlab train imagenet-efficientnet_v2_s --dataset folder:PHOTOS` stores photos larger than 384 px at 384, the
    side the network takes (they were stored at 224 and enlarged to 384: none of the detail its weights were trained
    on), and `eval` and `report` of the run, which name no model side, read the run's cache entry: the cache holds
    that one entry (a reader deciding at 224 decoded the folder again, and again at 384)."""
    pics = photos(tmp_path / "pics", 400, 460)
    run = tmp_path / "run"
    assert main(["train", V2_S, "--dataset", f"folder:{pics}", "--epochs", "1", "--batch-size", "2",
                 "--limit-train-batches", "1", "--device", "cpu", "--no-report", "--out", str(run)]) == 0
    [key] = entries(cache)
    assert stored_side(cache, key) == 384
    assert json.loads((run / "config.json").read_text())["dataset"]["image_size"] == 384
    assert key != key_of_todays_cap(pics)  # another cap, another entry
    assert main(["eval", str(run / "best.pt"), "--device", "cpu"]) == 0
    assert main(["report", str(run), "--device", "cpu"]) == 0
    assert entries(cache) == [key]
    capsys.readouterr()


def test_photos_between_224_and_the_models_side_are_stored_at_their_median_and_image_size_still_wins(tmp_path, cache):
    """Photos of 300 px (median shorter side) on EfficientNetV2-S (384) are stored at 300, their own side, and on
    EfficientNet-B1 (240) at 240: they were enlarged from 224. --image-size still sets the side."""
    pics = photos(tmp_path / "pics", 300, 340)
    assert decoded_for(V2_S, pics) == 300
    assert decoded_for("imagenet-efficientnet_b1", pics) == 240
    assert decoded_for(V2_S, pics, image_size=256) == 256
    assert len(entries(cache)) == 3  # one for each cap, and one for the side asked


def test_a_224_backbone_and_a_book_model_keep_the_224_cap_and_the_cache_key_they_had(tmp_path, cache):
    """A ResNet-18 backbone's run (224 px), AlexNet's (the book's 224) and a 96-px book model's decode photos larger
    than 384 at 224 into the very entry (key and pixels) they had before a model's side could raise the cap: a larger
    model's cap is its own entry beside it."""
    pics = photos(tmp_path / "pics", 400, 460)
    key = key_of_todays_cap(pics)
    for model in ("imagenet-resnet18", "alexnet", "resnet18"):
        assert decoded_for(model, pics) == 224, model
        assert entries(cache) == [key], model
    assert stored_side(cache, key) == 224
    assert load_dataset(f"folder:{pics}").image_size == 224  # and a load naming no model
    assert len(entries(cache)) == 1


def test_the_side_a_384_model_chose_is_read_from_its_entry_when_asked_for(tmp_path, cache):
    """`eval` of the run's export asks for the side its input takes (the side the run's images were stored at): the
    folder decoded under a cap of 384 is read from its entry, not decoded again (as one decoded under 224 always
    was), where the export names its model (photos of 300 px, stored at their own side) and where it names none that
    is known here (photos of 400 px, stored at 384: the side asked)."""
    for side, stored, model_side in ((400, 384, None), (300, 300, 384)):
        pics = photos(tmp_path / f"pics{side}", side, side + 60)
        chosen = load_dataset(f"folder:{pics}", input_side=384)
        assert chosen.image_size == stored
        before = entries(cache)
        asked = load_dataset(f"folder:{pics}", image_size=stored, channels=3, input_side=model_side)
        assert entries(cache) == before and (asked.test_images == chosen.test_images).all()


@pytest.mark.parametrize("first, then", [("imagenet-resnet18", V2_S), (V2_S, "imagenet-resnet18")])
def test_images_smaller_than_224_are_decoded_once_for_any_model(tmp_path, cache, first, then):
    """Pictures of 100 px are stored at 100 whatever the model's cap: a 384 model's run reads the entry a 224 model's
    run decoded (a cap above 224 names another entry, of the same pixels), and a 224 model's run the entry a 384
    model's run decoded first, under the key a run of a 224 model gives them: it decoded them again into a second."""
    pics = photos(tmp_path / "pics", 100, 120)
    assert decoded_for(first, pics) == 100
    assert entries(cache) == [key_of_todays_cap(pics)]
    assert decoded_for(then, pics) == 100
    assert entries(cache) == [key_of_todays_cap(pics)]


@pytest.mark.slow
def test_eval_of_a_384_backbones_onnx_export_reads_the_runs_entry(tmp_path, cache, capsys):
    """`cnnlab eval RUN.onnx` of a run of EfficientNetV2-S on photos of 300 px reads the images at their stored 300
    from the run's cache entry (the export names its model, whose side was the cap), not decoding them again."""
    assert_eval_of_its_export_reads_the_runs_entry(photos(tmp_path / "pics", 300, 340), 300, tmp_path, cache, capsys,
                                                   V2_S)


def test_photos_resized_above_224_are_stored_at_that_side_and_read_back_from_one_entry(tmp_path, cache, capsys):
    """`--resize 384` feeds ResNet-18 384-px pictures: its photos were stored at 224 (the network's own side) and
    enlarged, losing the detail the larger input was asked for. They are stored at up to 384 now, a --resize below
    the model's side keeps the 224 cap, and eval and report of the run read its one entry."""
    pics = photos(tmp_path / "pics", 400, 460)
    assert decoded_for("imagenet-resnet18", pics, resize=384) == 384
    assert decoded_for(V2_S, pics, resize=128) == 224  # fed 128: no need of 384-px photos
    for stale in cache.glob("*"):
        stale.unlink()
    run = tmp_path / "run"
    assert main(["train", "imagenet-resnet18", "--dataset", f"folder:{pics}", "--resize", "384", "--epochs", "1",
                 "--batch-size", "2", "--limit-train-batches", "1", "--device", "cpu", "--no-report",
                 "--out", str(run)]) == 0
    [key] = entries(cache)
    assert stored_side(cache, key) == 384
    assert main(["eval", str(run / "best.pt"), "--device", "cpu"]) == 0
    assert main(["report", str(run), "--device", "cpu"]) == 0
    assert entries(cache) == [key]
    capsys.readouterr()


def test_a_run_from_before_a_resize_raised_the_cap_is_read_and_resumed_from_the_entry_it_decoded(tmp_path, cache,
                                                                                                 monkeypatch, capsys):
    """A run of ResNet-18 with --resize 384 made before the resize raised the cap stored its photos at 224, as its
    config.json records: eval and report of it decoded the folder again at 384 (then read the 224 entry), and its
    resume went on with photos stored at 384, not the images it began with. They read the entry it decoded."""
    pics = photos(tmp_path / "pics", 400, 460)
    run = tmp_path / "run"
    with monkeypatch.context() as then:  # the loader as it was: every folder capped at 224
        then.setattr(folder, "default_cap", lambda input_side: folder.MAX_DEFAULT_SIZE)
        assert main(["train", "imagenet-resnet18", "--dataset", f"folder:{pics}", "--resize", "384", "--epochs", "1",
                     "--schedule", "constant", "--batch-size", "2", "--limit-train-batches", "1", "--device", "cpu",
                     "--no-report", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["dataset"]["image_size"] == 224
    assert entries(cache) == [key_of_todays_cap(pics)]
    assert main(["eval", str(run / "best.pt"), "--device", "cpu"]) == 0
    assert main(["report", str(run), "--device", "cpu"]) == 0
    assert entries(cache) == [key_of_todays_cap(pics)]
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert entries(cache) == [key_of_todays_cap(pics)]
    assert json.loads((run / "result.json").read_text())["epochs"] == 2
    assert torch.load(run / "last.pt", weights_only=True)["dataset"]["image_size"] == 224
    capsys.readouterr()


def test_eval_of_the_export_of_a_run_resized_above_its_models_side_reads_the_runs_entry(tmp_path, cache, capsys):
    """`cnnlab eval RUN.onnx` of a run fed 300-px pictures (`--resize 300`) of a 224-px model reads the photos from the
    entry the run decoded them into, under the 300 cap (stored at their own 260): the export's model named the cap,
    and its 224 decoded the folder again into a second entry of the same pixels."""
    assert_eval_of_its_export_reads_the_runs_entry(photos(tmp_path / "pics", 260, 300), 260, tmp_path, cache, capsys,
                                                   "imagenet-mobilenet_v3_small", "--resize", "300")
