"""How long `cnnlab explore` takes to answer for one input: predictions + feature maps (and with Grad-CAM).

Times :func:`cnnlab.explore.model.analyze_image` of a :class:`~cnnlab.explore.model.RunModel` (the runs page's
answer) on one Fashion-MNIST-sized image (uint8 1 x 28 x 28) for the book's LeNet at 28 px and ResNet-18 at 96 px
(the book's resize), in-process (no HTTP), after warm-up; weights are random
(the time does not depend on them). Reports the median and the spread of ``--repeats`` calls, in round-robin so a
load spike on a shared machine hits every case.

    OMP_NUM_THREADS=1 python benchmarks/explore_latency.py --repeats 30

``--kinds`` times the models from elsewhere instead (:func:`cnnlab.explore.model.analyze_image`, the one-model
page's answer: predictions, every stage's maps and the attribution): LeNet at 28 px and torchvision's ResNet-18 at
224 px (seeded random weights), each as an ONNX graph (occlusion sensitivity: 49 extra forward passes), a
``torch.export`` program and ``module:function`` (Grad-CAM and saliency), all exported here first.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cnnlab.data import CLASSES
from cnnlab.explore.model import RunModel, analyze_image
from cnnlab.explore.probe import map_rows
from cnnlab.inference import load_trained
from cnnlab.models import create_model
from cnnlab.runs.checkpoint import save_checkpoint
from cnnlab.runs.folder import environment

CASES = (("lenet", 28), ("resnet18", 96))


def trained(name: str, input_size: int, folder: Path):
    """A checkpoint of ``name`` written and read back through the library, as the explorer reads one."""
    model = create_model(name)
    path = folder / f"{name}.pt"
    data = {"name": "fashion-mnist", "classes": list(CLASSES), "channels": 1, "image_size": 28, "mean": None,
            "std": None, "flip": True}
    save_checkpoint({"model_name": name, "num_classes": 10, "in_channels": 1, "input_size": input_size,
                     "normalize": None, "ops": "torch", "config": {"model": name}, "dataset": data,
                     "model": model.state_dict(), "epoch": 0, "step": 0, "history": []}, path)
    return RunModel(load_trained(path))


def answer(model: RunModel, image: torch.Tensor, explain: bool) -> None:
    """What the runs page computes for one input: the whole answer, or only the predictions and feature maps."""
    if explain:
        analyze_image(model, image)
    else:
        map_rows(model.stages(image))


def other_kinds(folder: Path):
    """{(model, size, kind): ExploreModel} for LeNet and ResNet-18 as ONNX, .pt2 and module:function."""
    import sys
    import warnings

    from cnnlab.explore.model import Options
    from cnnlab.explore.sources import open_model

    sys.path.insert(0, str(folder))
    (folder / "bench_models.py").write_text(
        "import torch, torchvision\nfrom cnnlab.models import create_model\n\n"
        "def lenet():\n    torch.manual_seed(0)\n    return create_model('lenet')\n\n"
        "def resnet18():\n    torch.manual_seed(0)\n    return torchvision.models.resnet18()\n")
    import bench_models
    found = {}
    for name, size in (("lenet", 28), ("resnet18", 224)):
        module = getattr(bench_models, name)().eval()
        x = torch.rand(2, 1 if name == "lenet" else 3, size, size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (x,), None, dynamo=True, verbose=False,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)).save(
                str(folder / f"{name}.onnx"), external_data=False)
            torch.export.save(torch.export.export(module, (x,)), str(folder / f"{name}.pt2"))
        found[(name, size, "onnx")] = open_model(folder / f"{name}.onnx")
        found[(name, size, "pt2")] = open_model(folder / f"{name}.pt2")
        found[(name, size, "module")] = open_model(f"bench_models:{name}", Options(input_size=size))
    return found


def main_kinds(repeats: int) -> None:
    from cnnlab.explore.model import analyze_image

    with tempfile.TemporaryDirectory() as tmp:
        models = other_kinds(Path(tmp))
        images = {key: torch.randint(0, 256, (m.spec.channels, m.spec.height, m.spec.width), dtype=torch.uint8,
                                     generator=torch.Generator().manual_seed(0)) for key, m in models.items()}
        times: dict[tuple, list[float]] = {key: [] for key in models}
        for key, m in models.items():  # warm-up
            analyze_image(m, images[key])
        for _ in range(repeats):
            for key, m in models.items():
                start = time.perf_counter()
                analyze_image(m, images[key])
                times[key].append(time.perf_counter() - start)
    env = environment(torch.device("cpu"))
    print(f"torch {env['torch']}, {env['torch_threads']} thread(s), {env['platform']}, commit {env['git_commit']}")
    print("| model | input | kind | predictions + every stage's maps + attribution (ms) |")
    print("| --- | --- | --- | --- |")
    for (name, size, kind), t in times.items():
        t = sorted(1000 * s for s in t)
        print(f"| {name} | {size} px | {kind} | {statistics.median(t):.1f} (min {t[0]:.1f}, max {t[-1]:.1f}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--kinds", action="store_true", help="time ONNX, .pt2 and module:function models instead")
    args = parser.parse_args()
    if args.kinds:
        main_kinds(args.repeats)
        return
    image = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        models = {name: trained(name, size, Path(tmp)) for name, size in CASES}
    variants = [(name, explain) for name, _ in CASES for explain in (False, True)]
    times: dict[tuple[str, bool], list[float]] = {v: [] for v in variants}
    for v in variants:  # warm-up: first-call allocations and oneDNN kernel selection
        answer(models[v[0]], image, v[1])
    for _ in range(args.repeats):
        for name, explain in variants:
            start = time.perf_counter()
            answer(models[name], image, explain)
            times[(name, explain)].append(time.perf_counter() - start)
    env = environment(torch.device("cpu"))
    print(f"torch {env['torch']}, {env['torch_threads']} thread(s), {env['platform']}, commit {env['git_commit']}")
    print("| model | input | predictions + feature maps (ms) | + Grad-CAM and saliency (ms) |")
    print("| --- | --- | --- | --- |")
    for name, size in CASES:
        cells = []
        for explain in (False, True):
            t = sorted(1000 * s for s in times[(name, explain)])
            cells.append(f"{statistics.median(t):.1f} (min {t[0]:.1f}, max {t[-1]:.1f})")
        print(f"| {name} | {size} px | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
