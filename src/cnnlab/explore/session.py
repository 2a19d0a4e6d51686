"""What the server keeps between requests: loaded models, test sets and per-run derived data.

Models are cached by checkpoint path and modification time (a run still training replaces ``last.pt`` every
epoch, and the next request then sees the new weights), test sets by dataset and settings: the ``MAX_MODELS`` used
last of each. Each entry is built once under a lock, so a burst of requests for a run that is not loaded yet loads
it once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cnnlab.data.split import sample_indices
from cnnlab.errors import CnnlabError
from cnnlab.explore import runs
from cnnlab.explore.images import thumbnail_url
from cnnlab.explore.trained import TestSet, load_test_set, load_trained, test_set_key
from cnnlab.runs import CHECKPOINTS

MAX_MODELS = 4
PICKS_PER_CLASS, MISTAKES, MISTAKE_POOL = 6, 16, 2000
# The most classes whose pictures come with the gallery. Past it each class's come when the page shows that class
# (gallery(name, cls)): 1,000 classes of 224-px photos were 6,000 PNGs in one answer, over a gigabyte of JSON.
GALLERY_CLASSES = 20


@dataclass
class Loaded:
    """A run's trained model and what is derived from it once."""

    trained: Any
    checkpoint: Path
    extras: dict[str, Any] = field(default_factory=dict)


class Session:
    """The explorer's state for one root folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise CnnlabError(f"{root} is not a folder (expected a runs folder or one run folder)")
        self._models: OrderedDict[tuple[str, int], Loaded] = OrderedDict()
        self._test_sets: OrderedDict[tuple, TestSet] = OrderedDict()
        self._lock = threading.Lock()
        # key -> (its lock, the callers holding or waiting for it): a key's entry goes with its last caller, since
        # every checkpoint a run in training writes is a new key (one a minute, for as long as the page is open)
        self._building: dict[Any, tuple[threading.Lock, int]] = {}

    def _once(self, key: Any, build):
        """``build()`` at most once at a time per key (other callers wait for it)."""
        with self._lock:
            lock, callers = self._building.get(key, (threading.Lock(), 0))
            self._building[key] = lock, callers + 1
        try:
            with lock:
                return build()
        finally:
            with self._lock:
                lock, callers = self._building.pop(key)
                if callers > 1:
                    self._building[key] = lock, callers - 1

    def _keep(self, cache: OrderedDict, key: Any, value: Any) -> Any:
        """Put ``value`` in ``cache`` as its newest entry, dropping the oldest past ``MAX_MODELS``: a test set is kept
        as long as a model could need it, not for the whole session."""
        with self._lock:
            cache[key] = value
            cache.move_to_end(key)
            while len(cache) > MAX_MODELS:
                cache.popitem(last=False)
            return value

    def model(self, name: str) -> Loaded:
        """The run's model from ``last.pt`` (``best.pt`` if there is none), loaded weights-only."""
        run = runs.resolve_run(self.root, name)
        checkpoint = next((run / n for n in CHECKPOINTS if (run / n).is_file()), None)
        if checkpoint is None:
            raise CnnlabError(f"run {name} has no checkpoint yet (expected last.pt or best.pt)")
        key = (str(checkpoint), checkpoint.stat().st_mtime_ns)

        def build() -> Loaded:
            with self._lock:
                loaded = self._models.get(key)
            if loaded is None:
                loaded = Loaded(load_trained(checkpoint), checkpoint)
            return self._keep(self._models, key, loaded)

        return self._once(key, build)

    def test_set(self, loaded: Loaded) -> TestSet:
        """The test split of the dataset a run trained on (loaded once per dataset and settings), checked against
        the run: the same classes, and the same drawn split."""
        key = test_set_key(loaded.trained)

        def build() -> TestSet:
            with self._lock:
                data = self._test_sets.get(key)
            if data is None:
                data = load_test_set(loaded.trained)
            return self._keep(self._test_sets, key, data)

        data = self._once(("data", key), build)
        # Another drawn split would put training images among the "test" ones and inflate the gallery's accuracy; a
        # run that held out nothing shows no image, and its folder was not read
        if data.split is not None:
            loaded.trained.check_dataset(data)
        return data

    def test_image(self, name: str, index: int) -> tuple[Loaded, torch.Tensor, int, str]:
        """A run's model, test image ``index`` (its validation image where it held out no test split; uint8
        ``C x H x W``), its label, and which split it is of (:attr:`TestSet.split`)."""
        loaded = self.model(name)
        data = self.test_set(loaded)
        if data.split is None:  # a run that held out nothing: no image it never saw to analyse
            raise CnnlabError(loaded.trained.why_nothing_held_out())
        if not 0 <= index < len(data.labels):
            raise CnnlabError(f"{data.split} image index must be from 0 to {len(data.labels) - 1}, got {index}")
        return loaded, data.images[index], int(data.labels[index]), data.split

    def gallery(self, name: str, cls: int | None = None) -> dict[str, Any]:
        """Test images to pick from: the first few of each class, and the most confident mistakes; with ``cls``,
        that class's first few alone (``{"class", "images"}``).

        The mistakes are searched among ``MISTAKE_POOL`` test images, a seeded sample of the split (a large model
        on a CPU would take minutes for all of them; a folder's split is sorted by class, so its first images would
        be its first classes alone); the result is kept until the checkpoint changes. Of more than
        ``GALLERY_CLASSES`` classes, each class's entry has no images and ``"later": true``: the page asks for them
        with ``cls`` when it shows the class.
        """
        loaded = self.model(name)
        if cls is not None:
            classes = loaded.trained.meta.classes
            if not 0 <= cls < len(classes):
                raise CnnlabError(f"class must be from 0 to {len(classes) - 1}, got {cls}")
            return {"class": classes[cls], "images": self._class_items(loaded, self.test_set(loaded), cls)}

        def build() -> dict[str, Any]:
            if "gallery" not in loaded.extras:
                loaded.extras["gallery"] = self._gallery(loaded)
            return loaded.extras["gallery"]

        return self._once(("gallery", str(loaded.checkpoint)), build)

    @staticmethod
    def _item(loaded: Loaded, data: TestSet, i: int, **extra) -> dict[str, Any]:
        """Test image ``i`` of ``data`` (the run's test set) as the gallery lists it: its index, class and picture."""
        return {"index": i, "label": loaded.trained.meta.classes[int(data.labels[i])],
                "png": thumbnail_url(data.images[i]), **extra}

    def _class_items(self, loaded: Loaded, data: TestSet, cls: int) -> list[dict[str, Any]]:
        """The first ``PICKS_PER_CLASS`` test images of class ``cls``."""
        picks = (data.labels == cls).nonzero().flatten()[:PICKS_PER_CLASS].tolist()
        return [self._item(loaded, data, i) for i in picks]

    def _gallery(self, loaded: Loaded) -> dict[str, Any]:
        meta = loaded.trained.meta
        data = self.test_set(loaded)
        if data.split is None:  # a run that held out nothing: no image to show, and the page says why
            return {"by_class": [{"class": cls, "images": []} for cls in meta.classes], "mistakes": [], "searched": 0,
                    "of": 0, "split": None, "accuracy": None, "note": loaded.trained.why_nothing_held_out()}
        later = len(meta.classes) > GALLERY_CLASSES
        by_class = [{"class": cls, "images": [], "later": True} if later else
                    {"class": cls, "images": self._class_items(loaded, data, c)} for c, cls in enumerate(meta.classes)]
        pool = sample_indices(len(data.labels), MISTAKE_POOL)
        probs = loaded.trained.logits(data.images[pool]).softmax(1)
        confidence, pred = probs.max(1)
        wrong = (pred != data.labels[pool]).nonzero().flatten()
        worst = wrong[confidence[wrong].argsort(descending=True)[:MISTAKES]].tolist()
        mistakes = [self._item(loaded, data, int(pool[i]), predicted=meta.classes[int(pred[i])],
                               confidence=float(confidence[i])) for i in worst]
        return {"by_class": by_class, "mistakes": mistakes, "searched": len(pool), "of": len(data.labels),
                "split": data.split, "note": None,
                "accuracy": float((pred == data.labels[pool]).float().mean())}
