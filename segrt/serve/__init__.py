"""segrt serve: the verified model behind HTTP (Open Inference Protocol + POST /predict), with dynamic
batching over predict's own pipeline; Ray Serve past one machine. Needs ``pip install 'segrt[serve]'``
(Starlette, uvicorn, python-multipart, prometheus_client); no torch.

    app = segrt.serve.create_app(["exported/pets"])   # an ASGI app: mount it in your own service
"""

from segrt.serve.app import ServeOptions, create_app

__all__ = ["create_app", "ServeOptions", "require"]


def require() -> None:
    """One line naming the extra when the server's packages are missing."""
    from segrt.cpuinfo import module_available
    from segrt.errors import SegrtError

    missing = [m for m in ("starlette", "uvicorn", "multipart", "prometheus_client") if not module_available(m)]
    if missing:
        raise SegrtError(f"segrt serve needs {', '.join(missing)}: pip install 'segrt[serve]'")
