"""Does cnnlab.pt2_check pass what real programs hold? Every torchvision classifier, exported and checked.

    python benchmarks/pt2_check_torchvision.py --out benchmarks/results/pt2-check-torchvision.json
    python benchmarks/pt2_check_torchvision.py --decompose \
        --out benchmarks/results/pt2-check-torchvision-decomposed.json

The check of a ``.pt2`` from elsewhere (``cnnlab.pt2_check``) refuses anything in a program that is not plain
tensors, operator targets, names and size arithmetic; this script looks for the opposite mistake, a refused honest
file. Each classifier of ``torchvision.models.list_models(torchvision.models)`` is built with random weights and 10
classes, exported by ``torch.export.export`` at its usual input side with a dynamic batch, saved, and checked; with
``--decompose``, after ``run_decompositions()`` (the core ATen opset ExecuTorch and other backends take, whose nodes
carry provenance and other metadata a plain program has not). Models that torch.export itself cannot export are
recorded as such. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

from bench import environment
from cnnlab.errors import CnnlabError
from cnnlab.io import write_json
from cnnlab.pt2_check import checked_pt2

SIDE = {"inception_v3": 299}  # the rest take 224 px
OPTIONS = {"googlenet": dict(aux_logits=False, init_weights=False), "inception_v3": dict(aux_logits=False,
                                                                                           init_weights=False)}


def check(name: str, folder: Path, decompose: bool = False) -> dict:
    start = time.perf_counter()
    model = torchvision.models.get_model(name, weights=None, num_classes=10, **OPTIONS.get(name, {})).eval()
    side = SIDE.get(name, 224)
    try:
        program = torch.export.export(model, (torch.randn(2, 3, side, side),),
                                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    except Exception as e:  # noqa: BLE001 - a model torch.export cannot take says nothing about the check
        return {"model": name, "result": "not exportable", "detail": f"{type(e).__name__}: {str(e)[:120]}"}
    if decompose:
        program = program.run_decompositions()
    path = folder / f"{name}.pt2"
    torch.export.save(program, path)
    try:
        checked_pt2(path)
        result = {"model": name, "result": "passed"}
    except CnnlabError as e:
        result = {"model": name, "result": "refused", "detail": str(e)}
    path.unlink()
    return {**result, "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", help="these models (default: every classifier of torchvision)")
    p.add_argument("--decompose", action="store_true", help="check each program after run_decompositions()")
    p.add_argument("--out", type=Path, help="write the results here as JSON")
    args = p.parse_args(argv)
    names = args.only or torchvision.models.list_models(torchvision.models)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="pt2-check-") as folder:
        for name in names:
            rows.append(check(name, Path(folder), args.decompose))
            print(rows[-1], flush=True)
    if args.out:
        write_json(args.out, {"script": "benchmarks/pt2_check_torchvision.py", "environment": environment(),
                              "torchvision": torchvision.__version__, "decomposed": args.decompose, "models": rows})
    refused = [r["model"] for r in rows if r["result"] == "refused"]
    unexportable = sum(r["result"] == "not exportable" for r in rows)
    print(f"{len(rows) - len(refused) - unexportable} passed, {len(refused)} refused {refused}, {unexportable} not "
          "exportable by torch.export")
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
