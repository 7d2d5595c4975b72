"""`segrt serve` in one process: bind the port (refused at once when taken), open every model (the
variant predict would pick, its gate held on this CPU), say what serves where, run the ASGI app with
uvicorn, and on SIGTERM or Ctrl-C stop accepting, answer what was received, exit 0 within --grace."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import signal
import socket
import sys
import threading
import time

from segrt.errors import SegrtError

__all__ = ["run_serve", "bind", "start_lines"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), or one line saying why not."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a host name
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise SegrtError(f"{host}:{port} is already in use; pick another --port (or stop what listens there)") \
                from None
        raise SegrtError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); check --host and --port") from None
    sock.set_inheritable(True)
    return sock


def start_lines(models, host: str, port: int, token: bool = False) -> list[str]:
    """What serves where: one line per model (the variant and why), the address, a non-loopback host said."""
    lines = [f"model {m.name!r}: {m.variant}" + (f" ({m.session.auto_note})" if m.session.auto_note else "")
             for m in models]
    if host not in _LOOPBACK:
        lines.append(f"note: --host {host} is reachable from other machines, not only this one"
                     + ("" if token else "; consider --token-file"))
    shown = f"[{host}]" if ":" in host else host
    lines.append(f"listening on http://{shown}:{port} (Open Inference Protocol at /v2, POST /predict, /metrics); "
                 "Ctrl-C or SIGTERM stops it")
    return lines


class _Server:
    """uvicorn's Server, with SIGTERM and SIGINT meaning 'drain and exit 0' (uvicorn re-raises the
    signal after its shutdown, which would end the process with 143 instead)."""

    def __init__(self, config):
        import uvicorn

        early: list = []  # a signal before uvicorn listens for them (right after the start lines) still drains
        main = threading.current_thread() is threading.main_thread()
        before = {s: signal.signal(s, lambda *_: early.append(1)) for s in (signal.SIGINT, signal.SIGTERM)} \
            if main else {}

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(inner):
                inner.should_exit = bool(early)
                for s in before:  # main thread only (before is empty elsewhere)
                    signal.signal(s, lambda *_: setattr(inner, "should_exit", True))
                try:
                    yield
                finally:
                    for s, h in before.items():  # the handlers from before segrt serve started
                        signal.signal(s, h)

        self.server = Quiet(config)

    def run(self, sock: socket.socket) -> None:
        self.server.run(sockets=[sock])


def run_serve(exports: list[str], *, host: str = "127.0.0.1", port: int = 8000, grace: float = 30.0,
              access_log: bool = False, opts=None, log=None, **model_options) -> None:
    """Serve until SIGTERM/SIGINT. ``model_options``: ServedModel's (provider, session_options, max_pixels,
    full_decode). Startup problems raise SegrtError (the CLI: one line, exit 2)."""
    import uvicorn

    from segrt.serve.app import create_app
    from segrt.serve.model import ServedModel

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    sock = bind(host, port)
    port = sock.getsockname()[1]
    models = []
    try:
        for export in exports:
            models.append(ServedModel(export, **model_options))
        app = create_app(models, opts)
    except BaseException:
        sock.close()
        for m in models:
            m.close()
        raise
    config = uvicorn.Config(app, log_config=_log_config(access_log), access_log=access_log,
                            timeout_graceful_shutdown=grace, lifespan="on", server_header=False)
    server = _Server(config)  # from here on SIGTERM/SIGINT drain and exit 0
    for line in start_lines(models, host, port, token=bool(opts and opts.token)):
        log(line)
    t0 = time.monotonic()
    server.run(sock)
    log(f"stopped after {time.monotonic() - t0:.0f} s: every request received was answered")


def _log_config(access_log: bool) -> dict:
    """uvicorn's own logging, quiet but for warnings, and the access log (one line a request) when asked."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["uvicorn.error"]["level"] = "WARNING"
    config["loggers"]["uvicorn.access"]["level"] = "INFO" if access_log else "WARNING"
    return config
