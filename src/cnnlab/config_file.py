"""Training settings from a file: ``cnnlab train --config FILE.toml`` (or ``.json``), flags overriding it.

The keys are TrainConfig's field names (``batch_size``; the flag spelling ``batch-size`` works too), so a file is
the flags written down::

    model = "resnet18"
    recipe = "fast"
    epochs = 20
    schedule = "multistep"
    milestones = "10,15"

A run folder's ``config.json`` (whose settings sit under ``"config"``) can be passed back to train the same run
again; its ``out`` is dropped, so the new run gets a folder of its own unless ``--out`` names one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError
from cnnlab.train.config import check_known_fields, field_types, nullable_fields

if sys.version_info >= (3, 11):
    import tomllib
else:  # tomllib joined the standard library in 3.11; tomli is the same parser
    import tomli as tomllib

SUFFIXES = (".toml", ".json")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The TrainConfig settings in a TOML or JSON file, keyed by field name (``None`` values left out).

    Args:
        path: a ``.toml`` or ``.json`` file with TrainConfig field names as keys, or a run's ``config.json``.

    Returns:
        ``{field: value}``, ready as keyword arguments for :func:`cnnlab.train.train` (``model`` and ``recipe``
        included when the file has them).

    Raises:
        CnnlabError: the file is missing, of another kind, does not parse, is not a table of settings, or has keys
            that are not TrainConfig fields (all of them named in the one line).

    Example:
        >>> from cnnlab.train import train
        >>> train(**read_config_file("resnet.toml"))  # doctest: +SKIP
    """
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise CnnlabError(f"config file {path} must end in .toml or .json, got {path.suffix or 'no suffix'!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CnnlabError(f"cannot read config file {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise CnnlabError(f"config file {path} does not parse: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise CnnlabError(f"config file {path} must hold a table of settings, got a {type(data).__name__}")
    from_run = isinstance(data.get("config"), dict)
    if from_run:  # a run folder's config.json: {"config": {...}, "environment": ..., ...}
        # A setting next to a run's record would be dropped without a word. The record's own entries that share a
        # field's name hold what the run derived (its dataset's description, the normalisation as lists), not values.
        beside = sorted(key for key, value in data.items() if key != "config" and key.replace("-", "_") in
                        field_types() and isinstance(value, (str, int, float, bool)))
        if beside:
            raise CnnlabError(f"config file {path} has a 'config' table, as a run's config.json does, and settings "
                              f"beside it ({', '.join(beside)}); expected one or the other")
        data = dict(data["config"])
        data.pop("out", None)  # the earlier run's folder: a new run writes elsewhere unless --out says so
        if data.get("time_budget") is not None:  # the budget set the run's length; epochs is only the default
            data.pop("epochs", None)
    values = {key.replace("-", "_"): value for key, value in data.items()}
    twice = sorted(key for key in values if key in data and key.replace("_", "-") in data and "_" in key)
    if twice:
        raise CnnlabError(f"config file {path} sets {', '.join(twice)} twice (as {twice[0]} and "
                          f"{twice[0].replace('_', '-')}); expected one spelling of each")
    check_known_fields(values, f"config file {path}")
    # null means "not set" only where the field has an unset value (lr, resize, ...); elsewhere ("epochs": null)
    # dropping it would run with the default without a word.
    nulls = sorted(key for key, value in values.items() if value is None and key not in nullable_fields())
    if nulls:
        raise CnnlabError(f"config file {path} sets {', '.join(nulls)} to null; expected a value (or the key left "
                          "out, for the default)")
    return {key: value for key, value in values.items() if value is not None}
