"""Running the explorer: a listening socket, uvicorn in the foreground (``cnnlab explore``) or in a thread.

The socket is bound here rather than by uvicorn so that port 0 (any free port) works and the address printed is
the one actually listened on, and so that a taken port is one CnnlabError line instead of a log message.
"""

from __future__ import annotations

import errno
import socket
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.explore.model import Options
from cnnlab.explore.page import check_export_file, export_page
from cnnlab.explore.server import allowed_hosts, create_app, create_model_app, is_loopback, netloc
from cnnlab.explore.sources import model_file_in, open_with_images

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765  # loopback only, unless the user names another address


def host_warning(host: str) -> str | None:
    """The warning to print when ``host`` is not a loopback address (``None`` for one)."""
    if is_loopback(host):
        return None
    return (f"cnnlab explore: warning: listening on {host}, reachable from other machines; the explorer has no "
            "login, and anyone who can reach it can read these runs")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free one); one-line CnnlabError when the port is taken
    or the host cannot be bound (it does not resolve, or is not an address of this machine)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        reason = e.strerror or str(e)
        # Only a taken or privileged port is cured by another port; a host that does not resolve (socket.gaierror)
        # or is no address of this machine (EADDRNOTAVAIL) fails on every port, --port 0 included.
        if port and e.errno in (errno.EADDRINUSE, errno.EACCES):
            raise CnnlabError(f"cannot listen on {host}:{port} ({reason}); pass --port 0 for any free port") from None
        raise CnnlabError(f"cannot listen on {host}:{port}: --host {host} could not be bound ({reason}); expected "
                          "127.0.0.1, 0.0.0.0 (every interface) or another address or name of this machine") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    return f"http://{netloc(*sock.getsockname()[:2])}/"


class BackgroundServer:
    """The explorer running in a thread of this process (for tests and notebooks); ``stop()`` ends it.

    Example:
        >>> server = BackgroundServer("runs")  # doctest: +SKIP
        >>> server.url  # doctest: +SKIP
        'http://127.0.0.1:40123/'
    """

    def __init__(self, root: str | Path | None = None, host: str = "127.0.0.1", port: int = 0, app=None):
        app = create_app(root) if app is None else app  # app: e.g. create_model_app(model, images)
        self._sock = bind(host, port)
        self.url = url_of(self._sock)
        self._server = _uvicorn_server(app, grace_s=2)  # a test's stop() waits 2 s at most for answers under way
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


def _uvicorn_server(app, grace_s: float | None = None):
    """uvicorn serving ``app`` quietly (its access log off); asked to stop, it waits for the answers under way (at
    most ``grace_s`` seconds, then ends them; a second Ctrl-C ends them at once).

    The app's event streams end themselves once the server is asked to stop (``app.state.stopping``, read at each
    poll): a page watching a run that trains holds its stream open for hours, and Ctrl-C waited for it, silently."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=grace_s))
    app.state.stopping = lambda: server.should_exit
    return server


def serve(root: str | Path = "runs", host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, open_browser: bool = True,
          app=None, what: str | None = None, allow_hosts: tuple[str, ...] = ()) -> None:
    """Serve the explorer until interrupted, printing its address (and opening a browser tab).

    Args:
        root: a runs folder or a single run folder.
        host: the address to listen on; anything but loopback is reachable from the network (a warning says so).
        port: the port (0: any free one).
        open_browser: open the page in the default browser once the server listens.
        app: serve this ASGI app instead of the runs under ``root`` (``create_model_app``: one model).
        what: how the start line names what is served (default: ``root``'s full path).
        allow_hosts: host names the page may be opened by through a proxy (``--allow-host``; not with ``app``,
            which is made with its own).

    Raises:
        CnnlabError: ``root`` is not a folder, the port is taken or the host cannot be bound.
    """
    app = create_app(root, allow_hosts) if app is None else app
    sock = bind(host, port)  # first: the warning says it listens on host, so a host that fails gets no warning
    warning = host_warning(host)
    if warning:
        print(warning, file=sys.stderr)
    url = url_of(sock)
    print(f"cnnlab explore: serving {what or Path(root).resolve()} at {url} (Ctrl-C stops)", flush=True)
    if open_browser:
        import webbrowser

        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    try:
        _uvicorn_server(app).run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C is how a server is stopped: not an error (uvicorn raises it again after)
        pass


def _open(source, images, options: Options, skip_bad: bool):
    """:func:`open_with_images`, saying on stderr which files ``--skip-bad-images`` left out and what the listing
    passed over (a CSV's images it does not name), one line each."""
    model, found = open_with_images(source, images, options, skip_bad=skip_bad)
    for line in found.notices if found is not None else ():
        print(f"cnnlab explore: note: {line}", file=sys.stderr)
    for line in found.skipped if found is not None else ():
        print(f"cnnlab explore: skipped {line}", file=sys.stderr)
    return model, found


def explore(source: str | Path = "runs", *, images: str | Path | None = None, classes: str | Path | None = None,
            input_size: int | tuple[int, int] | None = None, mean=None, std=None, pixel_range: str | None = None,
            bgr: bool = False, layout: str | None = None, multi_label: bool = False, weights: str | Path | None = None,
            export: str | Path | None = None, force: bool = False, host: str | None = None, port: int | None = None,
            open_browser: bool = True, skip_bad_images: bool = False, allow_hosts=None,
            no_classes: bool = False) -> dict | None:
    """``cnnlab explore``: serve a runs folder, or one model of any kind with your images, or save a static page.

    A folder is served as runs (:func:`serve`). Anything else is one model (:func:`cnnlab.explore.sources.open_model`:
    ``.onnx``, ``.pt2``, a cnnlab ``.pt`` or ``module:function``) with the images of ``images``; with ``export`` the
    page is written to that file (:func:`cnnlab.explore.page.export_page`) and its summary returned, not served.
    ``host``, ``port`` (default :data:`DEFAULT_HOST` and :data:`DEFAULT_PORT`), ``open_browser=False`` and
    ``allow_hosts`` (names the page is opened by through a proxy: :func:`cnnlab.explore.server.allowed_hosts`) say how
    to serve, so they are refused beside ``export``, as ``force`` is without it: a flag that would do nothing is a
    mistake to name, not to ignore.

    Raises:
        CnnlabError: model flags given for a runs folder, a bad model, folder or flag (one line).
    """
    if str(source) == "runs" and not Path(source).exists():
        raise CnnlabError(f"there is no runs folder in {Path.cwd()}, which cnnlab explore serves by default; expected "
                          "a runs folder, or one model: a .onnx, .pt2 or cnnlab .pt file, module:function or an "
                          "ImageNet backbone (imagenet-resnet18, ...)")
    if export is not None:
        served = [k for k, v in (("--host", host), ("--port", port), ("--no-browser", None if open_browser else 1),
                                 ("--allow-host", allow_hosts or None)) if v is not None]
        if served:
            raise CnnlabError(f"{' and '.join(served)} say{'s' * (len(served) == 1)} how to serve the page, and "
                              f"--export {export} writes it to a file instead; expected one or the other")
    elif force:
        raise CnnlabError("--force lets --export overwrite its file, and no --export was given; expected --export "
                          "PAGE.html with it, or no --force")
    host = DEFAULT_HOST if host is None else host
    port = DEFAULT_PORT if port is None else port
    allowed = allowed_hosts(allow_hosts)  # before any model work
    model_flags = {"--images": images, "--classes": classes, "--input-size": input_size, "--mean": mean,
                   "--std": std, "--pixel-range": pixel_range, "--bgr": bgr or None, "--layout": layout,
                   "--multi-label": multi_label or None, "--weights": weights, "--export": export,
                   "--skip-bad-images": skip_bad_images or None, "--no-classes": no_classes or None}
    if Path(source).is_dir():
        given = [k for k, v in model_flags.items() if v is not None]
        if given:
            inside = model_file_in(source)
            hint = f" (for the model {'in it' if inside.suffix == '.onnx' else 'of this run'}, pass {inside})" \
                if inside else ""
            raise CnnlabError(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to one model "
                              "(a .onnx, .pt2 or .pt file, or "
                              f"module:function); {source} is a folder, served as runs{hint}")
        return serve(source, host=host, port=port, open_browser=open_browser, allow_hosts=allowed)
    options = Options.from_flags(classes, input_size, mean, std, pixel_range, bgr, layout, multi_label, weights,
                                 no_classes)
    if export is not None:
        if images is None:
            raise CnnlabError("--export needs --images FOLDER: the page shows those inputs through every stage")
        check_export_file(export, force)  # before any model work
        model, found = _open(source, images, options, skip_bad_images)
        return export_page(model, found, export, force=force)
    model, found = _open(source, images, options, skip_bad_images)
    return serve(host=host, port=port, open_browser=open_browser, app=create_model_app(model, found, allowed),
                 what=f"{model.kind} model {model.name}")
