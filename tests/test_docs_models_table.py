"""docs/models.md's zoo table says what the registry says: parameters, MACs, default and smallest input, book lr.

The last column (CPU images/s) is a measurement and is not checked here.
"""

from __future__ import annotations

import re
from pathlib import Path

from cnnlab.models import list_models, min_input_size, model_info
from cnnlab.models.summary import count_params, model_macs

MODELS_MD = Path(__file__).resolve().parents[1] / "docs" / "models.md"


def zoo_rows() -> dict[str, list[str]]:
    """model name -> the cells of its row in the first table of docs/models.md."""
    rows = {}
    for line in MODELS_MD.read_text(encoding="utf-8").split("\n\n## ")[0].splitlines():
        m = re.match(r"\| `([^`]+)` \|", line)
        if m:
            rows[m.group(1)] = [cell.strip() for cell in line.strip("|").split("|")]
    return rows


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def test_the_zoo_table_lists_every_model_with_the_registrys_figures():
    rows = zoo_rows()
    assert list(rows) == list_models()
    wrong = []
    for name, (_, _, params, macs, default, smallest, lr, _) in rows.items():
        info = model_info(name)
        expected = {"parameters": (params, count_params(name)),
                    "MACs": (macs, model_macs(name, info.input_size)),
                    "default input": (default, info.input_size),
                    "min input": (smallest, min_input_size(name)),
                    "book lr": (lr, info.lr)}
        wrong += [f"{name}: {column} {shown} in docs/models.md, {actual} in the registry"
                  for column, (shown, actual) in expected.items() if _number(shown) != actual]
    assert not wrong, "\n".join(wrong)


def test_the_backbone_table_lists_every_backbone_with_its_weights_and_input_side():
    """The ImageNet backbones' table: each with its pinned weights and the side the registry feeds it at (the weights'
    crop), which was 224 for every one."""
    rows = {m.group(1): [cell.strip(" `") for cell in line.strip("|").split("|")]
            for line in MODELS_MD.read_text(encoding="utf-8").splitlines()
            if (m := re.match(r"\| `(imagenet-[^`]+)` \|", line))}
    assert sorted(rows) == sorted(list_models(pretrained=True))
    for name, (_, weights, _, _, side) in rows.items():
        assert (weights, int(side)) == (model_info(name).weights, model_info(name).input_size), name
