"""Running the explorer: a listening socket, uvicorn in the foreground (``cnnlab explore``) or in a thread.

The socket is bound here rather than by uvicorn so that port 0 (any free port) works and the address printed is
the one actually listened on, and so that a taken port is one CnnlabError line instead of a log message.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.explore.server import create_app


def host_warning(host: str) -> str | None:
    """The warning to print when ``host`` is not a loopback address (``None`` for one)."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        loopback = False
    if loopback:
        return None
    return (f"cnnlab explore: warning: listening on {host}, reachable from other machines; the explorer has no "
            "login, and anyone who can reach it can read these runs")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free one); one-line CnnlabError when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise CnnlabError(f"cannot listen on {host}:{port} ({e.strerror or e}); pass --port 0 for any free "
                          "port") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class BackgroundServer:
    """The explorer running in a thread of this process (for tests and notebooks); ``stop()`` ends it.

    Example:
        >>> server = BackgroundServer("runs")  # doctest: +SKIP
        >>> server.url  # doctest: +SKIP
        'http://127.0.0.1:40123/'
    """

    def __init__(self, root: str | Path, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self._sock = bind(host, port)
        self.url = url_of(self._sock)
        config = uvicorn.Config(create_app(root), log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the explorer's server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        with closing(self._sock):
            pass

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(root: str | Path = "runs", host: str = "127.0.0.1", port: int = 8765, open_browser: bool = True) -> None:
    """Serve the explorer until interrupted, printing its address (and opening a browser tab).

    Args:
        root: a runs folder or a single run folder.
        host: the address to listen on; anything but loopback is reachable from the network (a warning says so).
        port: the port (0: any free one).
        open_browser: open the page in the default browser once the server listens.

    Raises:
        CnnlabError: ``root`` is not a folder, or the port is taken.
    """
    import uvicorn

    app = create_app(root)
    warning = host_warning(host)
    if warning:
        print(warning, file=sys.stderr)
    sock = bind(host, port)
    url = url_of(sock)
    print(f"cnnlab explore: serving {Path(root).resolve()} at {url} (Ctrl-C stops)", flush=True)
    if open_browser:
        import webbrowser

        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off")).run(sockets=[sock])
