"""The book's LeNet recipe in Keras 3 on the torch backend, written as its docs tell a user: ``model.fit`` on numpy
arrays from ``keras.datasets.fashion_mnist.load_data()``.

Run it with the peers' virtualenv (benchmarks/setup_peers_venv.sh); ``bench.py --only peers`` alternates it with
``cnnlab train lenet --recipe book``:

    ~/.cache/cnnlab/peers-venv/bin/python benchmarks/peer_keras.py --epochs 10 [--recipe best] [--json-out r.json]

``KERAS_BACKEND=torch`` is set before keras is imported (as Keras's docs say to choose a backend), and
``KERAS_TORCH_DEVICE=cpu`` unless given, so that a GPU, when present, is not taken (``cnnlab train --device
cpu``). ``load_data()`` finds the four .gz files in a scratch ``$KERAS_HOME/datasets/fashion-mnist`` (copied there,
so nothing is downloaded). The images are scaled to [0, 1] and given a channel axis, as Keras's "Simple MNIST
convnet" example does. ``--recipe book``: a ``keras.Sequential`` LeNet (sigmoid, average pooling, the first conv
``padding="same"``); Keras's default initialisers are the book's Xavier (``glorot_uniform``; biases zero instead of
torch's uniform); ``model.compile(optimizer=keras.optimizers.SGD(0.1), loss=SparseCategoricalCrossentropy(
from_logits=True), metrics=["accuracy"])`` and ``model.fit(x, y, batch_size=128, epochs=E,
validation_data=(x_test, y_test))``. ``--recipe best``: BN-LeNet with ReLU and max pooling, the MNIST convnet
example's optimizer and batch (Adam, batch 128) with its learning rate 1e-3 annealed to zero by Keras's documented
``keras.optimizers.schedules.CosineDecay`` over the run.

Per step, beyond cnnlab's loop: Keras slices the float32 arrays (held whole, 188 MB, where cnnlab holds uint8)
and converts each batch to a torch tensor; every conv and pooling layer permutes its channels-last input (Keras's
default image format) to channels-first and back, copying it, and the conv permutes its kernel; the training
accuracy and the mean loss are updated after every batch (``metrics=["accuracy"]``), and the callbacks (History,
the progress logger) are called around it. ``verbose=2`` prints one line per epoch instead of a progress bar.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import FILES, report, result, scratch  # noqa: E402
from peer_common import EpochClock, add_peer_args  # noqa: E402

BATCH_SIZE = 128  # both recipes


def build(keras, recipe: str):
    """LeNet (d2l 7.6) or BN-LeNet with ReLU and max pooling (d2l 8.5) as a keras.Sequential of 28 x 28 x 1 images."""
    layers = keras.layers
    if recipe == "book":
        return keras.Sequential([
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(6, 5, padding="same", activation="sigmoid"), layers.AveragePooling2D(2),
            layers.Conv2D(16, 5, activation="sigmoid"), layers.AveragePooling2D(2),  # 5 x 5 x 16
            layers.Flatten(),
            layers.Dense(120, activation="sigmoid"),
            layers.Dense(84, activation="sigmoid"),
            layers.Dense(10)])
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(6, 5), layers.BatchNormalization(), layers.Activation("relu"), layers.MaxPooling2D(2),
        layers.Conv2D(16, 5), layers.BatchNormalization(), layers.Activation("relu"), layers.MaxPooling2D(2),
        layers.Flatten(),  # 256
        layers.Dense(120), layers.BatchNormalization(), layers.Activation("relu"),
        layers.Dense(84), layers.BatchNormalization(), layers.Activation("relu"),
        layers.Dense(10)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_peer_args(parser)
    args = parser.parse_args(argv)
    with scratch(args.workdir, args.source) as root:
        cache = root / "keras" / "datasets" / "fashion-mnist"
        cache.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            if not (cache / name).is_file():
                shutil.copyfile(root / "data" / "FashionMNIST" / "raw" / name, cache / name)
        os.environ["KERAS_HOME"] = str(root / "keras")
        os.environ["KERAS_BACKEND"] = "torch"
        os.environ.setdefault("KERAS_TORCH_DEVICE", "cpu")
        import keras
        import numpy as np

        (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    x_train, x_test = (np.expand_dims(x.astype("float32") / 255, -1) for x in (x_train, x_test))
    if args.limit is not None:
        n = args.limit * BATCH_SIZE
        x_train, y_train, x_test, y_test = x_train[:n], y_train[:n], x_test[:n], y_test[:n]

    class Clock(keras.callbacks.Callback):
        """Records the end of each epoch, after its validation."""

        def on_train_begin(self, logs=None):
            self.clock = EpochClock()

        def on_epoch_end(self, epoch, logs=None):
            self.clock.lap()

    keras.utils.set_random_seed(args.seed)
    model = build(keras, args.recipe)
    if args.recipe == "book":
        optimizer = keras.optimizers.SGD(learning_rate=0.1)
    else:
        steps = args.epochs * -(-len(x_train) // BATCH_SIZE)
        optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=steps))
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    clock = Clock()
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=args.epochs, validation_data=(x_test, y_test),
              verbose=2, callbacks=[clock])
    wall = time.perf_counter() - start
    logits = model.predict(x_test, batch_size=BATCH_SIZE, verbose=0)
    test_acc = float((np.asarray(logits).argmax(axis=1) == y_test).mean())
    report(result(f"Keras on torch ({args.recipe})", epochs=args.epochs, train_images=len(x_train), wall_s=wall,
                  test_acc=test_acc, test_samples=len(y_test), version=keras.__version__,
                  backend=keras.backend.backend(), recipe=args.recipe, batch_size=BATCH_SIZE,
                  epoch_end_s=clock.clock.laps), args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
