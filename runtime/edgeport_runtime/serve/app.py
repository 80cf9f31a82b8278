"""The HTTP service around one loaded model (Starlette): /predict, /health, /info, /metrics and a page at /."""
from __future__ import annotations

import contextlib
import hmac
import importlib
import importlib.util
import io
import json
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..errors import EdgeportError, InputError
from ..model import MAX_CHUNK, Model, load
from ..results import summarize
from .batcher import MicroBatcher
from .decode import UnsupportedMedia, decode
from .health import HealthCheck
from .metrics import CONTENT_TYPE, Metrics
from .page import PAGE

DEFAULT_MAX_BODY = 8 << 20  # 8 MiB: ~2 M float32 values as .npy, a large photo; a Pi has RAM to spare for that
OPEN_ROUTES = ("/", "/health")  # no token needed: the page holds no data, health says only ok / why not
ROUTES = ("/", "/health", "/info", "/metrics", "/predict")


@dataclass
class Options:
    """How the service runs (the command line's options)."""

    max_body_bytes: int = DEFAULT_MAX_BODY
    max_batch: int = MAX_CHUNK
    token: Optional[str] = None
    top: int = 3


class Service:
    """One loaded model with its health check, micro-batcher and metrics."""

    def __init__(self, model: Model, load_seconds: float, options: Options) -> None:
        self.model = model
        self.options = options
        self.started = time.time()
        self.metrics = Metrics()
        self.load_seconds = load_seconds
        info = model.info
        self.metrics.set_model(load_seconds, {k: info.get(k) for k in (
            "artifact", "recipe", "format", "quantization", "backend", "threads")})
        self.health = HealthCheck(model)
        self.task = model.manifest.task if model.manifest else "classification"
        self.pre = model.manifest.preprocessing if model.manifest else {}
        self.shapes = [list(s.shape) for s in model.inputs]
        tail = model.outputs[0].shape[1:]
        self.classes = int(np.prod(tail)) if None not in tail else None  # None: not known before a prediction
        if importlib.util.find_spec("PIL") is not None:  # image uploads: import Pillow now, not on the first one
            try:
                importlib.import_module("PIL.Image")
            except ImportError:  # a broken Pillow: uploads will say so, everything else works
                pass
        self.batcher: Optional[MicroBatcher] = None
        if len(model.inputs) == 1 and len(model.outputs) == 1:
            self.batcher = MicroBatcher(self._predict, options.max_batch, self._on_batch)

    def _predict(self, x):
        # finite inputs far beyond an int8 input's range overflow to inf while quantizing, then clamp to the end of
        # the range: the right answer, but numpy would print a RuntimeWarning into the service log per request
        with np.errstate(over="ignore"):
            return self.model.predict(x)

    def _on_batch(self, n: int, seconds: float) -> None:
        self.metrics.batch.observe(n)
        self.metrics.inference.observe(seconds)
        self.metrics.samples.inc(n)

    def validate(self, arrays: List[np.ndarray]) -> List[np.ndarray]:
        """Shapes, batch sizes and finiteness checked per request (one bad request never fails a batch)."""
        out, n = [], None
        for a, spec in zip(arrays, self.model.inputs):
            want = ["N" if d is None else d for d in spec.shape]
            if a.ndim != len(spec.shape) or any(d is not None and d != g for d, g in zip(spec.shape[1:], a.shape[1:])):
                raise InputError(f"input {spec.name!r}: expected shape {want} (or one sample {want[1:]}), got "
                                 f"{list(a.shape)}.")
            if n is not None and len(a) != n:
                raise InputError(f"inputs have different batch sizes ({n} and {len(a)}).")
            n = len(a)
            with np.errstate(over="ignore"):  # values beyond float32's range become inf: refused just below
                a = np.ascontiguousarray(a, dtype=np.float32)
            if not np.all(np.isfinite(a)):
                raise InputError(f"input {spec.name!r}: {int((~np.isfinite(a)).sum())} NaN/Inf value(s) (or numbers "
                                 "beyond float32's range); send finite numbers.")
            out.append(a)
        return out

    async def predict(self, xs: List[np.ndarray]):
        """Outputs for validated inputs, through the micro-batcher when the model has one input and output."""
        if self.batcher is not None:
            return await self.batcher.submit(xs[0])
        t0 = time.perf_counter()
        y = await run_in_threadpool(self._predict, xs if len(xs) > 1 else xs[0])
        dt = time.perf_counter() - t0
        self._on_batch(len(xs[0]), dt)
        return y, {"batch": int(len(xs[0])), "model_ms": round(dt * 1000, 4)}

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        self.model.close()


def _error(status: int, message: str, headers: Optional[Dict[str, str]] = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


async def _read_body(request: Request, cap: int) -> bytes:
    """The body, refused with 413 as soon as it (or its declared length) passes ``cap`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > cap:
                raise HTTPException(413, f"the body is {int(declared):,} bytes; this service takes at most {cap:,} "
                                         "(--max-body-bytes). Send fewer samples per request.")
        except ValueError:
            raise HTTPException(400, f"Content-Length {declared[:30]!r} is not a number.") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise HTTPException(413, f"the body passed {cap:,} bytes, the most this service takes "
                                     "(--max-body-bytes). Send fewer samples per request.")
        chunks.append(chunk)
    return b"".join(chunks)


def _top(value: Any, n_classes: Optional[int]) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise InputError(f"top={value[:20]!r} is not an integer; expected one >= 1.") from None
    if type(value) is not int or not 1 <= value:
        raise InputError(f"top must be an integer >= 1, got {value!r}.")
    return value if n_classes is None else min(value, max(n_classes, 1))


def _svc(request: Request) -> Service:
    return request.app.state.service


async def predict(request: Request) -> Response:
    """POST /predict: JSON, .npy or an image -> outputs, top-k per sample and the time spent (JSON), or with
    ``Accept: application/x-npy`` the output array as .npy (time in the X-Time-Ms / X-Model-Ms headers)."""
    t0 = time.perf_counter()
    svc = _svc(request)
    body = await _read_body(request, svc.options.max_body_bytes)
    try:
        arrays, opts = decode(request.headers.get("content-type"), body, svc.shapes, svc.pre)
        xs = svc.validate(arrays)
        top = _top(opts.get("top", request.query_params.get("top", svc.options.top)), svc.classes)
    except UnsupportedMedia as e:
        return _error(415, e)
    except InputError as e:
        return _error(400, e)
    y, detail = await svc.predict(xs)
    if not isinstance(y, list) and "application/x-npy" in request.headers.get("accept", ""):
        # programs that send arrays can take the outputs back as an array: no JSON either way
        buf = io.BytesIO()
        np.save(buf, y)
        return Response(buf.getvalue(), media_type="application/x-npy", headers={
            "X-Time-Ms": f"{(time.perf_counter() - t0) * 1000:.4f}", "X-Model-Ms": str(detail["model_ms"]),
            "X-Batch": str(detail["batch"])})
    res: Dict[str, Any] = {}
    if isinstance(y, list):
        res["outputs"] = [o.tolist() for o in y]
    else:
        res["outputs"] = y.tolist()
        try:
            res["results"] = summarize(xs[0], y, svc.task, svc.model.labels, top)
        except EdgeportError as e:
            return _error(500, e)
    res["time_ms"] = {"total": round((time.perf_counter() - t0) * 1000, 4), **detail}
    return JSONResponse(res)


async def health(request: Request) -> Response:
    """GET /health: 200 when the model runs its check inputs to the recorded outputs, else 503 and why."""
    svc = _svc(request)
    ok, details = await run_in_threadpool(svc.health.run)
    svc.metrics.healthy.set(1 if ok else 0)
    info = svc.model.info
    body = {"status": "ok" if ok else "failing", "artifact": info.get("artifact"), "backend": info["backend"],
            "threads": info["threads"], "uptime_s": round(time.time() - svc.started, 1), **details}
    return JSONResponse(body, status_code=200 if ok else 503)


async def info(request: Request) -> Response:
    """GET /info: the model (inputs, outputs, labels, preprocessing, artifacts) and the service's settings."""
    svc = _svc(request)
    d = dict(svc.model.info)
    if svc.model.manifest is not None:
        d["artifacts"] = [{"name": a.name, "format": a.format, "recipe": a.recipe, "quantization": a.quantization,
                           "bytes": a.bytes} for a in svc.model.manifest.artifacts]
    d["service"] = {"version": __version__, "load_s": round(svc.load_seconds, 4),
                    "max_body_bytes": svc.options.max_body_bytes, "max_batch": svc.options.max_batch,
                    "micro_batching": svc.batcher is not None, "auth": svc.options.token is not None,
                    "top": svc.options.top}
    return Response(json.dumps(d, default=str), media_type="application/json")


async def metrics(request: Request) -> Response:
    """GET /metrics: Prometheus text."""
    return Response(_svc(request).metrics.render(), media_type=CONTENT_TYPE)


async def page(request: Request) -> Response:
    """GET /: a page to try the model from a browser."""
    return HTMLResponse(PAGE)


async def _http_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        if exc.status_code == 404:
            return _error(404, f"no route {request.method} {request.url.path[:100]}; routes: GET /, GET /health, "
                               "GET /info, GET /metrics, POST /predict.")
        if exc.status_code == 405:
            return _error(405, f"{request.method} is not allowed on {request.url.path}; see GET /info.",
                          headers=exc.headers)
        return _error(exc.status_code, exc.detail, headers=exc.headers)
    return _error(500, "internal error")


async def _server_error(request: Request, exc: Exception) -> Response:
    """Anything unexpected: a one-line 500 (the service keeps running; uvicorn logs the traceback)."""
    if isinstance(exc, EdgeportError):  # e.g. ModelRunError: the interpreter failed on this batch
        return _error(500, exc)
    return _error(500, f"internal error ({type(exc).__name__}); a bug in edgeport-run serve: see the service log.")


class Guard:
    """ASGI middleware: bearer-token check and request metrics, around every HTTP request."""

    def __init__(self, app, service: Service) -> None:
        self.app = app
        self.service = service
        token = service.options.token
        self._expected = None if token is None else f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        path = scope["path"]
        route = path if path in ROUTES else "other"
        status = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self._expected is not None and path not in OPEN_ROUTES:
                got = dict(scope["headers"]).get(b"authorization", b"")
                if not hmac.compare_digest(got, self._expected):  # constant time: no token guessing by timing
                    resp = _error(401, "missing or wrong bearer token; send 'Authorization: Bearer TOKEN' (the "
                                       "token is in the file passed to --token-file).",
                                  headers={"WWW-Authenticate": 'Bearer realm="edgeport"'})
                    await resp(scope, receive, send_status)
                    return
            await self.app(scope, receive, send_status)
        finally:
            m = self.service.metrics
            m.requests.labels(route, scope["method"], str(status[0])).inc()
            m.latency.labels(route).observe(time.perf_counter() - t0)


def create_app(source: str, artifact: Optional[str] = None, backend: Optional[str] = None,
               threads: Optional[int] = None, options: Optional[Options] = None) -> Starlette:
    """Load the model (errors raise here, before anything listens) and build the ASGI app.

    Raises:
        EdgeportError: the model does not load (ModelLoadError, IntegrityError, BackendUnavailableError, ...).
    """
    options = options or Options()
    t0 = time.perf_counter()
    model = load(source, backend=backend, num_threads=threads, artifact=artifact)
    service = Service(model, time.perf_counter() - t0, options)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        service.close()

    app = Starlette(routes=[Route("/", page), Route("/health", health), Route("/info", info),
                            Route("/metrics", metrics), Route("/predict", predict, methods=["POST"])],
                    exception_handlers={HTTPException: _http_error, Exception: _server_error},
                    lifespan=lifespan)
    app.state.service = service
    app.add_middleware(Guard, service=service)
    return app
