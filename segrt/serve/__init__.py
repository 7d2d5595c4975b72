"""segrt serve: the verified model behind HTTP (Open Inference Protocol + POST /predict), with dynamic
batching over predict's own pipeline; Ray Serve past one machine. Needs ``pip install 'segrt[serve]'``
(Starlette, uvicorn, python-multipart, prometheus_client); no torch.

    app = segrt.serve.create_app(["exported/pets"])   # an ASGI app: mount it in your own service

Options: segrt.serve.app.ServeOptions (max_batch, max_delay_ms, max_queue, max_body_mb, token).
"""

__all__ = ["create_app"]


def create_app(models, opts=None, batchers=None, **model_options):
    """The ASGI application serving ``models`` (export folders or .onnx files): segrt.serve.app.create_app."""
    from segrt.serve import app

    return app.create_app(models, opts, batchers, **model_options)
