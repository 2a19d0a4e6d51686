"""The explorer's HTTP app: Starlette routes over a :class:`~cnnlab.explore.session.Session` (run by launch.py).

Routes (all ``GET`` but the upload; a run is named by ``?run=`` relative to the root, see
:mod:`cnnlab.explore.runs`):

* ``/`` and ``/static/...``: the page (files shipped in the package; no CDN, works offline);
* ``/api/runs``: the runs table; ``/api/run``: one run's files, layer table and first-layer kernels;
  ``/api/metrics``: its metrics rows; ``/api/stream``: server-sent events as metrics.csv grows;
  ``/api/figure``: a PNG figure of the run folder (``curves.png``);
* ``/api/gallery``: test images by class (``&class=N``: that class's alone, for a run of many classes) and the most
  confident mistakes; ``/api/analyze``: predictions, feature maps and Grad-CAM for a test image (``&index=``) or an
  uploaded file (``POST``, the raw file as body);
* ``/api/ops``: the book's cross-correlation and pooling on a small input (:mod:`cnnlab.explore.opsview`).

:func:`create_model_app` serves one model of any kind (:mod:`cnnlab.explore.model`) with the same upload guards.

Errors are JSON ``{"error": "<one line>"}``: 404 for a run or file that is not there (or not allowed), 400 for bad
input, 413 for an upload that is too large, 422 for a model's own failure on a picture
(:class:`~cnnlab.explore.model.ModelFailure`), 403 for a request on loopback naming another host
(:class:`LoopbackHostOnly`) or one that a page of another origin made (:class:`OwnOriginOnly`). Model work runs in
Starlette's thread pool, so one slow request does not hold up the others.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import re
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.responses import JSONResponse as StarletteJSON
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cnnlab.errors import CnnlabError
from cnnlab.explore import opsview, runs
from cnnlab.explore.images import MAX_UPLOAD_BYTES, decode_upload, thumbnail_url
from cnnlab.explore.model import ModelFailure, RunModel, analyze_image, model_card
from cnnlab.explore.model_card import learned_kernels, model_info
from cnnlab.explore.session import Session
from cnnlab.io import writable_text
from cnnlab.runs import decide_status, read_metrics

STATIC = Path(str(resources.files("cnnlab.explore") / "static"))
INTEGER = re.compile(r"-?[0-9]{1,18}")  # a query's integer (int() refuses more than 4,300 digits with ValueError)
POLL_S, HEARTBEAT_S, STREAM_MAX_S = 1.0, 15.0, 6 * 3600
# A host name or ".domain" (--allow-host): letters, digits, dashes and dots, no scheme, port, path or wildcard.
HOST_NAME = re.compile(r"\.?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
DEFAULT_PORTS = {"http": 80, "https": 443}
FLAGS = {"": False, "0": False, "false": False, "off": False, "1": True, "true": True, "on": True}


def clean(value: Any) -> Any:
    """``value`` with every NaN or infinity as ``None``: strict JSON, which the browser's parser requires."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


class JSONResponse(StarletteJSON):
    """Starlette's JSON response with NaN/infinity sent as null (metrics.csv holds NaN for unmeasured cells), and a
    name that is not UTF-8 (an image's, a run folder's) with U+FFFD where its undecodable bytes were: encoding it
    failed, and every route that names it answered 500."""

    def render(self, content: Any) -> bytes:
        return writable_text(json.dumps(clean(content), ensure_ascii=False, allow_nan=False,
                                        separators=(",", ":"))).encode("utf-8")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)


async def _not_found(request: Request, exc) -> Response:
    return _error(404, "not found")


async def _server_error(request: Request, exc) -> Response:
    return _error(500, f"internal error: {type(exc).__name__}: {exc}"[:300])


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 405:  # a route that is there, asked with a method it does not answer
        allowed = ", ".join(sorted(m.strip() for m in (exc.headers or {}).get("Allow", "").split(",") if m.strip()))
        return _error(405, f"{request.method} is not allowed here, expected {allowed or 'another method'}")
    return _error(exc.status_code, exc.detail)


# Both apps answer an unknown path, a wrong method, or an unexpected failure in JSON, as every route does.
ERROR_HANDLERS = {404: _not_found, 500: _server_error, HTTPException: _http_error}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, ``[::1]`` in brackets or not, or a name) names this machine's loopback."""
    host = host.strip("[]").lower()
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


class LoopbackHostOnly:
    """Refuse (403) a request that reaches the server on loopback but names another host than loopback.

    Listening on 127.0.0.1 keeps other machines out, but not a web page open in this machine's browser: a site whose
    name it re-points to 127.0.0.1 after the page has loaded (DNS rebinding) is, for the browser, of the same origin
    as the explorer, and reads every answer (the runs, their test images, a model's layers). Its requests come in on
    loopback with its own name in ``Host``; the page's own carry 127.0.0.1, localhost or [::1]. A request from
    another machine (a server the user put on another address with ``--host``) is answered whatever it names.
    ``allowed``: names the user opens the page by through a proxy that forwards to this server and passes its own
    name on (JupyterHub's jupyter-server-proxy, a cloud IDE's port forwarding, a tunnel), each a host name or a
    ``.domain`` for every name under it (``--allow-host``).
    """

    def __init__(self, app, allowed: tuple[str, ...] = ()):
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send):
        server = scope.get("server") if scope["type"] == "http" else None  # the address the request came in on
        if server and is_loopback(str(server[0])):
            asked = Headers(scope=scope).get("host")
            name = (_host_and_port(asked, 0) or ("",))[0] if asked is not None else ""
            # (a browser always names one; an HTTP/1.0 tool may not)
            if asked is not None and not is_loopback(name) and not is_allowed(name, self.allowed):
                await _error(403, f"expected a request for 127.0.0.1, localhost or [::1], as this machine's browser "
                                  f"makes them on loopback, got one for {asked!r} (a web page that points its own "
                                  f"name at this machine is refused); open http://{netloc(*server)}/, or, behind a "
                                  f"proxy that forwards that name here, pass --allow-host {name or 'NAME'}")(
                    scope, receive, send)
                return
        await self.app(scope, receive, send)


def is_allowed(name: str, allowed: tuple[str, ...]) -> bool:
    """Whether host ``name`` is one of ``allowed`` (lower-case names, a ``.domain`` for every name under it)."""
    name = name.lower()
    return any(name == a or (a.startswith(".") and (name.endswith(a) or name == a[1:])) for a in allowed)


def allowed_hosts(names) -> tuple[str, ...]:
    """``--allow-host`` names checked and lower-cased: a host name (``hub.example.org``) or ``.domain``, no scheme,
    port, path or wildcard."""
    checked = []
    for name in names or ():
        plain = str(name).strip().lower()
        if not HOST_NAME.fullmatch(plain) or is_loopback(plain):
            raise CnnlabError(f"--allow-host takes a host name the page is opened by through a proxy (hub.example.org, "
                              f"or .example.org for every name under it), got {name!r}")
        checked.append(plain)
    return tuple(checked)


def netloc(address: str, port: int) -> str:
    """``address:port`` as a URL writes it (an IPv6 address in brackets)."""
    return f"[{address}]:{port}" if ":" in str(address) else f"{address}:{port}"


def _host_and_port(text: str, default: int) -> tuple[str, int] | None:
    """The host name (lower case, brackets off) and port of ``host[:port]``; None for one that does not parse."""
    try:
        parts = urlsplit(f"//{text}")
        return (parts.hostname or "").lower(), parts.port or default
    except ValueError:  # a port out of range or not a number, an unbalanced bracket
        return None


class OwnOriginOnly:
    """Refuse (403) a request that a page of another origin made: one whose ``Origin`` header (which browsers send
    with every POST, and with a script's requests to another origin) is not the origin the request names in ``Host``.

    Another web site open in the browser can POST a file to the explorer without asking (a form, or a "simple"
    ``fetch``: no preflight); it cannot read the answer, but the machine decodes the picture and runs the model for
    it. The page's own requests carry its own origin; a tool (curl, Python) sends none and is answered. Host names
    are compared as loopback or not (:func:`is_loopback`), so ``http://localhost:PORT`` and ``127.0.0.1:PORT`` are
    one; the scheme is not compared (a proxy may add TLS in front), the port is. ``Origin: null`` (a sandboxed
    frame, a ``file://`` page, a redirect) is refused: any site can make its requests so, and the page the explorer
    saves (``--export``) never asks the server anything. A page of an ``allowed`` name (:class:`LoopbackHostOnly`)
    is the explorer's own, through the proxy, whatever port the proxy listens on.
    """

    def __init__(self, app, allowed: tuple[str, ...] = ()):
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send):
        headers = Headers(scope=scope) if scope["type"] == "http" else None
        origin = headers.get("origin") if headers is not None else None
        if origin is not None and not self._own(origin, headers.get("host"), scope.get("server"), self.allowed):
            await _error(403, f"expected a request from the explorer's own page, got one from {origin!r}: another web "
                              "page (or a sandboxed or file:// one, Origin null) may not make this server decode a "
                              "picture or run its model")(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _own(origin: str, host: str | None, server, allowed: tuple[str, ...]) -> bool:
        try:
            parts = urlsplit(origin)
            theirs = (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not theirs[0] or parts.path or parts.query:
            return False
        if is_allowed(theirs[0], allowed):  # the page, opened through the user's proxy
            return True
        if host is None and server:  # (an HTTP/1.0 request names no host: the address it came in on)
            host = netloc(*server)
        mine = _host_and_port(host or "", DEFAULT_PORTS[parts.scheme])
        if mine is None:
            return False
        same_host = theirs[0] == mine[0] or (is_loopback(theirs[0]) and is_loopback(mine[0]))
        return same_host and theirs[1] == mine[1]


def _middleware(allowed: tuple[str, ...]) -> list[Middleware]:
    return [Middleware(LoopbackHostOnly, allowed=allowed), Middleware(OwnOriginOnly, allowed=allowed)]


def _guarded(fn):
    """Turn the library's one-line errors into JSON responses (404 for names that are not there); a query parameter
    given twice is refused, since only one of its values would be read."""

    async def endpoint(request: Request) -> Response:
        keys = [k for k, _ in request.query_params.multi_items()]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            values = ", ".join(repr(v) for v in request.query_params.getlist(repeated[0]))
            return _error(400, f"?{repeated[0]}= is given {keys.count(repeated[0])} times ({values}); expected it "
                               "once")
        try:
            return await fn(request)
        except runs.NotFound as e:
            return _error(404, str(e))
        except ModelFailure as e:
            # 422, not 400 or 500: the request was well formed and the picture decoded, but the model's own code
            # could not answer it; a 5xx would call it the server's fault, and the line says whose it is
            return _error(422, str(e))
        except CnnlabError as e:
            return _error(400, str(e))

    return endpoint


def _int(query, name: str, default: int | None = None) -> int:
    """The integer ``?name=`` of the request's ``query`` (``default`` when absent or empty, if there is one)."""
    value = query.get(name)
    if not value and default is not None:
        return default
    if value is None or not INTEGER.fullmatch(value):  # int() also reads "1_0" as 10, and other scripts' digits
        raise CnnlabError(f"expected an integer ?{name}=, got {value!r}")
    return int(value)


def _flag(query, name: str) -> bool:
    """The yes-or-no ``?name=`` of the request's ``query`` (no when absent or empty); a value that is neither is
    refused, since it would be read as no without a word."""
    value = query.get(name, "").lower()
    if value not in FLAGS:
        raise CnnlabError(f"expected ?{name}= 1, true or on (or 0, false, off), got {query.get(name)!r}")
    return FLAGS[value]


def _run(request: Request) -> str:
    return request.query_params.get("run", "")


def create_app(root: str | Path, allow_hosts: tuple[str, ...] = ()) -> Starlette:
    """The explorer's ASGI app serving the runs under ``root`` (a runs folder or one run folder); ``allow_hosts``:
    names it may be opened by through a proxy (:func:`allowed_hosts`)."""
    allowed = allowed_hosts(allow_hosts)
    session = Session(root)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def api_runs(request: Request) -> Response:
        return JSONResponse({"root": str(session.root), "runs": await run_in_threadpool(runs.list_runs,
                                                                                      session.root)})

    def _detail(name: str) -> dict[str, Any]:
        detail = runs.summarize_run(session.root, name, detail=True)
        if detail.get("checkpoint"):  # an unreadable run has an error and no checkpoint
            try:
                detail["model_info"] = model_info(session.model(name))
            except CnnlabError as e:
                detail["model_error"] = str(e)
        return detail

    async def api_run(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(_detail, _run(request)))

    async def api_metrics(request: Request) -> Response:
        run = runs.resolve_run(session.root, _run(request))
        return JSONResponse({"metrics": read_metrics(run), "finished": (run / "result.json").is_file()})

    async def api_figure(request: Request) -> Response:
        run = runs.resolve_run(session.root, _run(request))
        name = request.query_params.get("name", "")
        if name not in ("curves.png",):
            raise runs.NotFound("no such figure")
        return FileResponse(runs.run_file(run, name), media_type="image/png")

    async def api_stream(request: Request) -> Response:
        run = runs.resolve_run(session.root, _run(request))
        return StreamingResponse(_metric_events(request, run), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def api_gallery(request: Request) -> Response:
        cls = _int(request.query_params, "class") if "class" in request.query_params else None
        return JSONResponse(await run_in_threadpool(session.gallery, _run(request), cls))

    def _analyze_test(name: str, index: int) -> dict[str, Any]:
        loaded, image, label, split = session.test_image(name, index)
        what = f"{split} image #{index}"  # a run without a test split shows its validation images
        result = analyze_image(RunModel(loaded.trained), image, what=what)
        return {**result, "source": what, "label": loaded.trained.meta.classes[label]}

    def _analyze_upload(name: str, data: bytes, invert: bool) -> dict[str, Any]:
        loaded = session.model(name)
        meta = loaded.trained.meta
        image = decode_upload(data, meta.channels, meta.image_size, invert=invert, crop=meta.crops_pictures)
        return {**analyze_image(RunModel(loaded.trained), image, what="the upload"), "source": "your image",
                "label": None}

    async def api_analyze(request: Request) -> Response:
        name = _run(request)
        if request.method in ("GET", "HEAD"):  # Starlette answers HEAD wherever GET is
            return JSONResponse(await run_in_threadpool(_analyze_test, name, _int(request.query_params, "index")))
        runs.resolve_run(session.root, name)  # 404 before reading any upload for a run that is not there
        body = await _read_upload(request)
        if isinstance(body, Response):
            return body
        invert = _flag(request.query_params, "invert")
        return JSONResponse(await run_in_threadpool(_analyze_upload, name, body, invert))

    def _ops(q) -> dict[str, Any]:
        source = q.get("input", "book")
        if source in opsview.INPUTS:
            x = opsview.INPUTS[source]()
        elif source == "custom":
            x = opsview.parse_matrix(q.get("x", ""), "input", opsview.MAX_INPUT)
        elif source == "test":
            loaded, image, _, _ = session.test_image(q.get("run", ""), _int(q, "index", 0))
            x = image.float().mean(0) / 255  # grey, in [0, 1]
        else:
            raise CnnlabError(f"expected input book, edges, custom or test, got {source!r}")
        kernel = None
        op = q.get("op", "corr")
        if op == "corr":
            choice = q.get("kernel", "book")
            if choice in opsview.KERNELS:
                kernel = opsview.KERNELS[choice]
            elif choice == "custom":
                kernel = opsview.parse_matrix(q.get("k", ""), "kernel", opsview.MAX_KERNEL)
            elif choice == "learned":
                weights = learned_kernels(session.model(q.get("run", "")))
                i = _int(q, "unit", 0)
                if not 0 <= i < len(weights):
                    raise CnnlabError(f"expected a first-layer kernel from 0 to {len(weights) - 1}, got {i}")
                kernel = weights[i]
            else:
                raise CnnlabError(f"expected kernel book, edge, blur, sharpen, learned or custom, got {choice!r}")
        return opsview.run_op(op, x, kernel, pool=_int(q, "pool", 2), stride=_int(q, "stride", 1),
                              padding=_int(q, "padding", 0))

    async def api_ops(request: Request) -> Response:
        try:
            return JSONResponse(await run_in_threadpool(_ops, request.query_params))
        except ValueError as e:
            if isinstance(e, CnnlabError):
                raise
            raise CnnlabError(f"expected integer settings, got {e}") from None

    routes = [
        Route("/", index),
        Route("/api/runs", _guarded(api_runs)),
        Route("/api/run", _guarded(api_run)),
        Route("/api/metrics", _guarded(api_metrics)),
        Route("/api/figure", _guarded(api_figure)),
        Route("/api/stream", _guarded(api_stream)),
        Route("/api/gallery", _guarded(api_gallery)),
        Route("/api/analyze", _guarded(api_analyze), methods=["GET", "POST"]),
        Route("/api/ops", _guarded(api_ops)),
        Mount("/static", StaticFiles(directory=STATIC, follow_symlink=False)),
    ]
    return Starlette(routes=routes, exception_handlers=ERROR_HANDLERS, middleware=_middleware(allowed))


async def _read_upload(request: Request) -> bytes | Response:
    """The request body, or a 413 response once it is over ``MAX_UPLOAD_BYTES`` (declared or counted); a 400 for a
    POST that also names a listed image (``?image=``, ``?index=``: the body would win unsaid) or sends a form (the
    body is the file's own bytes, as the page sends it)."""
    picked = [k for k in ("image", "index") if k in request.query_params]
    if picked:
        return _error(400, f"a POST analyses the image file in its body; ?{picked[0]}= picks a listed image with a "
                           "GET: expected one or the other")
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        return _error(400, "expected the image file's bytes as the request body (curl --data-binary @FILE), got a "
                           "multipart/form-data form")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        return _error(413, f"the upload is {int(declared) / 2**20:.1f} MiB, expected at most "
                           f"{MAX_UPLOAD_BYTES // 2**20} MiB")
    body = bytearray()
    async for chunk in request.stream():  # counted as it arrives: a missing or false Content-Length is no way in
        body += chunk
        if len(body) > MAX_UPLOAD_BYTES:
            return _error(413, f"the upload is larger than {MAX_UPLOAD_BYTES // 2**20} MiB, the limit")
    return bytes(body)


def create_model_app(model, images=None, allow_hosts: tuple[str, ...] = ()) -> Starlette:
    """The explorer's ASGI app for one model of any kind (:class:`cnnlab.explore.model.ExploreModel`);
    ``allow_hosts`` as for :func:`create_app`.

    ``images`` is an :class:`cnnlab.explore.imagefolder.ImageSet` (or None: uploads only). Routes: ``/`` (the model
    page, ``static/model.html``), ``/api/model`` (the model card), ``/api/images`` (the folder's thumbnails),
    ``/api/analyze?image=I`` and ``POST /api/analyze`` (an upload, the raw file as body). The routes never ask
    which kind of model it is.
    """
    allowed = allowed_hosts(allow_hosts)
    spec = model.spec
    cache: dict[str, Any] = {}
    lock = threading.Lock()

    def _card() -> dict[str, Any]:
        with lock:
            if "card" not in cache:
                cache["card"] = model_card(model)
            return cache["card"]

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "model.html", headers={"Cache-Control": "no-store"})

    async def api_model(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(_card))

    async def api_images(request: Request) -> Response:
        if images is None:
            return JSONResponse({"images": [], "found": 0, "classes": []})
        return JSONResponse(await run_in_threadpool(image_list, images))

    def _analyze(index: int) -> dict[str, Any]:
        if images is None or not 0 <= index < len(images.names):
            count = 0 if images is None else len(images.names)
            raise CnnlabError(f"expected an image index from 0 to {count - 1}, got {index}" if count else
                              "no image folder was given (--images); upload a file instead")
        name = images.names[index]
        return {**analyze_image(model, images.fed(index), what=name), "source": name,
                "label": images.labels[index]}

    def _analyze_upload(data: bytes, invert: bool) -> dict[str, Any]:
        image = decode_upload(data, spec.channels, spec.read_hw, invert=invert, crop=spec.crop, fit=spec.fit)
        return {**analyze_image(model, image, what="the upload"), "source": "your image", "label": None}

    async def api_analyze(request: Request) -> Response:
        if request.method in ("GET", "HEAD"):
            return JSONResponse(await run_in_threadpool(_analyze, _int(request.query_params, "image")))
        body = await _read_upload(request)
        if isinstance(body, Response):
            return body
        invert = _flag(request.query_params, "invert")
        return JSONResponse(await run_in_threadpool(_analyze_upload, body, invert))

    routes = [
        Route("/", index),
        Route("/api/model", _guarded(api_model)),
        Route("/api/images", _guarded(api_images)),
        Route("/api/analyze", _guarded(api_analyze), methods=["GET", "POST"]),
        Mount("/static", StaticFiles(directory=STATIC, follow_symlink=False)),
    ]
    return Starlette(routes=routes, exception_handlers=ERROR_HANDLERS, middleware=_middleware(allowed))


def image_list(images) -> dict[str, Any]:
    """The image folder as the page lists it: thumbnails (PNG URLs), names and labels."""
    return {"images": [{"index": i, "name": n, "label": lab, "png": thumbnail_url(img)}
                       for i, (n, lab, img) in enumerate(zip(images.names, images.labels, images.images,
                                                             strict=True))],
            "found": images.found, "classes": list(images.classes), "skipped": list(images.skipped)}


async def _metric_events(request: Request, run: Path):
    """Server-sent events: ``metrics`` with all rows whenever metrics.csv changes, ``done`` once result.json exists
    or the run stops (:func:`cnnlab.runs.decide_status`: at once after a signal's stop, which writes
    interrupted.json; after ``STALE_S`` of quiet for a killed one), ``failure`` when its folder is gone.

    The file is polled (one ``stat`` a second): the training loop does no extra work for a watcher. A client that
    goes away, or a server asked to stop (``app.state.stopping()``, set by :mod:`cnnlab.explore.launch`), ends the
    generator at the next poll.
    """
    gone = f"event: failure\ndata: {json.dumps({'error': 'the run folder is gone (deleted or moved)'})}\n\n"
    stopping = getattr(request.app.state, "stopping", lambda: False)
    last, started, beat = None, time.monotonic(), time.monotonic()
    while time.monotonic() - started < STREAM_MAX_S:
        if await request.is_disconnected() or stopping():
            return
        csv = run / "metrics.csv"
        try:  # every file may vanish between two looks at it: the folder removed (or --force) while watched
            if not (run / "config.json").is_file():
                yield gone
                return
            finished = (run / "result.json").is_file()
            stamp = (csv.stat().st_mtime_ns, csv.stat().st_size) if csv.is_file() else None
            rows = read_metrics(run) if stamp != last else None
            ended = finished or decide_status(run, None, {}, now=time.time()) != "training"
        except FileNotFoundError:
            yield gone
            return
        except CnnlabError as e:  # (a file half gone reads as damaged: say what really happened)
            yield gone if not (run / "config.json").is_file() else \
                f"event: failure\ndata: {json.dumps({'error': str(e)})}\n\n"
            return
        if rows is not None:
            last = stamp
            yield f"event: metrics\ndata: {json.dumps(clean({'metrics': rows}))}\n\n"
        if ended:
            yield "event: done\ndata: {}\n\n"
            return
        if time.monotonic() - beat > HEARTBEAT_S:
            beat = time.monotonic()
            yield ": heartbeat\n\n"
        await asyncio.sleep(POLL_S)
