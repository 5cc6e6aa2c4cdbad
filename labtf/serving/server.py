"""``labtf serve``: a small TF Serving compatible REST server (aiohttp).

Paths and JSON are TF Serving's (see :mod:`labtf.serving.protocol`):
``POST /v1/models/<name>[/versions/<v> | /labels/<label>]:predict`` and
``:classify``, ``GET /v1/models/<name>`` (status) and ``GET .../metadata``;
``GET /monitoring/prometheus/metrics`` (:mod:`labtf.serving.metrics`) and
``GET /healthz`` (liveness); ``GET /`` is a page to try the model. With
``grpc_port`` the same model is also served over TF Serving's gRPC API
(:mod:`labtf.serving.grpc_server`), with the same rules and limits. Every
error is ``{"error": "..."}`` with a 4xx/5xx status; the body size is limited
(413), inference is bounded (``workers``) and timed out (504), requests beyond
``max_pending`` get 503 before their body is read, and image requests are admitted
by their decoded pixels (see :mod:`labtf.serving.engine`). Connections that do not
deliver a complete request within ``timeout_s`` are closed. Access logs are JSON
lines. SIGTERM/SIGINT stop accepting connections, finish in-flight requests, then exit.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from labtf.serving.api import (classify_scores, example_images, label_version, lookup,
                               predict_outputs)
from labtf.serving.engine import MAX_REQUEST_PIXELS, EdgeModel
from labtf.serving.metrics import METRICS_PATH, ServingMetrics
from labtf.serving.page import page_html
from labtf.serving.protocol import (RestError, decode_b64, format_predict, metadata_json,
                                    parse_predict, status_json)

log = logging.getLogger(__name__)
access_log = logging.getLogger("labtf.serving.access")

__all__ = ["make_app", "run", "serve"]

MODEL_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)"
                        r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
                        r"(?:(?P<meta>/metadata)|:(?P<verb>[A-Za-z]+))?/?$")

MODEL_KEY = web.AppKey("model", EdgeModel)
OPTS_KEY = web.AppKey("opts", dict)
INFLIGHT_KEY = web.AppKey("inflight", list)   # [count] of requests inside a handler
METRICS_KEY = web.AppKey("metrics", ServingMetrics)
LABELS_KEY = web.AppKey("version_labels", dict)   # version label -> version


class JsonAccessLogger(AbstractAccessLogger):
    """One JSON object per request: time, client, method, path, status, size, ms, error."""

    def log(self, request, response, time: float) -> None:
        rec = {"ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
               "remote": request.remote, "method": request.method, "path": request.path,
               "status": response.status, "bytes": response.body_length,
               "ms": round(time * 1000, 2)}
        for key in ("instances", "error"):
            if key in request:
                rec[key] = request[key]
        self.logger.info(json.dumps(rec))


def _json(payload: dict, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(payload, separators=(",", ":")), status=status,
                        content_type="application/json")


@web.middleware
async def json_errors(request: web.Request, handler):
    """Every failure becomes TF Serving's ``{"error": "..."}``; counts in-flight requests."""
    count, metrics = request.app[INFLIGHT_KEY], request.app[METRICS_KEY]
    count[0] += 1
    metrics.inflight.inc()
    t0, status = time.perf_counter(), 500
    try:
        resp = await _handle(request, handler)
        status = resp.status
        return resp
    finally:
        count[0] -= 1
        metrics.inflight.dec()
        metrics.observe("rest", _endpoint(request), status, time.perf_counter() - t0)


def _endpoint(request: web.Request) -> str:
    """The metrics label of a request: predict, classify, status, metadata, page, ..."""
    m = MODEL_PATH.match(request.path)
    if m is not None:
        return m["verb"] or ("metadata" if m["meta"] else "status")
    return {"/": "page", METRICS_PATH: "metrics", "/healthz": "healthz"}.get(request.path, "other")


async def _handle(request: web.Request, handler):
    try:
        return await handler(request)
    except RestError as exc:
        request["error"] = exc.message
        resp = _json({"error": exc.message}, exc.status)
        if exc.status == 405:
            resp.headers["Allow"] = request.get("allow", "GET")
        if exc.status == 503:
            resp.headers["Retry-After"] = "1"
        return resp
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        msg = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        if exc.status == 413:
            msg = f"request body too large (limit {request.app[OPTS_KEY]['max_body_mb']:g} MB, --max-body-mb)"
        request["error"] = msg
        return _json({"error": msg}, exc.status)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001  the server keeps serving
        log.exception("internal error on %s %s", request.method, request.path)
        request["error"] = f"internal error: {type(exc).__name__}"
        return _json({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)


async def _read_json(request: web.Request) -> object:
    opts = request.app[OPTS_KEY]
    limit = opts["max_body_mb"] * 1e6
    if request.content_length is not None and request.content_length > limit:
        raise RestError(413, f"request body is {request.content_length / 1e6:.1f} MB, more than "
                             f"the {opts['max_body_mb']:g} MB limit (--max-body-mb)")
    try:
        raw = await asyncio.wait_for(request.read(), opts["timeout_s"])
    except asyncio.TimeoutError:
        raise RestError(408, f"request body not received within {opts['timeout_s']:g} s") from None
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise RestError(400, "JSON Parse error: nested too deeply") from None
    except ValueError as exc:
        raise RestError(400, f"JSON Parse error: {exc}") from None


def _no_constant(name: str):
    raise ValueError(f"'{name}' is not a number (JSON has no NaN or Infinity)")


async def models_route(request: web.Request) -> web.Response:
    """Dispatch ``/v1/models/...`` like TF Serving's HTTP handler."""
    model = request.app[MODEL_KEY]
    m = MODEL_PATH.match(request.path)
    if m is None:
        raise RestError(404, f"Malformed request: {request.method} {request.path}")
    verb = m["verb"]
    allow = "POST" if verb else "GET"
    if request.method != allow:
        request["allow"] = allow
        raise RestError(405, f"method {request.method} not allowed on {request.path}; use {allow}")
    version = m["version"]
    if m["label"] is not None:
        version = label_version(request.app[LABELS_KEY], m["name"], m["label"])
    lookup(model, m["name"], version)
    if verb is None:
        info = {"classes": model.classes, **model.info()}
        if m["meta"]:
            return _json(metadata_json(model.name, model.version, model.signatures, info))
        return _json(status_json(model.version))
    if verb == "classify":
        return await _classify(request, model)
    if verb != "predict":
        raise RestError(400, f"':{verb}' is not supported by this model; use ':predict' or "
                             "':classify'")
    return await _predict(request, model)


async def _predict(request: web.Request, model: EdgeModel) -> web.Response:
    timeout = request.app[OPTS_KEY]["timeout_s"]
    deadline = time.monotonic() + timeout
    model.admit_check()   # shed before reading (and holding) the body
    body = await _read_json(request)
    try:
        sig, arrays, fmt = parse_predict(body, model.signatures)
    except RecursionError:
        raise RestError(400, "request JSON is nested too deeply for the signature's inputs") from None
    request["instances"] = len(next(iter(arrays.values())))
    outputs = await predict_outputs(model, sig, arrays, timeout, deadline)
    return _json(format_predict(outputs, fmt))


async def _classify(request: web.Request, model: EdgeModel) -> web.Response:
    """TF Serving's ``:classify``: ``{"examples": [{"image_bytes": {"b64": ...}}]}`` ->
    ``{"results": [[[label, score], ...], ...]}`` (every class, in index order)."""
    from labtf.serving.api import check_signature

    body = await _read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("examples"), list):
        raise RestError(400, "':classify' body must be an object with an 'examples' list")
    check_signature(model, body.get("signature_name"), "classify")
    context = body.get("context") or {}
    if not isinstance(context, dict):
        raise RestError(400, "'context' must be an object of features")
    examples = []
    for i, ex in enumerate(body["examples"]):
        if not isinstance(ex, dict):
            raise RestError(400, f"examples[{i}]: expected an object of features")
        examples.append({**context, **ex})
    blobs = []
    for i, value in enumerate(example_images(examples)):
        where = f"examples[{i}]"
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if not (isinstance(value, dict) and set(value) == {"b64"}):
            raise RestError(400, f"{where}: the image must be {{\"b64\": \"...\"}}")
        blobs.append(decode_b64(value["b64"], where))
    request["instances"] = len(blobs)
    scores = await classify_scores(model, blobs, request.app[OPTS_KEY]["timeout_s"])
    return _json({"results": [[[c, float(p)] for c, p in zip(model.classes, row)]
                              for row in scores]})


async def index(request: web.Request) -> web.Response:
    """The try-it page."""
    model = request.app[MODEL_KEY]
    return web.Response(text=page_html(model.name, model.version), content_type="text/html")


async def favicon(request: web.Request) -> web.Response:
    """No icon: 204 instead of a 404 line in the access log."""
    return web.Response(status=204)


async def prometheus(request: web.Request) -> web.Response:
    """Prometheus text exposition (:mod:`labtf.serving.metrics`)."""
    body, ctype = request.app[METRICS_KEY].render()
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = ctype
    return resp


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers (the model is loaded before the server listens)."""
    model = request.app[MODEL_KEY]
    return _json({"status": "ok", "model": model.name, "version": str(model.version)})


async def not_found(request: web.Request) -> web.Response:
    raise RestError(404, f"no such path: {request.path} (TF Serving paths are /v1/models/<name>...)")


def make_app(model: EdgeModel, max_body_mb: float = 10.0, timeout_s: float = 30.0,
             version_labels: dict | None = None,
             metrics: ServingMetrics | None = None) -> web.Application:
    """The aiohttp application for ``model``.

    Args:
        model: the opened model.
        max_body_mb: request body limit.
        timeout_s: body-read and inference timeout.
        version_labels: TF Serving version labels (label -> version) for ``/labels/<label>``.
        metrics: the server's metrics [a new registry].
    """
    app = web.Application(middlewares=[json_errors], client_max_size=int(max_body_mb * 1e6))
    app[MODEL_KEY] = model
    app[OPTS_KEY] = {"max_body_mb": float(max_body_mb), "timeout_s": float(timeout_s)}
    app[INFLIGHT_KEY] = [0]
    app[METRICS_KEY] = metrics or ServingMetrics(model.name, model.version)
    app[LABELS_KEY] = dict(version_labels or {})
    app.router.add_get("/", index)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get(METRICS_PATH, prometheus)
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/v1/{tail:.*}", models_route)
    app.router.add_route("*", "/{tail:.*}", not_found)

    async def lifecycle(app: web.Application):
        await model.start()
        app[METRICS_KEY].set_state("AVAILABLE")
        yield
        app[METRICS_KEY].set_state("UNLOADING")
        await model.close()
        app[METRICS_KEY].set_state("END")

    app.cleanup_ctx.append(lifecycle)
    return app


async def run(model: EdgeModel, host: str = "127.0.0.1", port: int = 8501,
              max_body_mb: float = 10.0, timeout_s: float = 30.0,
              ready: Callable[[str], None] | None = None, stop: asyncio.Event | None = None,
              grpc_port: int | None = None, version_labels: dict | None = None) -> None:
    """Serve until ``stop`` is set (or SIGTERM/SIGINT in the main thread), then drain.

    Args:
        model: the opened :class:`EdgeModel`.
        host, port: where to listen (port 0: any free port).
        max_body_mb: request body limit (also the gRPC message limit).
        timeout_s: body-read and inference timeout.
        ready: called with the base URL once listening (and ``grpc://host:port`` too).
        stop: set it to shut down gracefully.
        grpc_port: also serve TF Serving's gRPC API there (0: any free port; None: off).
        version_labels: TF Serving version labels (label -> version).
    """
    stop = stop or asyncio.Event()
    app = make_app(model, max_body_mb, timeout_s, version_labels)
    # keepalive_timeout also bounds a connection's wait for its first complete request
    # (aiohttp >= 3.10 arms it at connect): slow-header clients are closed after timeout_s.
    runner = web.AppRunner(app, handle_signals=False,
                           access_log_class=JsonAccessLogger, access_log=access_log,
                           shutdown_timeout=max(1.0, min(timeout_s, 30.0)),
                           keepalive_timeout=timeout_s)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=128)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{bound}"
    grpc_server = None
    if grpc_port is not None:
        from labtf.serving.grpc_server import start_grpc

        try:
            grpc_server, grpc_bound = await start_grpc(
                model, host, grpc_port, max_body_mb=max_body_mb, timeout_s=timeout_s,
                metrics=app[METRICS_KEY], version_labels=app[LABELS_KEY])
        except Exception:
            await runner.cleanup()
            raise
        log.info("gRPC (TF Serving PredictionService/ModelService) on %s:%d", host, grpc_bound)
    loop = asyncio.get_running_loop()
    signals = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
            signals.append(sig)
    log.info("serving %s version %d (%s, %d worker(s), batch %g ms) on %s/", model.name,
             model.version, model.kind, model.workers, model.batch_ms, url)
    if ready:
        ready(url)
        if grpc_server is not None:
            ready(f"grpc://{host if ':' not in host else f'[{host}]'}:{grpc_bound}")
    try:
        await stop.wait()
    finally:
        log.info("shutting down: finishing %d in-flight request(s)", app[INFLIGHT_KEY][0])
        await site.stop()   # no new connections; open ones finish their current request
        if grpc_server is not None:
            await grpc_server.stop(timeout_s + 1.0)
        deadline = loop.time() + timeout_s + 1.0
        while app[INFLIGHT_KEY][0] and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await runner.cleanup()
        for sig in signals:   # a second signal during the drain is ignored, not fatal
            loop.remove_signal_handler(sig)
        log.info("stopped")


def setup_access_log(target: str | None) -> None:
    """JSON-lines access log to stderr (``-``), a file, or nowhere (None/"")."""
    access_log.propagate = False
    access_log.setLevel(logging.INFO)
    for h in list(access_log.handlers):
        access_log.removeHandler(h)
    if not target:
        access_log.addHandler(logging.NullHandler())
        return
    handler = logging.StreamHandler(sys.stderr) if target == "-" else logging.FileHandler(target)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(handler)


def serve(artifact: str, host: str = "127.0.0.1", port: int = 8501, workers: int = 1,
          max_body_mb: float = 10.0, timeout_s: float = 30.0, batch_ms: float = 0.0,
          max_batch: int = 16, max_pending: int = 64, name: str | None = None,
          version: int | None = None, access_log_to: str | None = "-",
          ready: Callable[[str], None] | None = None, grpc_port: int | None = None,
          version_labels: tuple[str, ...] = (),
          max_request_mp: float = MAX_REQUEST_PIXELS / 1e6) -> None:
    """Open ``artifact`` and serve it until SIGTERM/SIGINT (blocking).

    ``grpc_port`` adds TF Serving's gRPC API; ``version_labels`` name the served
    version for ``/v1/models/<name>/labels/<label>`` (and gRPC ``version_label``).

    Raises:
        LabtfError: the artifact cannot be opened; bad options.
    """
    from labtf.errors import LabtfError

    if (workers < 1 or max_body_mb <= 0 or timeout_s <= 0 or batch_ms < 0 or max_batch < 1
            or max_pending < 1 or max_request_mp <= 0):
        raise LabtfError("--workers, --max-batch and --max-pending must be >= 1, --max-body-mb, "
                         "--max-request-mp and --timeout-s > 0, --batch-ms >= 0")
    setup_access_log(access_log_to)
    model = EdgeModel(artifact, workers=workers, name=name, version=version, batch_ms=batch_ms,
                      max_batch=max_batch, max_pending=max_pending,
                      max_request_pixels=int(max_request_mp * 1e6))
    try:
        asyncio.run(run(model, host, port, max_body_mb, timeout_s, ready, grpc_port=grpc_port,
                        version_labels={label: model.version for label in version_labels}))
    except OSError as exc:
        raise LabtfError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
