"""`segrt serve --ray`: the same ASGI application on Ray Serve replicas, past one machine. Each replica
builds the app of segrt.serve.app with Ray Serve's ``@serve.batch`` as its batcher (the same batch
function, run_grouped); Ray's proxy spreads requests over the replicas. ``RAY_ADDRESS`` joins an
existing cluster (else a local Ray instance starts). Ray Serve schedules; segrt adds none of its own."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import urllib.request

from segrt.cpuinfo import usable_cores
from segrt.errors import SegrtError
from segrt.serve.batcher import run_grouped

__all__ = ["run_ray", "build_app", "deployment"]


def _ray_batcher(model, max_batch: int, wait_s: float):
    """An items -> logits batcher over Ray Serve's @serve.batch (one batch function per model)."""
    from ray import serve

    @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=wait_s)
    async def run(xs):
        return await run_grouped(model, xs)

    async def batch(items):
        return list(await asyncio.gather(*(run(item.x) for item in items)))

    return batch


def build_app(exports: list[str], opts, model_options: dict):
    """The application of one replica: segrt.serve.app's, batched by @serve.batch."""
    from segrt.serve.app import create_app
    from segrt.serve.model import ServedModel

    models = [ServedModel(e, **model_options) for e in exports]
    batchers = {m.name: _ray_batcher(m, opts.max_batch, opts.max_delay_ms / 1000) for m in models}
    return create_app(models, opts, batchers=batchers)


def deployment(exports: list[str], opts, model_options: dict, replicas: int = 1, cpus: int = 1, grace: float = 30.0):
    """The Ray Serve application (bound, ready for serve.run): ``replicas`` copies, ``cpus`` each."""
    from ray import serve

    def builder():
        return build_app(exports, opts, model_options)

    ingress = serve.ingress(builder)()
    return serve.deployment(ingress, name="segrt", num_replicas=replicas, ray_actor_options={"num_cpus": cpus},
                            max_ongoing_requests=max(opts.max_queue, 1), graceful_shutdown_timeout_s=grace).bind()


def run_ray(exports: list[str], *, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1, opts=None,
            grace: float = 30.0, log=None, **model_options) -> None:
    """Deploy on Ray Serve and serve until SIGTERM/SIGINT; then shut the application down."""
    import dataclasses

    from segrt.runtime.backends.base import SessionOptions
    from segrt.serve.app import ServeOptions, require
    from segrt.serve.run import bind

    require()
    try:
        import ray
        from ray import serve
    except ImportError:
        raise SegrtError("segrt serve --ray needs Ray Serve: pip install 'segrt[ray]'") from None
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    opts = opts or ServeOptions()
    bind(host, port).close()  # a taken port is one line now, not a proxy retrying forever
    session = model_options.get("session_options") or SessionOptions(spin=False, throughput=True, gate_here=True)
    cpus = session.threads or max(1, usable_cores() // replicas)
    model_options = {**model_options, "session_options": dataclasses.replace(session, threads=cpus)}
    ray.init(include_dashboard=False, log_to_driver=False)
    log(f"Ray {ray.__version__} at {ray.get_runtime_context().gcs_address}: {replicas} replica(s) of {cpus} CPU(s) "
        "each")
    stop = _catch_signals()  # from here on SIGTERM/SIGINT mean: shut the application down, exit 0
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(deployment(exports, opts, model_options, replicas, cpus, grace), name="segrt", route_prefix="/")
        if not stop:
            for line in _start_lines(host, port, opts):
                log(line)
        while not stop:
            time.sleep(0.2)
    finally:
        serve.shutdown()
        ray.shutdown()
    log("stopped: the Ray Serve application is shut down")


def _start_lines(host: str, port: int, opts) -> list[str]:
    """What the replicas serve, read back through Ray's proxy (as a client sees it)."""
    headers = {"Authorization": f"Bearer {opts.token}"} if opts.token else {}
    local = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    with urllib.request.urlopen(urllib.request.Request(f"http://{local}:{port}/v2/health/ready"), timeout=60):
        pass
    lines = []
    for name in _model_names(local, port, headers):
        req = urllib.request.Request(f"http://{local}:{port}/v2/models/{name}", headers=headers)
        with urllib.request.urlopen(req, timeout=60) as r:
            meta = json.load(r)
        lines.append(f"model {name!r}: {meta['parameters']['variant']} (on each replica)")
    lines.append(f"listening on http://{host}:{port} through Ray Serve (Open Inference Protocol at /v2, "
                 "POST /predict); Ctrl-C or SIGTERM stops it")
    return lines


def _model_names(host: str, port: int, headers: dict) -> list[str]:
    req = urllib.request.Request(f"http://{host}:{port}/v2/models", headers=headers)
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)["models"]


def _catch_signals() -> list:
    """A list that gets an entry when SIGTERM or SIGINT comes."""
    stop: list = []
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.append(True))
    return stop
