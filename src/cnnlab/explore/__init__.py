"""``cnnlab explore``: a local web page to look inside your own trained networks.

:func:`serve` runs it until interrupted; :class:`BackgroundServer` runs it in a thread (tests, notebooks);
:func:`create_app` is the ASGI app for any server. :func:`explore` also opens one model of any kind (ONNX,
``torch.export``, ``module:function``, a cnnlab checkpoint) with your images (:func:`create_model_app`), or saves
it as a static page. See docs/explore.md.

The web stack (Starlette, uvicorn) is the ``explore`` extra: these names are imported on first use, so that the
models of any kind (:mod:`cnnlab.explore.sources`), which ``cnnlab predict`` opens too, load without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and editors see (the package is typed): the same names, eagerly
    from cnnlab.explore.launch import BackgroundServer, explore, serve
    from cnnlab.explore.server import create_app, create_model_app

_WHERE = {"BackgroundServer": "launch", "explore": "launch", "serve": "launch", "create_app": "server",
          "create_model_app": "server"}

__all__ = ["BackgroundServer", "create_app", "create_model_app", "explore", "serve"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
