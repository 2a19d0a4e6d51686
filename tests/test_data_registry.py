"""The dataset registry: names, info, unknown names with a suggestion, `cnnlab datasets`, the ImageDataset checks."""

from __future__ import annotations

import pytest
import torch

from cli_support import fresh_python
from cnnlab import cli
from cnnlab.data import (
    ImageDataset,
    cifar,
    dataset_info,
    datasets_table,
    idx_family,
    list_datasets,
    load_dataset,
    register_dataset,
)
from cnnlab.errors import CnnlabError

OWN = ["fashion-mnist", "mnist", "kmnist", "cifar10", "cifar100", "folder:PATH"]


def test_names_in_registration_order():
    assert list_datasets() == OWN
    assert list_datasets("*mnist") == ["fashion-mnist", "mnist", "kmnist"]


@pytest.mark.parametrize("first", ["cnnlab.data.cifar", "cnnlab.data.folder", "cnnlab.data.fashion_mnist",
                                   "cnnlab.d2l", "cnnlab.data.registry"])
def test_the_listing_keeps_its_order_whichever_source_is_imported_first(first):
    """The package loads its modules on first use, so a source may register before the ones listed above it."""
    script = (f"import {first}\n"
              "from cnnlab.data import list_datasets, register_dataset\n"
              "register_dataset('mine', lambda root, **options: None, classes=2, channels=1, image_size=8, train=1, "
              "test=1, source='here', flip=False)\n"
              "print(','.join(list_datasets()))\n")
    assert fresh_python(script).stdout.split() == [",".join([*OWN, "mine"])]


def test_info_comes_from_the_sources_tables():
    for name, spec in idx_family.SPECS.items():
        info = dataset_info(name)
        assert (info.classes, info.channels, info.image_size) == (len(spec.classes), 1, 28)
        assert (info.train, info.test, info.flip, info.source) == (*spec.counts, spec.flip, spec.mirrors[0])
    for name, spec in cifar.SPECS.items():
        info = dataset_info(name)
        assert (info.classes, info.channels, info.image_size, info.train, info.test) == (
            spec.num_classes, 3, 32, *spec.counts)
        assert info.flip and info.source.endswith(spec.archive)
    pets = dataset_info("folder:~/pets")
    assert pets.name == "folder:~/pets" and pets.source == "~/pets" and pets.classes is None and pets.flip


@pytest.mark.parametrize("name, hint", [
    ("mnsit", "did you mean 'mnist'?"), ("CIFAR10", "did you mean 'cifar10'?"), ("fashion_mnist", "'fashion-mnist'"),
    ("imagenet", ""), ("folder", "did you mean 'folder:PATH'?"),
])
def test_unknown_names_list_the_known_ones(name, hint):
    with pytest.raises(CnnlabError) as error:
        load_dataset(name)
    message = str(error.value)
    assert "\n" not in message and f"unknown dataset {name!r}; expected one of: " + ", ".join(list_datasets()) \
        in message
    assert hint in message and (hint or "did you mean" not in message)


def test_a_bare_folder_name_suggests_the_folder_prefix(tmp_path):
    with pytest.raises(CnnlabError, match=f"did you mean 'folder:{tmp_path}'"):
        load_dataset(str(tmp_path))


def test_register_twice_is_refused():
    with pytest.raises(RuntimeError, match="registered twice"):
        register_dataset("mnist", lambda root, **kw: None, classes=1, channels=1, image_size=1, train=1, test=1,
                         source="", flip=False)


def test_table_has_a_row_per_dataset_with_its_info():
    lines = datasets_table().splitlines()
    assert lines[0].split() == ["name", "classes", "channels", "size", "train", "test", "flip", "source"]
    assert len(lines) == len(list_datasets()) + 1
    for line, name in zip(lines[1:], list_datasets(), strict=True):
        info = dataset_info(name)
        cells = line.split()
        shown = ["-" if v is None else str(v) for v in (info.classes, info.channels, info.image_size, info.train,
                                                          info.test)]
        assert cells[:7] == [name, *shown, "yes" if info.flip else "no"] and info.source.split()[0] in line


def test_cli_lists_the_datasets(capsys):
    assert cli.main(["datasets"]) == 0
    assert capsys.readouterr().out.strip() == datasets_table()


def test_cli_unknown_dataset_is_one_line(capsys, monkeypatch):
    """What the Trainer's --dataset gets: the CLI prints the registry's one line and exits 2."""
    def train(*args, **kwargs):
        load_dataset("mnsit")

    monkeypatch.setattr(cli, "_cmd_datasets", train)
    assert cli.main(["datasets"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "did you mean 'mnist'?" in err[0]


def images(n: int, c: int = 1, size: int = 4) -> torch.Tensor:
    return torch.zeros(n, c, size, size, dtype=torch.uint8)


@pytest.mark.parametrize("change, message", [
    (dict(train_images=torch.zeros(3, 4, 4, dtype=torch.uint8)), "N x C x H x W"),
    # another height and width is a folder's for a model of that input (eval), the test images' shape as well
    (dict(train_images=torch.zeros(3, 1, 4, 5, dtype=torch.uint8)), "differ in shape"),
    (dict(train_images=torch.zeros(3, 1, 4, 4)), "uint8"),
    (dict(train_labels=torch.zeros(2, dtype=torch.int64)), "int64 of shape \\(3,\\)"),
    (dict(test_labels=torch.zeros(2, dtype=torch.int32)), "int64"),
    (dict(test_images=images(2, size=5)), "differ in shape"),
    (dict(mean=(0.5, 0.5)), "one value per channel"),
    # a subset of the images with the digests of all of them: the training-image check would pair the wrong ones
    (dict(train_digests=torch.zeros(4, 16, dtype=torch.uint8)), "train_digests must be uint8 of shape \\(3, 16\\)"),
    (dict(test_digests=torch.zeros(2, 8, dtype=torch.uint8)), "test_digests must be uint8 of shape \\(2, 16\\)"),
])
def test_image_dataset_checks_its_fields(change, message):
    fields = dict(name="t", train_images=images(3), train_labels=torch.zeros(3, dtype=torch.int64),
                  test_images=images(2), test_labels=torch.zeros(2, dtype=torch.int64), classes=("a",),
                  mean=(0.5,), std=(0.25,), flip=False)
    ok = ImageDataset(**fields)
    assert (ok.channels, ok.image_size, ok.num_classes) == (1, 4, 1)
    with pytest.raises(CnnlabError, match=message):
        ImageDataset(**(fields | change))
