"""``cnnlab explore``: a local web page to look inside your own trained networks.

:func:`serve` runs it until interrupted; :class:`BackgroundServer` runs it in a thread (tests, notebooks);
:func:`create_app` is the ASGI app for any server. :func:`explore` also opens one model of any kind (ONNX,
``torch.export``, ``module:function``, a cnnlab checkpoint) with your images (:func:`create_model_app`), or saves
it as a static page. See docs/explore.md.
"""

from cnnlab.explore.launch import BackgroundServer, explore, serve
from cnnlab.explore.server import create_app, create_model_app

__all__ = ["BackgroundServer", "create_app", "create_model_app", "explore", "serve"]
