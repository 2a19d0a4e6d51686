"""benchmarks/folder_vs_idx.py: the PNG export, the exactness check it reports, and a --quick run so it cannot rot.

The script lives in benchmarks/ (not shipped), so it is loaded from its file. No figure it measures is asserted.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import load_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "folder_vs_idx.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("cnnlab_folder_vs_idx", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fvi = _load_script()


def test_folder_names_sort_in_label_order():
    assert fvi.folder_names(("ant", "bee", "cat")) == ("ant", "bee", "cat")
    named = fvi.folder_names(("t-shirt", "trouser", "pullover", "dress"))
    assert named == ("0-t-shirt", "1-trouser", "2-pullover", "3-dress")
    twelve = fvi.folder_names(tuple(f"c{11 - i}" for i in range(12)))  # reverse-sorted names, two-digit labels
    assert sorted(twelve) == list(twelve) and twelve[0] == "00-c11" and twelve[11] == "11-c0"
    assert fvi.folder_names(("t-shirt/top", "trouser")) == ("t-shirt-top", "trouser")


def _synthetic(n_train: int = 40, n_test: int = 20, side: int = 8) -> SimpleNamespace:
    g = torch.Generator().manual_seed(0)
    return SimpleNamespace(
        classes=("zebra", "ant", "moth"),  # unsorted: the export must prefix them
        train_images=torch.randint(0, 256, (n_train, 1, side, side), generator=g, dtype=torch.uint8),
        train_labels=torch.randint(0, 3, (n_train,), generator=g),
        test_images=torch.randint(0, 256, (n_test, 1, side, side), generator=g, dtype=torch.uint8),
        test_labels=torch.randint(0, 3, (n_test,), generator=g))


def _export(data: SimpleNamespace, root: Path, per_class=(None, None)) -> dict:
    names = fvi.folder_names(data.classes)
    indices = {}
    for split, keep in zip(fvi.SPLITS, per_class, strict=True):
        labels = getattr(data, f"{split}_labels")
        indices[split] = fvi.export_indices(labels, keep)
        fvi.export_pngs(getattr(data, f"{split}_images"), labels, indices[split], root / split, names)
    return indices


def test_exported_folder_decodes_to_the_same_images(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    data = _synthetic()
    indices = _export(data, tmp_path / "png")
    folder = load_dataset(f"folder:{tmp_path / 'png'}")
    assert folder.classes == ("0-zebra", "1-ant", "2-moth")
    assert fvi.same_data(folder, data, indices) == {"train": True, "test": True}
    # The folder lists images class by class, so without the reordering the comparison would not hold.
    assert not torch.equal(folder.train_images, data.train_images)


def test_subset_export_keeps_the_first_of_each_class(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    data = _synthetic()
    indices = _export(data, tmp_path / "png", per_class=(3, 2))
    for split, keep in zip(fvi.SPLITS, (3, 2), strict=True):
        labels = getattr(data, f"{split}_labels")
        expected = sorted(i for c in range(3) for i in torch.nonzero(labels == c).flatten()[:keep].tolist())
        assert indices[split].tolist() == expected
    assert fvi.same_data(load_dataset(f"folder:{tmp_path / 'png'}"), data, indices) == {"train": True, "test": True}


def test_a_changed_pixel_or_label_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "cache"))
    data = _synthetic()
    indices = _export(data, tmp_path / "png")
    first = sorted((tmp_path / "png" / "test").glob("*/*.png"))[0]
    pixels = torch.from_numpy(np.array(Image.open(first)))
    pixels[0, 0] ^= 1
    Image.fromarray(pixels.numpy(), mode="L").save(first)
    assert fvi.same_data(load_dataset(f"folder:{tmp_path / 'png'}"), data, indices) == {"train": True, "test": False}
    moved = sorted((tmp_path / "png" / "train" / "0-zebra").glob("*.png"))[0]
    moved.rename(tmp_path / "png" / "train" / "1-ant" / moved.name)  # right pixels, wrong class
    assert not fvi.same_data(load_dataset(f"folder:{tmp_path / 'png'}"), data, indices)["train"]


def test_existing_outputs_are_refused(tmp_path):
    taken = tmp_path / "taken.json"
    taken.write_text("{}")
    with pytest.raises(SystemExit, match="--json-out .* exists"):
        fvi.main(["--source", str(tmp_path), "--json-out", str(taken)])
    with pytest.raises(SystemExit, match="--workdir .* exists"):
        fvi.main(["--source", str(tmp_path), "--workdir", str(tmp_path)])
    assert taken.read_text() == "{}"


@pytest.mark.slow  # two `cnnlab train` processes: about a minute on the shared 2-core machine
def test_quick_run(tmp_path, data_dir):
    out, workdir = tmp_path / "result.json", tmp_path / "png"
    env = {**os.environ, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--source", str(data_dir), "--workdir",
                           str(workdir), "--json-out", str(out)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result == json.loads(done.stdout)
    assert result["images"] == {"train": 200, "test": 100}
    assert {k: result["exact"][k] for k in ("train", "test", "classes")} == {"train": True, "test": True,
                                                                             "classes": True}
    assert result["classes"]["folder"][0] == "0-t-shirt" and result["classes"]["idx"][0] == "t-shirt"
    assert [r["side"] for r in result["runs"]] == ["idx", "folder"]
    assert all(0 <= r["test_acc"] <= 1 and r["images_per_s"] > 0 for r in result["runs"])
    assert result["runs"][1]["dataset"] == "folder:" + str(workdir.resolve())
    assert result["decode_s"] > 0 and len(result["cached_load_s"]["runs"]) == 3
    # The PNGs and the scratch folder (decode cache, run folders) are gone. torch may leave its own
    # torchinductor_<user> cache in $TMPDIR; that is not the script's.
    assert not workdir.exists() and not list(tmp_path.glob("cnnlab-folder-vs-idx-*"))
