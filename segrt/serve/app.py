"""The ASGI application (Starlette): the Open Inference Protocol (KServe v2) and plain POST /predict
over the served models, /metrics, a bearer token, body and queue limits. ``create_app`` is the Python
API: mount its result in your own Starlette/FastAPI service, or run it with uvicorn (segrt serve)."""

from __future__ import annotations

import contextlib
import hmac
import json
import time
from dataclasses import dataclass

from segrt.errors import ImageError, SegrtError
from segrt.serve.batcher import Batcher, QueueFull
from segrt.serve.metrics import Metrics
from segrt.serve.model import ServedModel
from segrt.serve.service import Service
from segrt.serve.v2 import HEADER, ProtocolError, encode_response, parse_request, requested_outputs

__all__ = ["create_app", "ServeOptions", "HttpError", "require"]

_FORMATS = {"png", "color", "overlay", "json"}


@dataclass(frozen=True)
class ServeOptions:
    max_batch: int = 4  # images per batch run on the model (predict's --batch-size)
    max_delay_ms: float = 5.0  # how long the first image of a batch waits for others
    max_queue: int = 256  # images held at once (decoding, queued, running); more: 503 + Retry-After
    max_body_mb: float = 64.0  # request bodies above this: 413
    token: str | None = None  # when set, every route but /v2/health/* needs Authorization: Bearer TOKEN


class HttpError(Exception):
    def __init__(self, status: int, message: str, kind: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.kind, self.headers = status, kind, headers or {}


def create_app(models: list[ServedModel | str], opts: ServeOptions | None = None, batchers: dict | None = None,
               **model_options):
    """The ASGI app serving ``models`` (ServedModel objects, or export folders / .onnx files opened here
    with ``model_options``: provider, session_options, max_pixels, full_decode). ``batchers``: {name: an
    async callable items -> logits} in place of the local Batcher (Ray Serve's @serve.batch)."""
    require()
    from starlette.applications import Starlette
    from starlette.routing import Route

    opts = opts or ServeOptions()
    models = [m if isinstance(m, ServedModel) else ServedModel(m, **model_options) for m in models]
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise SegrtError(f"two models are named {next(n for n in names if names.count(n) > 1)!r}: serve exports "
                         "with different names")
    metrics, services, locals_ = Metrics(), {}, []
    for m in models:
        local = Batcher(m, opts.max_batch, opts.max_delay_ms, opts.max_queue,
                        on_batch=lambda size, name=m.name: (metrics.batch.labels(name).observe(size),
                                                            metrics.images.labels(name).inc(size)))
        locals_.append(local)
        batch = (batchers or {}).get(m.name, local)
        services[m.name] = Service(m, batch, local.admit)
        metrics.variant.labels(m.name, m.session.artifact.name, m.session.provider).set(1)
        metrics.queue.labels(m.name).set_function(lambda b=local: b.depth)
    routes = _Routes(services, opts, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        routes.ready = False
        for b in locals_:
            await b.close()
        for m in models:
            m.close()

    r = routes
    return Starlette(routes=[
        Route("/v2/health/live", r.live), Route("/v2/health/ready", r.ready_all), Route("/v2", r.server),
        Route("/v2/models", r.model_list), Route("/v2/models/{name}", r.model_metadata), Route("/v2/models/{name}/versions/{v}", r.model_metadata),
        Route("/v2/models/{name}/ready", r.model_ready), Route("/v2/models/{name}/versions/{v}/ready", r.model_ready),
        Route("/v2/models/{name}/infer", r.infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{v}/infer", r.infer, methods=["POST"]),
        Route("/predict", r.predict, methods=["POST"]), Route("/predict/{name}", r.predict, methods=["POST"]),
        Route("/metrics", r.metrics_text)], lifespan=lifespan)


def require() -> None:
    """One line naming the extra when the server's packages are missing."""
    from segrt.cpuinfo import module_available

    missing = [m for m in ("starlette", "uvicorn", "multipart", "prometheus_client") if not module_available(m)]
    if missing:
        raise SegrtError(f"segrt serve needs {', '.join(missing)}: pip install 'segrt[serve]'")


def _json(data, status: int = 200, headers: dict | None = None):
    from starlette.responses import Response

    return Response(json.dumps(data), status, headers, media_type="application/json")


def _endpoint(label: str, open_route: bool = False):
    """A route's common frame: the token, one-line errors as JSON {"error": ...}, metrics."""

    def wrap(fn):
        async def handler(self, request):
            t0, name = time.perf_counter(), request.path_params.get("name", self.default if label == "predict" else "")
            try:
                if not open_route:
                    self.authorize(request)
                response = await fn(self, request)
            except HttpError as exc:
                self.metrics.errors.labels(name, exc.kind).inc()
                response = _json({"error": str(exc)}, exc.status, exc.headers)
            self.metrics.requests.labels(name, label, str(response.status_code)).inc()
            if request.method == "POST":
                self.metrics.latency.labels(name, label).observe(time.perf_counter() - t0)
            return response

        return handler

    return wrap


class _Routes:
    def __init__(self, services: dict[str, Service], opts: ServeOptions, metrics: Metrics):
        self.services, self.opts, self.metrics, self.ready = services, opts, metrics, True
        self.default = next(iter(services))

    def authorize(self, request) -> None:
        if self.opts.token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.opts.token}".encode()):
            raise HttpError(401, "a bearer token is required (Authorization: Bearer TOKEN)", "unauthorized",
                            {"WWW-Authenticate": "Bearer"})

    def service(self, request) -> Service:
        name = request.path_params.get("name", self.default)
        if name not in self.services:
            raise HttpError(404, f"no model {name!r}; this server has {', '.join(self.services)}", "not_found")
        return self.services[name]

    async def body(self, request) -> bytes:
        limit = int(self.opts.max_body_mb * 2**20)
        declared = int(request.headers.get("content-length") or 0)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > 2 * limit:  # past twice the limit the connection is dropped rather than read on
                break
            if size <= limit and declared <= limit:
                chunks.append(chunk)
        if size > limit or declared > limit:  # read (up to twice the limit) so the client hears the 413
            raise HttpError(413, f"the request body is over --max-body-mb {self.opts.max_body_mb:g}", "too_large")
        return b"".join(chunks)

    async def answer(self, work):
        """Run a request's work; its user errors as 400/503/500 with one line."""
        try:
            return await work
        except (ProtocolError, ImageError) as exc:
            raise HttpError(400, str(exc), "bad_request") from None
        except QueueFull as exc:
            raise HttpError(503, f"busy: {exc}; retry shortly", "queue_full", {"Retry-After": "1"}) from None
        except SegrtError as exc:
            raise HttpError(500, str(exc), "engine") from None

    # -- routes ----------------------------------------------------------------------------
    @_endpoint("health", open_route=True)
    async def live(self, request):
        return _json({"live": True})

    @_endpoint("health", open_route=True)
    async def ready_all(self, request):
        return _json({"ready": self.ready}, 200 if self.ready else 503)

    @_endpoint("server")
    async def server(self, request):
        from segrt import __version__

        return _json({"name": "segrt", "version": __version__, "extensions": ["binary_tensor_data"]})

    @_endpoint("models")
    async def model_list(self, request):
        return _json({"models": list(self.services)})

    @_endpoint("metadata")
    async def model_metadata(self, request):
        return _json(self.service(request).metadata())

    @_endpoint("ready")
    async def model_ready(self, request):
        self.service(request)
        return _json({"name": request.path_params["name"], "ready": self.ready}, 200 if self.ready else 503)

    @_endpoint("v2_infer")
    async def infer(self, request):
        from starlette.responses import Response

        service, body = self.service(request), await self.body(request)

        async def work():
            req, inputs = parse_request(body, request.headers.get(HEADER))
            if len(inputs) != 1:
                raise ProtocolError(f"send one input, not {len(inputs)}: {service.metadata()['inputs'][0]['name']!r} "
                                    f"or {service.manifest.input_name!r}")
            names, binary = requested_outputs(req, service.outputs_for(inputs[0]))
            return encode_response(service.name, req, await service.infer(inputs[0], names), binary)

        content, headers = await self.answer(work())
        return Response(content, 200, headers, media_type="application/octet-stream" if headers else "application/json")

    @_endpoint("predict")
    async def predict(self, request):
        from starlette.responses import Response

        service, fmt = self.service(request), request.query_params.get("format", "png")
        if fmt not in _FORMATS:
            raise HttpError(400, f"unknown format {fmt!r}; choose from {', '.join(sorted(_FORMATS))}", "bad_request")
        name, data = await self.upload(request)
        content, media = await self.answer(service.plain(name, data, fmt))
        return _json(content) if media == "application/json" else Response(content, media_type=media)

    async def upload(self, request) -> tuple[str, bytes]:
        """The image: the body itself, or the (first) file of a multipart form."""
        body = await self.body(request)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return "body", body
        from starlette.datastructures import UploadFile
        from starlette.formparsers import MultiPartException, MultiPartParser

        async def stream():
            yield body

        try:
            form = await MultiPartParser(request.headers, stream()).parse()
        except MultiPartException as exc:
            raise HttpError(400, f"unreadable multipart form ({exc.message})", "bad_request") from None
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise HttpError(400, "the multipart form holds no file (send the image as -F file=@photo.jpg)",
                            "bad_request")
        return files[0].filename or "upload", await files[0].read()

    @_endpoint("metrics")
    async def metrics_text(self, request):
        from starlette.responses import Response

        content, media = self.metrics.text()
        return Response(content, media_type=media)
