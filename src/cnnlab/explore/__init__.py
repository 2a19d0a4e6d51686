"""``cnnlab explore``: a local web page to look inside your own trained networks.

:func:`serve` runs it until interrupted; :class:`BackgroundServer` runs it in a thread (tests, notebooks);
:func:`create_app` is the ASGI app for any server. See docs/explore.md.
"""

from cnnlab.explore.launch import BackgroundServer, serve
from cnnlab.explore.server import create_app

__all__ = ["BackgroundServer", "create_app", "serve"]
