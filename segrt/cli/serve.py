"""`segrt serve`."""

from __future__ import annotations

from pathlib import Path

import click

from segrt.cli.common import COUNT, NONNEG, THREADS, default_model, provider_option, user_errors
from segrt.errors import SegrtError
from segrt.imaging.decode import DEFAULT_MAX_PIXELS
from segrt.manifest import Manifest
from segrt.options import examples

__all__ = ["serve"]


@click.command(epilog=examples("segrt serve   (the bundled pets model on http://127.0.0.1:8000)",
                              "curl -s --data-binary @photo.jpg localhost:8000/predict -o mask.png"))
@click.option("--model", "models", multiple=True, type=click.Path(),
              help="an export folder or .onnx, served under its export name (repeat for several; default: the "
                   "bundled pets model)")
@click.option("--host", default="127.0.0.1", show_default=True, help="the address to listen on")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: a free port (said)")
@provider_option
@click.option("--max-batch", type=COUNT, default=4, show_default=True,
              help="images per batch run on the model (as predict's --batch-size)")
@click.option("--max-delay-ms", type=click.FloatRange(0, 10_000), default=5.0, show_default=True,
              help="how long the first image of a batch waits for others")
@click.option("--max-queue", type=COUNT, default=256, show_default=True,
              help="images held at once (decoding, waiting, running); more are answered 503 with Retry-After")
@click.option("--max-body-mb", type=click.FloatRange(min=0, min_open=True), default=64.0, show_default=True,
              help="larger request bodies are answered 413")
@click.option("--max-pixels", type=NONNEG, default=DEFAULT_MAX_PIXELS, show_default=True,
              help="refuse larger images (decompression-bomb guard, 400; 0 disables)")
@click.option("--token-file", type=click.Path(dir_okay=False),
              help="a file holding a token: requests without 'Authorization: Bearer TOKEN' get 401 (health excepted)")
@click.option("--grace", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="on SIGTERM: seconds to answer the requests received before exiting")
@click.option("--threads", type=THREADS, default=0, help="inference threads (0: all cores)")
@click.option("--allow-below-gate", is_flag=True,
              help="serve a variant named by file even when it fails its gate on this CPU's gate sample (said)")
@click.option("--full-decode", is_flag=True, help="read every JPEG in full (default: as the export chose, as predict)")
@click.option("--access-log", is_flag=True, help="one line per request on stderr")
@click.option("--ray", "on_ray", is_flag=True, help="deploy on Ray Serve (pip install 'segrt[ray]'; RAY_ADDRESS "
                                                    "joins an existing cluster)")
@click.option("--replicas", type=COUNT, default=1, show_default=True, help="with --ray: replicas of each model")
@user_errors
def serve(models, host, port, provider, max_batch, max_delay_ms, max_queue, max_body_mb, max_pixels, token_file, grace,
          threads, allow_below_gate, full_decode, access_log, on_ray, replicas):
    """Serve exported models over HTTP: the Open Inference Protocol (KServe v2; tritonclient works) and
    POST /predict, with dynamic batching and the pipeline of segrt predict."""
    from segrt.runtime.backends.base import SessionOptions
    from segrt.serve.app import ServeOptions

    if not models:
        models = (str(default_model()),)
        click.echo(f"no --model: the bundled pets demo model ({', '.join(Manifest.load(Path(models[0])).classes)}); "
                   "pass --model EXPORT for your own", err=True)
    opts = ServeOptions(max_batch, max_delay_ms, max_queue, max_body_mb, _token(token_file))
    model_options = dict(provider=provider, max_pixels=max_pixels or None, full_decode=full_decode,
                         session_options=SessionOptions(threads=threads, spin=False, throughput=True, gate_here=True,
                                                        allow_below_gate=allow_below_gate))
    if on_ray:
        from segrt.serve.ray_serve import run_ray

        run_ray(list(models), host=host, port=port, replicas=replicas, opts=opts, **model_options)
        return
    if replicas != 1:
        raise SegrtError("--replicas needs --ray (one process serves one replica; run several behind a load balancer)")
    from segrt.serve.run import run_serve

    run_serve(list(models), host=host, port=port, grace=grace, access_log=access_log, opts=opts, **model_options)


def _token(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise SegrtError(f"--token-file {path}: cannot read ({exc.strerror or exc})") from None
    if not token or any(c.isspace() for c in token):
        raise SegrtError(f"--token-file {path}: must hold one token (no spaces), it holds "
                         f"{'nothing' if not token else 'spaces'}")
    return token
