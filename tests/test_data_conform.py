"""A registered dataset at another image size or channel count (`cnnlab.data.dataset.conform`), and its readers.

Training converts every split and takes its statistics from the converted training images; a reader of the test
images alone (eval, report, the explorer's test set, an export's check) converts only those, since the checkpoint
normalises with its own statistics: Fashion-MNIST at 224 px was 3 GB of converted training images to score 10,000
test images. Small IDX files under MNIST's name stand in for the real data; ``_convert`` is counted.
"""

import dataclasses

import pytest
import torch

import data_support
from cnnlab import cli
from cnnlab.data import channel_stats, dataset, idx_family, load_dataset
from cnnlab.evaluate import evaluate_checkpoint
from cnnlab.explore.evaluation import evaluate_any
from cnnlab.explore.trained import load_test_set
from cnnlab.export import export_checkpoint, verification_images
from cnnlab.inference import load_trained
from cnnlab.report import write_report
from data_support import idx_arrays, write_idx_files

home = data_support.home  # a fixture
N_TRAIN, N_TEST, SIZE = 60, 20, 14


@pytest.fixture
def converted(tmp_path, monkeypatch, home):
    """MNIST's table describing small files in ``tmp_path / "mnist"``, and a list of the image counts each call of
    the conversion converts, from an empty conversion cache; returns (folder, that list)."""
    folder = tmp_path / "mnist"
    sums = write_idx_files(folder, idx_arrays(N_TRAIN, N_TEST, seed=3))
    monkeypatch.setitem(idx_family.SPECS, "mnist", dataclasses.replace(
        idx_family.SPECS["mnist"], files=sums, counts=(N_TRAIN, N_TEST)))
    counts: list[int] = []
    convert = dataset._convert

    def counted(images, size, chans):
        counts.append(len(images))
        return convert(images, size, chans)

    monkeypatch.setattr(dataset, "_convert", counted)
    dataset._converted.cache_clear()
    yield folder, counts
    dataset._converted.cache_clear()  # values of files this test made: no later test is handed them


def _train(folder, out, *flags):
    code = cli.main(["train", "lenet-relu", "--dataset", "mnist", "--data-dir", str(folder), "--image-size",
                     str(SIZE), "--epochs", "1", "--batch-size", "16", "--no-report", "--out", str(out), "--quiet",
                     *flags])
    assert code == 0
    return out


def test_a_load_for_the_test_split_converts_no_training_image_and_the_cache_keeps_the_two_apart(converted):
    folder, counts = converted
    test_only = load_dataset("mnist", folder, image_size=SIZE, channels=3, training=False)
    assert counts == [N_TEST]
    assert test_only.train_images.shape == (0, 3, SIZE, SIZE) and len(test_only.train_labels) == 0
    assert test_only.channels == 3 and test_only.image_size == SIZE and test_only.test_images.shape[0] == N_TEST
    assert all(v != v for v in test_only.mean + test_only.std)  # NaN: nothing computed them
    # a caller of the training images after it is handed them all, with their statistics, as training always was
    full = load_dataset("mnist", folder, image_size=SIZE, channels=3)
    assert full is not test_only and counts == [N_TEST, N_TRAIN, N_TEST]
    assert full.train_images.shape == (N_TRAIN, 3, SIZE, SIZE) and len(full.train_labels) == N_TRAIN
    assert (full.mean, full.std) == channel_stats(full.train_images)
    assert torch.equal(full.test_images, test_only.test_images)  # one conversion for both
    assert load_dataset("mnist", folder, image_size=SIZE, channels=3) is full  # each still cached
    assert load_dataset("mnist", folder, image_size=SIZE, channels=3, training=False) is test_only
    assert len(counts) == 3


def test_eval_report_explorer_and_export_check_of_a_converted_run_convert_its_test_images_alone(converted, tmp_path):
    folder, counts = converted
    run = _train(folder, tmp_path / "run", "--channels", "3")
    best = run / "best.pt"
    onnx = export_checkpoint(best, tmp_path / "run.onnx", format="onnx")  # read at its dataset's own size, in RGB
    # the oracle: the same test images through the full conversion training does
    dataset._converted.cache_clear()
    full = load_dataset("mnist", folder, image_size=SIZE, channels=3)
    trained = load_trained(best)
    expected = torch.bincount(full.test_labels * 10 + trained.logits(full.test_images).argmax(1), minlength=100)
    readers = {"eval": lambda: evaluate_checkpoint(best, device="cpu"),
               "report": lambda: write_report(run, device="cpu"),
               "explorer": lambda: load_test_set(trained),
               "export --verify": lambda: verification_images(best, 8),
               "eval of an export": lambda: evaluate_any(onnx, data_dir=folder)}
    converts = {}
    for name, read in readers.items():
        dataset._converted.cache_clear()
        counts.clear()
        read()
        converts[name] = list(counts)
    assert converts == {name: [N_TEST] for name in readers}
    result = evaluate_checkpoint(best, device="cpu")
    assert result.n == N_TEST and torch.equal(result.confusion.flatten(), expected)


def test_what_reads_the_training_images_of_a_converted_run_still_gets_them(converted, tmp_path):
    """The report of a --val-split run says which validation images it drew are training images too, drawing that
    split again from the training images at the run's size; an int8 export calibrates on training images."""
    folder, counts = converted
    run = _train(folder, tmp_path / "run", "--val-split", "10")
    dataset._converted.cache_clear()
    counts.clear()
    write_report(run, device="cpu")
    assert counts == [N_TRAIN, N_TEST]
    dataset._converted.cache_clear()
    counts.clear()
    out = export_checkpoint(run / "best.pt", tmp_path / "int8.onnx", format="onnx-int8", calibration=16)
    assert counts == [N_TRAIN, N_TEST] and out.is_file()
