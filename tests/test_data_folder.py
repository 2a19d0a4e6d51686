"""folder:PATH: layouts, decoding of common formats and modes, the held-out split, the cache, bad input, memmap.

Pillow is the decoder, so Pillow (ImageOps.fit) is the oracle for resized pixels; lossless formats at their own
size must come back bit for bit.
"""

from __future__ import annotations

import os
import shutil
import threading
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import data_support
from cnnlab.data import DeviceLoader, conform, folder, load_dataset, store
from cnnlab.data.duplicates import image_digest
from cnnlab.errors import CnnlabError, DataError
from cnnlab.inference import Meta, check_same_classes, scored_images
from cnnlab.picture import ShorterSide
from data_support import listing, rng_image, write_classes

home = data_support.home  # a fixture
REAL = os.environ.get("CNNLAB_DATA", "")
needs_real_data = pytest.mark.skipif(not REAL or not (Path(REAL) / "train-images-idx3-ubyte.gz").is_file(),
                                     reason="set CNNLAB_DATA to the Fashion-MNIST folder (the Makefile and CI do)")


@pytest.fixture
def cache(home) -> Path:
    return home / ".cache" / "cnnlab" / "folders"


# -- layouts ------------------------------------------------------------------------------------------------------
@needs_real_data
def test_png_copy_of_fashion_mnist_gives_the_same_pixels_and_labels(tmp_path, home):
    source = load_dataset("fashion-mnist", REAL)
    root = tmp_path / "fmnist-png"
    for split, images, labels, n in (("train", source.train_images, source.train_labels, 60),
                                     ("test", source.test_images, source.test_labels, 30)):
        for i in range(n):
            label = int(labels[i])
            (root / split / f"{label}-{source.classes[label]}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i, 0].numpy(), "L").save(root / split / f"{label}-{source.classes[label]}" /
                                                             f"{i:05d}.png")
    data = load_dataset(f"folder:{root}")
    assert data.classes == tuple(f"{i}-{name}" for i, name in enumerate(source.classes)
                                 if (root / "train" / f"{i}-{name}").is_dir())
    assert data.channels == 1 and data.image_size == 28 and data.flip is True
    for split, images, labels, n in (("train", source.train_images, source.train_labels, 60),
                                     ("test", source.test_images, source.test_labels, 30)):
        order = sorted(range(n), key=lambda i: (int(labels[i]), i))  # class folders sorted, then file names
        got_images, got_labels = getattr(data, f"{split}_images"), getattr(data, f"{split}_labels")
        assert torch.equal(got_images, images[order])
        names = [data.classes[int(y)] for y in got_labels]
        assert names == [f"{int(labels[i])}-{source.classes[int(labels[i])]}" for i in order]
    assert "test split: test/" in data.description


def test_formats_modes_and_sizes_are_decoded_once_to_one_shape(tmp_path, home):
    root = tmp_path / "pets"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    rng_image(1, (20, 20), "RGB").save(root / "cat" / "a.png")
    rng_image(2, (30, 20), "RGBA").save(root / "cat" / "b.png")
    rng_image(3, (20, 40), "L").save(root / "cat" / "c.bmp")
    rng_image(4, (25, 25), "RGB").convert("P", palette=Image.Palette.ADAPTIVE).save(root / "dog" / "d.png")
    rng_image(5, (50, 20), "RGB").save(root / "dog" / "e.jpg", quality=90)
    rng_image(6, (20, 20), "L").save(root / "dog" / "f.jpeg")
    # JPEG's other endings (Windows saves web pictures as .jfif) were left out without a word; predict read them
    rng_image(7, (20, 20), "RGB").save(root / "cat" / "g.jfif", format="JPEG", quality=90)
    rng_image(8, (20, 20), "RGB").save(root / "dog" / "h.jpe", format="JPEG", quality=90)
    (root / "dog" / "notes.txt").write_text("not an image: ignored, counted and named")
    before = listing(root)
    data = load_dataset(f"folder:{root}", image_size=20)
    assert listing(root) == before  # nothing written into the data folder
    n = len(data.train_images) + len(data.test_images)
    assert n == 8 and data.channels == 3 and data.image_size == 20 and data.classes == ("cat", "dog")
    assert "ignored 1 non-image file" in data.description and "1/6" in data.description
    assert f"ignored 1 file(s) not of an image format read here (first: {root / 'dog' / 'notes.txt'}; " in \
        data.notices[0]
    (root / "dog" / "notes.txt").unlink()  # the decoded images come from the cache; the notice is of the folder now
    (root / "cat" / "LICENSE.txt").write_text("x")
    (root / "cat" / "README.txt").write_text("x")
    again = load_dataset(f"folder:{root}", image_size=20)
    assert f"ignored 2 file(s) not of an image format read here (first: {root / 'cat' / 'LICENSE.txt'}; " in \
        again.notices[0] and len(again.notices) == len(data.notices)
    everything = torch.cat([data.train_images, data.test_images])
    expected = {}
    for path in sorted(root.rglob("*")):
        if path.suffix == ".txt" or not path.is_file():
            continue
        with Image.open(path) as img:
            img = img.convert("RGBA").convert("RGB") if img.mode == "P" else img.convert("RGB")
            fit = img if img.size == (20, 20) else ImageOps.fit(img, (20, 20), method=Image.Resampling.BILINEAR)
            expected[path.name] = torch.from_numpy(np.asarray(fit).transpose(2, 0, 1).copy())
    found = [any(torch.equal(e, x) for x in everything) for e in expected.values()]
    assert all(found), dict(zip(expected, found, strict=True))
    # Lossless at its own size: a.png is exactly its pixels.
    assert any(torch.equal(x, torch.from_numpy(np.asarray(rng_image(1, (20, 20), "RGB")).transpose(2, 0, 1).copy()))
               for x in everything)


def test_channels_follow_the_data_or_the_option(tmp_path, home):
    write_classes(tmp_path / "grey", {"a": 6, "b": 6}, mode="L")
    grey = load_dataset(f"folder:{tmp_path / 'grey'}")
    assert grey.channels == 1 and len(grey.mean) == 1
    forced = load_dataset(f"folder:{tmp_path / 'grey'}", channels=3)
    assert forced.channels == 3 and torch.equal(forced.train_images[:, 1], grey.train_images[:, 0])
    write_classes(tmp_path / "rgb", {"a": 6, "b": 6}, mode="RGB")
    as_grey = load_dataset(f"folder:{tmp_path / 'rgb'}", channels=1)
    with Image.open(sorted((tmp_path / "rgb" / "a").iterdir())[0]) as img:
        luma = torch.from_numpy(np.asarray(img.convert("L")).copy())
    assert as_grey.channels == 1 and any(torch.equal(x[0], luma) for x in as_grey.train_images)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path, home):
    write_classes(tmp_path / "set", {"a": 6})
    deep = (np.arange(144, dtype=np.uint16).reshape(12, 12) * 455)  # 0 .. 65065
    Image.fromarray(deep).save(tmp_path / "set" / "a" / "deep.png")
    data = load_dataset(f"folder:{tmp_path / 'set'}")
    expected = torch.from_numpy(np.rint(deep / 257).astype(np.uint8))
    assert data.channels == 1
    assert any(torch.equal(x[0], expected) for x in torch.cat([data.train_images, data.test_images]))


def _tiff(path: Path, values: np.ndarray, mode: str) -> None:
    Image.fromarray(values, mode).save(path)


@pytest.mark.parametrize("dtype, mode, scale", [(np.float32, "F", 1.0), (np.float32, "F", 255.0),
                                                (np.int32, "I", 255.0), (np.int32, "I", 65535.0)])
def test_32_bit_grey_is_read_in_the_range_its_values_fit(tmp_path, home, dtype, mode, scale):
    # Pillow's convert("L") clips: a [0, 1] float image became black, a 16-bit one held as 32-bit integers white.
    write_classes(tmp_path / "set", {"a": 6})
    eight = (np.arange(144).reshape(12, 12) * 255 // 143).astype(np.uint8)  # 0 .. 255
    _tiff(tmp_path / "set" / "a" / "deep.tiff", (eight / 255 * scale).astype(dtype), mode)
    data = load_dataset(f"folder:{tmp_path / 'set'}")
    expected = torch.from_numpy(eight).int()
    assert any((x[0].int() - expected).abs().max() <= 1 for x in torch.cat([data.train_images, data.test_images]))


@pytest.mark.parametrize("values, found", [(np.array([[-1.0, 0.5]]), r"values in \[-1, 0.5\]"),
                                           (np.array([[0.0, 70000.0]]), r"values in \[0, 70000\]"),
                                           (np.array([[np.nan, 0.5]]), "NaN")])
def test_32_bit_grey_of_no_known_range_is_refused_by_name(tmp_path, home, values, found):
    write_classes(tmp_path / "set", {"a": 6})
    _tiff(tmp_path / "set" / "a" / "odd.tiff", np.tile(values, (8, 4)).astype(np.float32), "F")
    with pytest.raises(DataError, match=rf"odd.tiff: a 32-bit float grey image with {found}: expected values in"):
        load_dataset(f"folder:{tmp_path / 'set'}")
    data = load_dataset(f"folder:{tmp_path / 'set'}", skip_bad=True)
    assert len(data.train_images) + len(data.test_images) == 6


def test_default_image_size_is_the_median_shorter_side_capped(tmp_path, home, monkeypatch):
    root = tmp_path / "sizes"
    (root / "a").mkdir(parents=True)
    for i, (w, h) in enumerate([(16, 30), (24, 24), (40, 18), (60, 60), (22, 90), (19, 19)]):
        rng_image(i, (w, h), "L").save(root / "a" / f"{i}.png")
    write_classes(root, {"b": 6}, size=(21, 21))
    sides = sorted([16, 24, 18, 60, 22, 19] + [21] * 6)
    median_low = sides[(len(sides) - 1) // 2]
    assert load_dataset(f"folder:{root}").image_size == median_low
    monkeypatch.setattr(folder, "MAX_DEFAULT_SIZE", 17)
    assert load_dataset(f"folder:{root}").image_size == 17


def test_a_folder_framed_alike_by_the_words_of_another_file_is_read_from_one_entry(tmp_path, cache):
    """`eval` of torchvision's classifier by name and of a Hugging Face or timm file on a folder frame each picture
    by a ShorterSide whose `said` is only the page's words for who says so: the same framing is one cache entry,
    keyed as it was before those words existed (the same pixels were decoded again into a second entry for each
    file that says so, and an entry written before the words was not found)."""
    write_classes(tmp_path / "pics", {"a": 3, "b": 3}, size=(40, 30), mode="RGB")
    words = ("its weights' transforms() do", "timm's pretrained_cfg says")
    for said in words:
        fit = ShorterSide(27, "bicubic", said=said)
        load_dataset(f"folder:{tmp_path / 'pics'}", image_size=24, channels=3, fit=fit)
    assert len(list(cache.glob("*.json"))) == 1
    options = {"format": folder.FORMAT, "image_size": 24, "channels": 3, "skip_bad": False,
               "holdout": [folder.HOLDOUT, folder.HOLDOUT_SEED], "val": False,
               "fit": "ShorterSide(length=27, resample='bicubic', floor=False)"}  # the words before `said`
    files = folder._list((tmp_path / "pics").resolve())
    assert (cache / f"{folder._cache_key(files.root, files.train + files.test + files.val, options)}.json").is_file()


def test_a_folder_squashed_is_another_entry_than_one_cropped_by_the_shorter_side(tmp_path, cache):
    """timm's `squash` framing (both sides resized to the length, then the centre cropped) is another picture than
    the shorter side resized to the same length: a second cache entry, not the first one's pixels, and the framing
    of every other fit keeps its key."""
    write_classes(tmp_path / "pics", {"a": 3, "b": 3}, size=(40, 30), mode="RGB")
    cropped = load_dataset(f"folder:{tmp_path / 'pics'}", image_size=24, channels=3,
                           fit=ShorterSide(27, "bicubic", said="timm's pretrained_cfg says"))
    squashed = load_dataset(f"folder:{tmp_path / 'pics'}", image_size=24, channels=3,
                            fit=ShorterSide(27, "bicubic", said="timm's pretrained_cfg says", squash=True))
    assert len(list(cache.glob("*.json"))) == 2
    assert not torch.equal(cropped.train_images, squashed.train_images)
    first = next(path for path in sorted((tmp_path / "pics").rglob("*")) if path.is_file())
    picture = Image.open(first).convert("RGB").resize((27, 27), Image.Resampling.BICUBIC).crop((2, 2, 26, 26))
    assert any(np.array_equal(np.asarray(picture), image.permute(1, 2, 0).numpy())
               for image in torch.cat([squashed.train_images, squashed.test_images]))


def test_hold_out_is_stratified_and_stated(tmp_path, home):
    write_classes(tmp_path / "flat", {"a": 12, "b": 24, "c": 6})
    data = load_dataset(f"folder:{tmp_path / 'flat'}")
    assert torch.bincount(data.test_labels).tolist() == [2, 4, 1]  # 1/6 of each class
    assert torch.bincount(data.train_labels).tolist() == [10, 20, 5]
    assert "a seeded stratified 1/6" in data.description


@pytest.mark.parametrize("held", ["test", "val"])
def test_train_and_held_out_folders(tmp_path, home, held):
    write_classes(tmp_path / "split" / "train", {"a": 3, "b": 2})
    write_classes(tmp_path / "split" / held, {"a": 1, "b": 2}, seed=50)
    data = load_dataset(f"folder:{tmp_path / 'split'}")
    assert data.train_labels.tolist() == [0, 0, 0, 1, 1] and data.test_labels.tolist() == [0, 1, 1]
    assert f"test split: {held}/" in data.description


def test_held_out_copies_of_training_images_are_counted_in_a_notice(tmp_path, home):
    root = tmp_path / "set"
    write_classes(root / "train", {"a": 6, "b": 6})
    write_classes(root / "test", {"a": 3, "b": 3}, seed=50)
    assert not [n for n in load_dataset(f"folder:{root}").notices if "pixel for pixel" in n]
    shutil.copy(root / "train" / "b" / "002.png", root / "test" / "a" / "copy.png")  # a copy, even under another class
    shutil.copy(root / "train" / "a" / "001.png", root / "test" / "a" / "again.png")
    for _ in range(2):  # decoded, then from the cache
        [notice] = [n for n in load_dataset(f"folder:{root}").notices if "pixel for pixel" in n]
        assert notice.startswith("2 of 8 test images are pixel for pixel a training image as decoded (first: "
                                 "test/a/again.png = train/a/001.png)")


def test_a_class_without_test_images_is_named_in_a_notice(tmp_path, home):
    # A class of three photos beside classes of dozens: the drawn sixth held none of it out, and nothing said so
    # until eval showed "–" for its recall; a test/ folder without one of the classes is the same
    write_classes(tmp_path / "drawn", {"cat": 12, "dog": 12, "rare": 2})
    for _ in range(2):  # decoded, then from the cache
        data = load_dataset(f"folder:{tmp_path / 'drawn'}")
        assert 2 not in data.test_labels.tolist()  # the premise: the draw held out no "rare" image
        [notice] = [n for n in data.notices if "no test image" in n]
        assert notice == ("1 class has no test image (rare, 2 training images): its recall cannot be measured (– "
                          "in eval and the report); add images to it, or a test/ folder that holds it")
    write_classes(tmp_path / "set" / "train", {"a": 6, "b": 6, "c": 6})
    write_classes(tmp_path / "set" / "test", {"a": 2, "b": 2}, seed=50)
    [notice] = [n for n in load_dataset(f"folder:{tmp_path / 'set'}").notices if "no test image" in n]
    # the test/ folder is there: the class's folder goes in it ("a test/ folder that holds it" was advised)
    assert notice == ("1 class has no test image (c, 6 training images): its recall cannot be measured (– in eval "
                      "and the report); add its test images to test/ (as test/c/)")
    write_classes(tmp_path / "set" / "test", {"c": 2}, seed=70)
    assert not [n for n in load_dataset(f"folder:{tmp_path / 'set'}").notices if "no test image" in n]


def test_class_names_match_across_splits_in_either_unicode_form(tmp_path, home):
    # macOS writes "é" decomposed: a train/ made there and a test/ made elsewhere name the same class differently.
    nfd, nfc = unicodedata.normalize("NFD", "café"), unicodedata.normalize("NFC", "café")
    write_classes(tmp_path / "set" / "train", {nfd: 6, "tea": 6})
    write_classes(tmp_path / "set" / "test", {nfc: 3, "tea": 2})
    data = load_dataset(f"folder:{tmp_path / 'set'}")
    assert data.classes == (nfd, "tea")
    assert sorted(data.test_labels.tolist()) == [0, 0, 0, 1, 1]
    write_classes(tmp_path / "two", {nfd: 6, nfc: 6})
    with pytest.raises(DataError, match="are one name written in two Unicode forms"):
        load_dataset(f"folder:{tmp_path / 'two'}")


@pytest.mark.parametrize("names", [("Train", "Test", "Valid"), ("training", "testing", "validation"),
                                   ("train", "test", "valid")])
def test_split_folders_go_by_any_case_and_their_usual_names(tmp_path, home, names):
    # Train/ + Test/ were two classes, a "train vs test" classifier at 0.83; Roboflow's valid/ was dropped unsaid
    for name, n, seed in zip(names, (3, 2, 1), (0, 50, 90), strict=True):
        write_classes(tmp_path / "split" / name, {"a": n, "b": n}, seed=seed)
    data = load_dataset(f"folder:{tmp_path / 'split'}")
    assert data.classes == ("a", "b") and len(data.train_labels) == 6 and len(data.test_labels) == 4
    assert len(data.val_labels) == 2 and f"test split: {names[1]}/; validation split: {names[2]}/" in data.description


def test_train_val_and_test_folders_make_three_splits(tmp_path, home):
    for split, n, seed in (("train", 3, 0), ("test", 2, 50), ("val", 1, 90)):
        write_classes(tmp_path / "split" / split, {"a": n, "b": n}, seed=seed)
    for _ in range(2):  # decoded, then from the cache
        data = load_dataset(f"folder:{tmp_path / 'split'}")
        assert data.train_labels.tolist() == [0, 0, 0, 1, 1, 1] and data.test_labels.tolist() == [0, 0, 1, 1]
        assert data.val_labels.tolist() == [0, 1] and data.val_images.shape == (2, *data.train_images.shape[1:])
        assert "validation split: val/" in data.description
    files = sorted((tmp_path / "split" / "val").rglob("*.png"))  # class a's, then class b's
    decoded = [torch.tensor(folder._decode(f, data.image_size, data.channels)[0]) for f in files]
    assert torch.equal(data.val_images, torch.stack(decoded))


# -- the cache ----------------------------------------------------------------------------------------------------
def test_second_load_reads_the_cache_and_a_change_invalidates_it(tmp_path, cache, monkeypatch):
    write_classes(tmp_path / "set", {"a": 6, "b": 6})
    first = load_dataset(f"folder:{tmp_path / 'set'}")
    entries = sorted(p.suffix for p in cache.iterdir())
    assert entries == [".digests", ".json", ".names", ".u8"]

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although nothing changed")

    with monkeypatch.context() as patch:
        patch.setattr(folder, "_decode", no_decoding)
        second = load_dataset(f"folder:{tmp_path / 'set'}")
    assert torch.equal(second.train_images, first.train_images) and torch.equal(second.test_labels, first.test_labels)
    assert second.mean == first.mean and second.description == first.description
    rng_image(99, (12, 12), "L").save(tmp_path / "set" / "a" / "000.png")  # new content, size or mtime
    os.utime(tmp_path / "set" / "a" / "000.png", ns=(1, 1))
    third = load_dataset(f"folder:{tmp_path / 'set'}")
    assert not torch.equal(torch.cat([third.train_images, third.test_images]),
                           torch.cat([first.train_images, first.test_images]))
    assert len(list(cache.glob("*.u8"))) == 2  # a new entry; the old one stays valid for the old files


def test_a_file_rewritten_at_the_same_size_with_its_mtime_put_back_is_decoded_again(tmp_path, cache):
    # what cp -p, rsync -a, tar x or touch -r leave: the size and mtime of the old file, which keyed the cache alone
    write_classes(tmp_path / "set", {"a": 6, "b": 6}, ext="bmp")  # uncompressed: the same size for any pixels
    first = load_dataset(f"folder:{tmp_path / 'set'}")
    path = tmp_path / "set" / "a" / "000.bmp"
    stat, old = path.stat(), path.read_bytes()
    rng_image(99, (12, 12), "L").save(path)
    assert path.stat().st_size == stat.st_size and path.read_bytes() != old
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = load_dataset(f"folder:{tmp_path / 'set'}")
    assert not torch.equal(torch.cat([again.train_images, again.test_images]),
                           torch.cat([first.train_images, first.test_images]))


def test_cache_follows_cnnlab_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "elsewhere"))
    write_classes(tmp_path / "set", {"a": 6})
    load_dataset(f"folder:{tmp_path / 'set'}")
    assert len(list((tmp_path / "elsewhere" / "folders").glob("*.json"))) == 1


def test_a_cache_inside_the_data_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "set" / "cache"))
    write_classes(tmp_path / "set", {"a": 6})
    with pytest.raises(DataError, match="lies inside the data folder"):
        load_dataset(f"folder:{tmp_path / 'set'}")
    assert not (tmp_path / "set" / "cache").exists()


def test_damaged_cache_entry_is_decoded_again(tmp_path, cache):
    write_classes(tmp_path / "set", {"a": 6, "b": 6})
    first = load_dataset(f"folder:{tmp_path / 'set'}")
    (data_file,) = cache.glob("*.u8")
    data_file.write_bytes(data_file.read_bytes()[:-1])
    again = load_dataset(f"folder:{tmp_path / 'set'}")
    assert torch.equal(again.train_images, first.train_images)


def digests_of(images: torch.Tensor) -> torch.Tensor:
    """The digest of each image, hashed from its pixels (the oracle for the ones the cache keeps)."""
    return torch.tensor(np.array([np.frombuffer(image_digest(x), np.uint8) for x in images.numpy()]))


def test_the_cache_keeps_every_images_digest_and_a_reload_gives_the_same(tmp_path, cache):
    write_classes(tmp_path / "set" / "train", {"a": 6, "b": 6})
    write_classes(tmp_path / "set" / "test", {"a": 2, "b": 2}, seed=50)
    write_classes(tmp_path / "set" / "val", {"a": 2, "b": 1}, seed=90)
    shutil.copy(tmp_path / "set" / "train" / "a" / "001.png", tmp_path / "set" / "test" / "b" / "copy.png")
    for _ in range(2):  # decoded, then from the cache
        data = load_dataset(f"folder:{tmp_path / 'set'}")
        for split in ("train", "test", "val"):
            assert torch.equal(getattr(data, f"{split}_digests"), digests_of(getattr(data, f"{split}_images")))
    (stored,) = cache.glob("*.digests")
    assert stored.stat().st_size == 16 * (12 + 5 + 3)
    assert conform(data, image_size=6).train_digests is None  # other pixels: hashed again where needed


def test_an_entry_without_its_digests_as_the_format_before_wrote_it_is_decoded_again(tmp_path, cache, monkeypatch):
    write_classes(tmp_path / "set", {"a": 6, "b": 6})
    with monkeypatch.context() as patch:  # the entry the format before wrote: no digests beside it
        patch.setattr(folder, "FORMAT", 6)
        load_dataset(f"folder:{tmp_path / 'set'}")
    for stored in cache.glob("*.digests"):
        stored.unlink()
    decoded = []
    monkeypatch.setattr(folder, "_decode", lambda *args, real=folder._decode: decoded.append(1) or real(*args))
    data = load_dataset(f"folder:{tmp_path / 'set'}")
    assert len(decoded) == 12 and torch.equal(data.train_digests, digests_of(data.train_images))
    (stored,) = cache.glob("*.digests")
    stored.write_bytes(stored.read_bytes()[:-16])  # cut short: rows would pair digests with the wrong images
    data = load_dataset(f"folder:{tmp_path / 'set'}")
    assert len(decoded) == 24 and torch.equal(data.test_digests, digests_of(data.test_images))


def test_the_cache_keeps_every_images_file_in_order_and_names_an_older_entrys_without_decoding(tmp_path, cache,
                                                                                                monkeypatch):
    """The notice of images that are a run's training images named them by index: the cache kept no file names."""
    write_classes(tmp_path / "set" / "train", {"a": 3, "b": 2})
    write_classes(tmp_path / "set" / "test", {"a": 2, "b": 1}, seed=50)
    write_classes(tmp_path / "set" / "val", {"a": 1, "b": 2}, seed=90)
    root = tmp_path / "set"
    for _ in range(2):  # decoded, then from the cache
        data = load_dataset(f"folder:{root}")
        for split, images in (("train", data.train_images), ("test", data.test_images), ("val", data.val_images)):
            names = data.file_names(split)
            assert names == [f"set/{p.relative_to(root)}" for p in sorted((root / split).rglob("*.png"))]
            decoded = [torch.tensor(folder._decode(root / name.removeprefix("set/"), data.image_size,
                                                   data.channels)[0]) for name in names]
            assert torch.equal(images, torch.stack(decoded))  # each name is its image's file
    assert conform(data, image_size=6).file_names is data.file_names  # resized in the same order
    (names_file,) = cache.glob("*.names")
    names_file.unlink()  # an entry cached before the names were kept: named from the listing, not decoded again
    monkeypatch.setattr(folder, "_decode", lambda *args: pytest.fail("decoded again for its names"))
    assert load_dataset(f"folder:{root}").file_names("test") == ["set/test/a/000.png", "set/test/a/001.png",
                                                                 "set/test/b/000.png"]
    assert names_file.exists()


def test_each_entry_read_as_chosen_is_handed_the_files_it_was_decoded_from(monkeypatch):
    # an entry of a side not asked for is passed over, and the next one is read with the same files, as the first
    handed = []
    entry = SimpleNamespace(train_images=torch.zeros(1, 3, 5, 5))  # 5 px: not the 7 asked for
    monkeypatch.setattr(folder, "_read_cache", lambda *args: handed.append(args[-1]) or entry)
    monkeypatch.setattr(folder, "_cache_key", lambda root, files, options: repr(sorted(options.items())))
    files = folder._Stored([], [])
    assert folder._read_as_chosen(Path("cache"), Path("set"), [], {"image_size": 7, "channels": 3}, 224, "set", (),
                                  files) is None
    assert len(handed) > 1 and all(each is files for each in handed)


def test_an_older_entry_that_skipped_a_file_names_its_images_by_index_not_by_the_wrong_files(tmp_path, cache):
    write_classes(tmp_path / "set", {"a": 6, "b": 6})
    (tmp_path / "set" / "a" / "000.png").write_bytes(b"not a png")
    data = load_dataset(f"folder:{tmp_path / 'set'}", skip_bad=True)
    assert "set/a/000.png" not in data.file_names("train") + data.file_names("test")
    assert len(data.file_names("train")) == len(data.train_images)
    (names_file,) = cache.glob("*.names")
    names_file.unlink()  # which file was skipped is not kept: the files listed now are not its images
    assert load_dataset(f"folder:{tmp_path / 'set'}", skip_bad=True).file_names is None
    assert not names_file.exists()


# -- larger than memory -------------------------------------------------------------------------------------------
def test_over_the_limit_the_images_are_memory_mapped(tmp_path, home, monkeypatch):
    write_classes(tmp_path / "set", {"a": 12, "b": 12}, mode="RGB")
    in_memory = load_dataset(f"folder:{tmp_path / 'set'}")
    assert not in_memory.memory_mapped and not store.is_memory_mapped(in_memory.train_images)
    monkeypatch.setattr(store, "IN_MEMORY_BYTES", 1000)  # the set is 24 x 3 x 12 x 12 = 10,368 bytes
    mapped = load_dataset(f"folder:{tmp_path / 'set'}")
    assert mapped.memory_mapped and store.is_memory_mapped(mapped.train_images)
    assert store.is_memory_mapped(mapped.test_images) and "memory-mapped from" in mapped.description
    assert "10.4 kB decoded" in mapped.description
    assert torch.equal(mapped.train_images, in_memory.train_images)
    loaders = [DeviceLoader(d.train_images, d.train_labels, 5, shuffle=True, augment=True, seed=1)
               for d in (in_memory, mapped)]
    assert loaders[0].resident and not loaders[1].resident  # the mapped set is gathered batch by batch
    assert loaders[1].images.data_ptr() == mapped.train_images.data_ptr()
    for (xa, ya), (xb, yb) in zip(*loaders, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_a_containers_memory_limit_sets_what_is_memory_mapped(tmp_path, home, monkeypatch, version):
    # half the machine's RAM was the limit in a container (a Slurm or Kubernetes job) allowed far less: a set that
    # fitted the machine was read whole into a container of less, which the kernel killed
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    proc, root = tmp_path / "cgroup-of-self", tmp_path / "sys-fs-cgroup"
    if version == "v2":
        proc.write_text("0::/job/step\n")
        limit = root / "job" / "step" / "memory.max"
    else:
        proc.write_text("5:cpu,cpuacct:/job\n4:memory:/job\n")
        limit = root / "memory" / "job" / "memory.limit_in_bytes"
    limit.parent.mkdir(parents=True)
    monkeypatch.setattr(store, "PROC_CGROUP", proc, raising=False)
    monkeypatch.setattr(store, "CGROUP_ROOT", root, raising=False)
    monkeypatch.setattr(store, "IN_MEMORY_BYTES", None)
    write_classes(tmp_path / "set", {"a": 12, "b": 12}, mode="RGB")  # 10,368 bytes decoded
    limit.write_text("max\n" if version == "v2" else "9223372036854771712\n")  # no limit: the machine's RAM
    assert store.in_memory_limit() == physical // 2
    assert not load_dataset(f"folder:{tmp_path / 'set'}").memory_mapped
    limit.write_text("20000\n")
    assert store.in_memory_limit() == 10000
    assert load_dataset(f"folder:{tmp_path / 'set'}").memory_mapped


def test_a_folder_scored_whole_is_a_view_of_its_decoded_images_not_a_copy(tmp_path, home, monkeypatch):
    # eval of a folder without test/ scored torch.cat of its two splits: twice the decoded bytes in memory (4,000
    # photos at 224 px: 1.9 GB against 1.3 GB), and a memory-mapped set read whole into memory
    write_classes(tmp_path / "set", {"a": 12, "b": 12}, mode="RGB")
    for limit in (None, 1000):  # in memory, then memory-mapped
        monkeypatch.setattr(store, "IN_MEMORY_BYTES", limit)
        data = load_dataset(f"folder:{tmp_path / 'set'}")
        images, labels, scored = scored_images({}, data)
        assert scored.startswith("all 24 images of folder:")
        assert images.untyped_storage().data_ptr() == data.train_images.untyped_storage().data_ptr()
        assert store.is_memory_mapped(images) == (limit is not None)
        assert torch.equal(images, torch.cat([data.train_images, data.test_images]))
        assert torch.equal(labels, torch.cat([data.train_labels, data.test_labels]))
    apart = [torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.ones(1, 1, 3, 3, dtype=torch.uint8)]
    assert torch.equal(store.joined(*apart), torch.cat(apart))  # not in one storage: copied


def test_not_enough_disk_for_the_decoded_set_is_refused(tmp_path, home, monkeypatch):
    write_classes(tmp_path / "set", {"a": 6})

    class Usage:
        free = 100

    monkeypatch.setattr(store.shutil, "disk_usage", lambda path: Usage)
    with pytest.raises(DataError, match="decoding needs 864 B in the cache folder .* which has 100 B free; pass a "
                                        "smaller --image-size"):
        load_dataset(f"folder:{tmp_path / 'set'}")


# -- bad input ----------------------------------------------------------------------------------------------------
def one_line(call) -> str:
    with pytest.raises(CnnlabError) as error:
        call()
    assert "\n" not in str(error.value)
    return str(error.value)


def test_missing_path_or_a_file(tmp_path, home):
    assert "does not exist" in one_line(lambda: load_dataset(f"folder:{tmp_path / 'nope'}"))
    (tmp_path / "f.png").write_bytes(b"x")
    assert "is a file" in one_line(lambda: load_dataset(f"folder:{tmp_path / 'f.png'}"))
    assert "needs a path" in one_line(lambda: load_dataset("folder:"))
    assert "names its folder itself" in one_line(lambda: load_dataset(f"folder:{tmp_path}", tmp_path))


def test_no_class_subfolders(tmp_path, home):
    (tmp_path / "loose").mkdir()
    rng_image(0, (8, 8), "L").save(tmp_path / "loose" / "x.png")
    message = one_line(lambda: load_dataset(f"folder:{tmp_path / 'loose'}"))
    assert "no class subfolders, found 1 image(s) directly in it" in message
    (tmp_path / "empty").mkdir()
    assert "no class subfolders, found none" in one_line(lambda: load_dataset(f"folder:{tmp_path / 'empty'}"))


def test_a_class_without_images(tmp_path, home):
    write_classes(tmp_path / "set", {"a": 6})
    (tmp_path / "set" / "b").mkdir()
    (tmp_path / "set" / "b" / "readme.txt").write_text("hi")
    message = one_line(lambda: load_dataset(f"folder:{tmp_path / 'set'}"))
    assert str(tmp_path / "set" / "b") in message and "class 'b' has no images" in message


def test_held_out_class_unknown_to_training(tmp_path, home):
    write_classes(tmp_path / "s" / "train", {"a": 2})
    write_classes(tmp_path / "s" / "test", {"a": 1, "zebra": 1})
    message = one_line(lambda: load_dataset(f"folder:{tmp_path / 's'}"))
    assert "class 'zebra' is not among the training classes" in message


@pytest.mark.parametrize("damage", ["not an image", "truncated", "empty"])
def test_bad_file_is_named_or_skipped_with_a_count(tmp_path, home, damage):
    write_classes(tmp_path / "set", {"a": 6, "b": 6})
    bad = tmp_path / "set" / "b" / "bad.png"
    if damage == "not an image":
        bad.write_text("<html>404</html>")
    elif damage == "truncated":
        rng_image(7, (64, 64), "RGB").save(bad)
        bad.write_bytes(bad.read_bytes()[:-200])
    else:
        bad.write_bytes(b"")
    before = listing(tmp_path / "set")
    message = one_line(lambda: load_dataset(f"folder:{tmp_path / 'set'}"))
    assert str(bad) in message and "skip_bad=True" in message and "pass --skip-bad-images" in message
    data = load_dataset(f"folder:{tmp_path / 'set'}", skip_bad=True)
    assert len(data.train_labels) + len(data.test_labels) == 12 and "skipped 1 unreadable file(s)" in data.description
    assert listing(tmp_path / "set") == before


def test_symlink_loops_are_refused(tmp_path, home):
    write_classes(tmp_path / "set", {"a": 6})
    (tmp_path / "set" / "a" / "again").symlink_to(tmp_path / "set" / "a")
    assert "symlink loop" in one_line(lambda: load_dataset(f"folder:{tmp_path / 'set'}"))
    (tmp_path / "set" / "a" / "again").unlink()
    (tmp_path / "set" / "a" / "self.png").symlink_to(tmp_path / "set" / "a" / "self.png")
    message = one_line(lambda: load_dataset(f"folder:{tmp_path / 'set'}"))
    assert str(tmp_path / "set" / "a" / "self.png") in message and "cannot read" in message


def test_too_few_images_to_hold_out(tmp_path, home):
    write_classes(tmp_path / "set", {"a": 1, "b": 1})
    message = one_line(lambda: load_dataset(f"folder:{tmp_path / 'set'}"))
    assert "too few to hold out a test split" in message and "test/<class>/" in message


@pytest.mark.parametrize("kwargs", [dict(image_size=0), dict(image_size=2.5), dict(channels=2)])
def test_bad_options(tmp_path, home, kwargs):
    write_classes(tmp_path / "set", {"a": 6})
    one_line(lambda: load_dataset(f"folder:{tmp_path / 'set'}", **kwargs))


def test_a_model_takes_its_classes_in_either_unicode_form():
    nfd, nfc = unicodedata.normalize("NFD", "café"), unicodedata.normalize("NFC", "café")
    meta = Meta("lenet", "folder:/x", (nfd, "tea"), 1, 12, 12, None, None, True, False)
    check_same_classes(meta, (nfc, "tea"), "dataset folder:/y")
    with pytest.raises(CnnlabError, match=r"dataset folder:/y has 2 classes \(tea, café\)"):
        check_same_classes(meta, ("tea", nfc), "dataset folder:/y")


# The first bytes of an iPhone's HEIC photo: an ISO file whose ftyp box names the HEIF brand "heic".
HEIC_HEAD = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"


def test_an_iphones_heic_photos_are_named_with_how_to_read_them(tmp_path, home, heif_absent):
    root = tmp_path / "pets"
    write_classes(root, {"cat": 6, "dog": 6})
    (root / "cat" / "IMG_0001.HEIC").write_bytes(HEIC_HEAD + bytes(64))
    (root / "cat" / "notes.txt").write_text("x")
    data = load_dataset(f"folder:{root}", image_size=16)
    assert data.notices[0].endswith("; 1 of them is a HEIC photo (an iPhone's format), not read here: pip install "
                                    "\"cnnlab[heic]\" to read it, or save it as JPEG (on the iPhone: Settings > "
                                    "Camera > Formats > Most Compatible)")
    (root / "bird").mkdir()  # a class of HEIC photos alone: its refusal says what they are
    for k in range(3):
        (root / "bird" / f"IMG_{k}.heic").write_bytes(HEIC_HEAD + bytes(64))
    with pytest.raises(DataError, match=r"class 'bird' has no images \(expected files ending in .*\); they are HEIC "
                                        r"photos \(an iPhone's format\), not read here: pip install "
                                        r"\"cnnlab\[heic\]\" to read them, or save them as JPEG"):
        load_dataset(f"folder:{root}", image_size=16)


def test_a_readers_mapped_reads_leave_another_threads_loads_in_memory(tmp_path):
    """The explorer reads a run's test images mapped in a worker thread; a set loaded meanwhile in another thread (a
    run training in the same process) is read into memory as ever, not mapped because of the reader."""
    path = tmp_path / "images.raw"
    store.write_raw(path, 64, lambda array: (array.__setitem__(slice(None), 7), 64)[1])
    inside, beside = threading.Event(), threading.Event()
    seen = {}

    def reader():
        with store.mapped_reads():
            seen["reader"] = store.is_memory_mapped(store.open_raw(path, (4, 16)))
            inside.set()
            beside.wait(30)

    thread = threading.Thread(target=reader)
    thread.start()
    assert inside.wait(30)
    seen["other"] = store.is_memory_mapped(store.open_raw(path, (4, 16)))  # while the reader is still inside
    beside.set()
    thread.join(30)
    assert seen == {"reader": True, "other": False}


def test_a_decode_killed_midway_leaves_no_temporary_file_once_the_folder_is_decoded(tmp_path, home):
    """SIGKILL (the OOM killer's) during a folder's first decode left the cache's hidden temporary file, the size of
    the images decoded, for good: the next run decodes the folder whole and no later one decodes it again. The next
    decode removes it; a file another process is writing is left alone."""
    import fcntl
    import subprocess
    import sys
    import textwrap

    write_classes(tmp_path / "pics", {"cat": 6, "dog": 6}, size=(20, 16))
    script = textwrap.dedent(f"""
        import os, signal
        from cnnlab.data import folder, load_dataset
        decode, seen = folder._decode, []
        def dying(*args):
            seen.append(1)
            if len(seen) == 5:
                os.kill(os.getpid(), signal.SIGKILL)
            return decode(*args)
        folder._decode = dying
        load_dataset("folder:{tmp_path / 'pics'}", image_size=16)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120, env=os.environ)
    assert proc.returncode == -9, proc.stderr.decode()
    cache = home / ".cache" / "cnnlab" / "folders"
    [left] = [p for p in cache.iterdir() if p.name.endswith(".tmp")]
    assert left.stat().st_size > 0
    # another process writing an entry of the same name (a sweep's second worker): locked, so it stays
    writing = left.with_name(left.name.replace(left.name.split(".")[-2], "w0rk1ng"))
    writing.write_bytes(bytes(64))
    with open(writing, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        data = load_dataset(f"folder:{tmp_path / 'pics'}", image_size=16)
        assert sorted(p.name for p in cache.iterdir() if p.name.endswith(".tmp")) == [writing.name]
    assert len(data.train_images) + len(data.test_images) == 12


def test_the_zip_metadata_folder_macos_adds_is_no_class(tmp_path, home):
    """A folder unzipped from a Mac's zip holds __MACOSX/, its AppleDouble "._" files mirroring each class folder:
    training refused it as "class '__MACOSX' has no images (expected files ending in ...)", a line that said
    neither what it is nor what to do. It is passed over, as a hidden folder is."""
    write_classes(tmp_path / "pics", {"cat": 6, "dog": 6}, size=(20, 16))
    for where in (tmp_path / "pics" / "__MACOSX" / "cat", tmp_path / "pics" / "dog" / "__MACOSX"):
        where.mkdir(parents=True)
        (where / "._000.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))  # AppleDouble's magic number
    data = load_dataset(f"folder:{tmp_path / 'pics'}", image_size=16)
    assert data.classes == ("cat", "dog") and len(data.train_images) + len(data.test_images) == 12


def test_a_folder_decoded_as_the_loader_chose_is_not_decoded_again_when_the_same_is_asked_for(tmp_path, home,
                                                                                              monkeypatch):
    """A run lets the loader choose the channels (and perhaps the side); eval of its export names both, as its input
    takes them: a second cache entry of the same pixels was decoded, the whole folder again (gigabytes and minutes
    for a folder of photos). The entry the loader chose serves a request for what it chose; any other is decoded."""
    write_classes(tmp_path / "pics", {"cat": 6, "dog": 6}, size=(20, 16), mode="RGB")
    root = f"folder:{tmp_path / 'pics'}"
    chosen = load_dataset(root)  # the side (the median, 16) and the channels (3) left to the loader
    cache = home / ".cache" / "cnnlab" / "folders"
    entries = sorted(p.name for p in cache.iterdir())
    decoded, decode = [], folder._decode_all
    monkeypatch.setattr(folder, "_decode_all", lambda *a, **k: decoded.append(a) or decode(*a, **k))
    for asked in ({"image_size": 16}, {"channels": 3}, {"image_size": (16, 16), "channels": 3}):
        again = load_dataset(root, **asked)
        assert torch.equal(again.train_images, chosen.train_images) and again.mean == chosen.mean, asked
        assert torch.equal(again.test_images, chosen.test_images) and again.held_out == chosen.held_out
    assert decoded == [] and sorted(p.name for p in cache.iterdir()) == entries
    grey = load_dataset(root, channels=1)  # not what the loader chose: decoded
    assert len(decoded) == 1 and grey.train_images.shape[1] == 1

