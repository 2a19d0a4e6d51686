"""A study file: the variants of one of the book's exercises and the fixed budget they all train with.

Studies ship as TOML files in ``cnnlab/study/data/`` (``cnnlab study --list``); any other TOML file of the same
shape works by path::

    title = "LeNet: activation x pooling"
    section = "7.6 exercise 1"
    question = "Does ReLU beat the sigmoid ...?"
    factors = ["activation", "pooling"]      # optional: what the variants vary, for the summary's averages

    [budget]                                 # TrainConfig fields of every variant
    recipe = "book"
    epochs = 10

    [[variants]]
    name = "relu-max"                        # the variant's run folder inside the study folder
    model = "lenet-relu"                     # a registered model (cnnlab.models.variants adds more)
    factors = { activation = "relu", pooling = "max" }
    config = { lr = 0.5 }                    # optional: TrainConfig fields of this variant only
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cnnlab.config_file import tomllib
from cnnlab.errors import CnnlabError
from cnnlab.train.config import check_known_fields

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a variant's name is a folder name
# Budget keys that would make variants share or escape their run folders.
_NOT_IN_BUDGET = ("model", "out")


@dataclass(frozen=True)
class Variant:
    """One run of a study: a model, its factor levels and its own TrainConfig overrides."""

    name: str
    model: str
    factors: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    """A study file's contents (see the module docstring)."""

    name: str
    title: str
    section: str
    question: str
    budget: dict[str, Any]
    variants: tuple[Variant, ...]
    factors: tuple[str, ...] = ()

    def run_names(self, seeds: Sequence[int] = ()) -> dict[str, list[str]]:
        """Each variant's run folders, by name: the variant's own, or ``NAME-seedS`` for each of several
        ``seeds``."""
        if len(seeds) < 2:
            return {v.name: [v.name] for v in self.variants}
        return {v.name: [f"{v.name}-seed{seed}" for seed in seeds] for v in self.variants}

    def settings(self, variant: Variant, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The TrainConfig fields of one variant's run: budget < the variant's own < ``overrides`` (the CLI's;
        ``run_study`` refuses one of a field a variant sets itself, which would cancel what the study varies)."""
        return {**self.budget, **variant.config, **(overrides or {}), "model": variant.model}


def _data() -> Any:
    return resources.files("cnnlab.study") / "data"


def list_studies() -> list[str]:
    """The names of the studies cnnlab ships."""
    return sorted(p.name.removesuffix(".toml") for p in _data().iterdir() if p.name.endswith(".toml"))


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CnnlabError(f"{where} must be a table, got {type(value).__name__}")
    return value


def check_settings(values: dict[str, Any], where: str) -> dict[str, Any]:
    values = {k.replace("-", "_"): v for k, v in values.items()}
    check_known_fields(values, where)
    banned = sorted(set(values) & set(_NOT_IN_BUDGET))
    if banned:
        raise CnnlabError(f"{where} sets {', '.join(banned)}; expected these only per variant (model) or from the "
                          "study folder (out)")
    return values


def parse_study(text: str, name: str, origin: str) -> Study:
    """Parse and check a study file's text (``origin`` names it in errors)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CnnlabError(f"study file {origin} does not parse: {' '.join(str(e).split())}") from None
    missing = [k for k in ("title", "budget", "variants") if k not in data]
    if missing:
        raise CnnlabError(f"study file {origin} lacks {', '.join(missing)}; expected title, budget and variants")
    budget = check_settings(_table(data["budget"], f"{origin} [budget]"), f"{origin} [budget]")
    if not isinstance(data["variants"], list) or not data["variants"]:
        raise CnnlabError(f"study file {origin} needs one or more [[variants]] tables")
    variants = []
    for i, raw in enumerate(data["variants"]):
        where = f"{origin} variant {i + 1}"
        raw = dict(_table(raw, where))
        vname, model = raw.pop("name", None), raw.pop("model", None)
        if not isinstance(vname, str) or not _NAME.match(vname):
            raise CnnlabError(f"{where}: expected a name usable as a folder name (letters, digits, . _ -), "
                              f"got {vname!r}")
        if not isinstance(model, str):
            raise CnnlabError(f"{where} ({vname}): expected model = \"NAME\", got {model!r}")
        factors = {str(k): str(v) for k, v in _table(raw.pop("factors", {}), f"{where} factors").items()}
        config = check_settings(_table(raw.pop("config", {}), f"{where} config"), f"{where} config")
        if raw:
            raise CnnlabError(f"{where} ({vname}) has unknown key(s) {', '.join(sorted(raw))}; expected name, model, "
                              "factors and config")
        variants.append(Variant(vname, model, factors, config))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise CnnlabError(f"study file {origin}: variant names must differ, got {', '.join(names)}")
    factors = data.get("factors", [])
    if not isinstance(factors, list) or not all(isinstance(f, str) for f in factors):  # a string is no list of names
        raise CnnlabError(f"study file {origin}: factors must be a list of strings such as [\"activation\", "
                          f"\"pooling\"], got {factors!r}")
    factors = tuple(factors)
    for v in variants:
        if factors and set(v.factors) != set(factors):
            raise CnnlabError(f"{origin} variant {v.name}: expected factors {', '.join(factors)}, got "
                              f"{', '.join(v.factors) or 'none'}")
    return Study(name, str(data["title"]), str(data.get("section", "")), str(data.get("question", "")), budget,
                 tuple(variants), factors)


def load_study(name_or_path: str | Path) -> Study:
    """A shipped study by name (``cnnlab study --list``) or a study TOML file by path.

    Example:
        >>> [v.model for v in load_study("lenet-activation-pooling").variants][:2]
        ['lenet', 'lenet-sigmoid-max']
    """
    text = str(name_or_path)
    if text.endswith(".toml"):
        path = Path(text)
        try:
            return parse_study(path.read_text(encoding="utf-8"), path.stem, str(path))
        except OSError as e:
            raise CnnlabError(f"cannot read study file {path}: {e.strerror or e}") from None
    if text not in list_studies():
        raise CnnlabError(f"unknown study {text!r}; expected one of: {', '.join(list_studies())} "
                          "(or a path to a .toml study file)")
    resource = _data() / f"{text}.toml"
    return parse_study(resource.read_text(encoding="utf-8"), text, f"{text}.toml")
