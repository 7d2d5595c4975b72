"""segrt serve's own cost per request: the health round trip, and POST /predict against the same pipeline
run in process on the same photo and model file (medians). Prints the overhead in milliseconds.

    python benchmarks/serve_overhead.py
"""

from __future__ import annotations

import http.client
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_throughput import free_port, start, stop  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "examples" / "images" / "Abyssinian_4.jpg"
MODEL = ROOT / "exported" / "pets" / "model.int8.onnx"


def median_ms(fn, n: int, warm: int = 10) -> float:
    for _ in range(warm):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def served(data: bytes) -> tuple[float, float]:
    """(health round trip, POST /predict) medians in ms, one keep-alive connection."""
    port = free_port()
    proc = start([sys.executable, "-m", "segrt.cli", "serve", "--port", str(port), "--model", str(MODEL)], port)
    conn = http.client.HTTPConnection("127.0.0.1", port)

    def call(method: str, path: str, body: bytes | None = None):
        conn.request(method, path, body)
        conn.getresponse().read()

    try:
        return median_ms(lambda: call("GET", "/v2/health/live"), 500), median_ms(lambda: call("POST", "/predict", data),
                                                                                  100)
    finally:
        stop(proc)


def in_process(data: bytes) -> float:
    """The same stages without HTTP: decode from memory, the model, the mask, its PNG."""
    from segrt.imaging import masks
    from segrt.predict.options import PredictOptions
    from segrt.predict.pipeline import Predictor
    from segrt.runtime.backends.base import SessionOptions
    from segrt.runtime.session import Session

    session = Session(MODEL, provider="cpu", options=SessionOptions(spin=False, throughput=True))
    predictor = Predictor(session, PredictOptions(progress=False))

    def once():
        x, geometry = predictor.model_input(PHOTO, data=data)
        masks.encode_mask_pngs(masks.to_mask(session.run(x[None])[0], geometry))

    return median_ms(once, 100)


def main() -> int:
    data = PHOTO.read_bytes()
    health, predict = served(data)
    alone = in_process(data)
    from segrt.cpuinfo import cpu_info

    cpu = cpu_info()
    print(f"{cpu['model']} [{' '.join(cpu['isa'])}], {os.cpu_count()} cores: "
          f"health round trip p50 {health:.2f} ms; POST /predict p50 {predict:.1f} ms; the same pipeline in process "
          f"p50 {alone:.1f} ms; segrt serve's overhead {predict - alone:.1f} ms per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
