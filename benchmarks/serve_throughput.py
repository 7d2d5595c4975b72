"""segrt serve against offline segrt predict and the servers a user would write instead, in one run, on
the same photos and the same model file (an ONNX file of the export, run by ONNX Runtime everywhere):

    segrt serve v2       Open Inference Protocol, BYTES in, masks_png out (request bodies built and answers
                         read by tritonclient's own encoder/parser; sent over keep-alive HTTP)
    segrt serve /predict the photo as the body, a PNG of class ids back
    segrt serve auto     /predict on the variant segrt serve picks itself (often OpenVINO INT8)
    fastapi+ort          FastAPI + ONNX Runtime, one request at a time (benchmarks/serve_peers.py)
    litserve+ort         LitServe with its batching (benchmarks/serve_peers.py)
    segrt predict        offline, the photos as files (images/s from its summary)

Each client sends one photo per request in a loop on its own connection; images/s and p50/p99 latency
at 1, 4, 16 and 64 clients. Masks are checked against segrt predict's (agreement, pixels).

    python benchmarks/serve_throughput.py --images ../shared/data/oxford_iiit_pet_subset/images --count 32
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import io
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import heading, link_photos, save  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = (1, 4, 16, 64)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int, timeout: float = 300) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{cmd[:4]} exited: {proc.stderr.read()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"{cmd[:4]} did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


class Client:
    """How one system is asked: request (path, body, headers) per photo, the PNG read from the answer."""

    def __init__(self, path: str, body, read_png):
        self.path, self.body, self.read_png = path, body, read_png


def plain_client(photos: list[Path]) -> Client:
    bodies = [p.read_bytes() for p in photos]
    return Client("/predict", lambda i: (bodies[i], {}), lambda data: data)


def form_client(photos: list[Path]) -> Client:
    """The photo as the multipart form file "file" (how LitServe takes an upload)."""
    boundary = "benchboundary"
    bodies = [(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{p.name}\"\r\n"
               "Content-Type: application/octet-stream\r\n\r\n").encode() + p.read_bytes()
              + f"\r\n--{boundary}--\r\n".encode() for p in photos]
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return Client("/predict", lambda i: (bodies[i], headers), lambda data: data)


def v2_client(photos: list[Path], model: str) -> Client:
    import tritonclient.http as th

    bodies = []
    for p in photos:
        inp = th.InferInput("image_bytes", [1], "BYTES")
        inp.set_data_from_numpy(np.array([p.read_bytes()], dtype=object))
        body, length = th.InferenceServerClient.generate_request_body(
            [inp], outputs=[th.InferRequestedOutput("masks_png", binary_data=True)])
        bodies.append((body, {"Inference-Header-Content-Length": str(length)}))

    def read_png(data: bytes, length: int) -> bytes:
        return th.InferResult.from_response_body(data, header_length=length).as_numpy("masks_png")[0]

    return Client(f"/v2/models/{model}/infer", lambda i: bodies[i], read_png)


def load(port: int, client: Client, n_photos: int, clients: int, total: int) -> dict:
    """``total`` requests from ``clients`` threads (keep-alive connections); images/s, p50, p99, errors."""
    latencies, errors, counter, lock = [], [], iter(range(total)), threading.Lock()

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            body, headers = client.body(i % n_photos)
            t0 = time.perf_counter()
            conn.request("POST", client.path, body, headers)
            r = conn.getresponse()
            r.read()
            latencies.append(time.perf_counter() - t0)
            if r.status != 200:
                errors.append(r.status)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": total, "images_per_s": round(total / wall, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "errors": len(errors)}


def masks_of(port: int, client: Client, photos: list[Path]) -> dict[str, np.ndarray]:
    out = {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    for i, p in enumerate(photos):
        body, headers = client.body(i)
        conn.request("POST", client.path, body, headers)
        r = conn.getresponse()
        data = r.read()
        length = r.getheader("Inference-Header-Content-Length")
        png = client.read_png(data) if length is None else client.read_png(data, int(length))
        out[p.name] = np.asarray(Image.open(io.BytesIO(png)))
    conn.close()
    return out


def agreement(got: dict, want: dict) -> float:
    same = sum(int((got[k] == want[k]).sum()) for k in want)
    return same / sum(v.size for v in want.values())


def offline(photos_dir: Path, model: Path, out: Path, photos: list[Path]) -> tuple[dict, dict]:
    """segrt predict on the photos: (its summary's images/s, the masks)."""
    import json

    res = subprocess.run([sys.executable, "-m", "segrt.cli", "predict", str(photos_dir), "--model", str(model),
                          "--out", str(out), "--quiet", "--json", "--no-color"], cwd=ROOT, capture_output=True,
                         text=True)
    if res.returncode:
        raise SystemExit(res.stderr)
    summary = json.loads(res.stdout)
    masks = {p.name: np.asarray(Image.open(out / f"{p.stem}.png")) for p in photos}
    return summary, masks


def system_commands(args, model_file: Path, port: int) -> dict[str, list[str]]:
    segrt = [sys.executable, "-m", "segrt.cli", "serve", "--port", str(port), "--max-batch", str(args.max_batch)]
    peers = [sys.executable, str(ROOT / "benchmarks" / "serve_peers.py")]
    common = ["--model", str(model_file), "--export", str(args.model), "--port", str(port)]
    return {"segrt serve v2": [*segrt, "--model", str(model_file)],
            "segrt serve /predict": [*segrt, "--model", str(model_file)],
            "segrt serve auto /predict": [*segrt, "--model", str(args.model)],
            "fastapi+ort": [*peers, "fastapi", *common],
            "litserve+ort": [*peers, "litserve", *common, "--max-batch", str(args.max_batch)]}


def run(args) -> dict:
    from segrt.cpuinfo import cpu_info
    from segrt.manifest import Manifest

    manifest = Manifest.load(args.model)
    model_file = args.model / args.file
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    photos_dir = link_photos(args.images, args.count, work / "photos")
    photos = sorted(photos_dir.iterdir())
    summary, reference = offline(photos_dir, model_file, work / "predicted", photos)
    rows = [{"system": "segrt predict (offline)", "clients": None, "images_per_s": summary["images_per_s"],
             "agreement": 1.0}]
    print(f"segrt predict: {summary['images_per_s']:.1f} images/s", flush=True)
    for name, cmd in system_commands(args, model_file, port := free_port()).items():
        proc = start(cmd, port)
        try:
            client = (v2_client(photos, manifest.name) if "v2" in name else form_client(photos) if "litserve" in name
                      else plain_client(photos))
            got = masks_of(port, client, photos)  # also the warm-up
            agree = agreement(got, reference)
            for c in CLIENTS:
                row = {"system": name, **load(port, client, len(photos), c, max(args.requests, 2 * c)),
                       "agreement": round(agree, 5)}
                rows.append(row)
                print(row, flush=True)
        finally:
            stop(proc)
    return {"date": dt.date.today().isoformat(), "cpu": cpu_info(), "cores": os.cpu_count(),
            "model": str(model_file.relative_to(ROOT) if model_file.is_relative_to(ROOT) else model_file), "photos": len(photos), "max_batch": args.max_batch,
            "predict_summary": {k: summary.get(k) for k in ("images_per_s", "provider", "artifact")}, "rows": rows}


def ratios(result: dict) -> dict:
    rows = result["rows"]
    offline_ips = rows[0]["images_per_s"]
    at = {(r["system"], r["clients"]): r for r in rows[1:]}
    peers = max(at[(p, 16)]["images_per_s"] for p in ("fastapi+ort", "litserve+ort"))
    serve16 = at[("segrt serve v2", 16)]["images_per_s"]
    return {"serve16_vs_predict": round(serve16 / offline_ips, 2), "serve16_vs_best_peer": round(serve16 / peers, 2),
            "serve1_p50_vs_predict_ms_per_image": round(at[("segrt serve v2", 1)]["p50_ms"] / (1000 / offline_ips), 2)}


def markdown(result: dict) -> str:
    lines = [heading(result, f"segrt serve throughput: {result['model']}, {result['photos']} photos"), "",
             "| system | clients | images/s | p50 ms | p99 ms | errors | masks vs predict |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['system']} | {r['clients'] or '-'} | {r['images_per_s']:.1f} | {r.get('p50_ms', '-')} | "
                     f"{r.get('p99_ms', '-')} | {r.get('errors', '-')} | {r['agreement']:.5f} |")
    lines += ["", "Ratios: " + ", ".join(f"{k} {v}" for k, v in result["ratios"].items()), ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    systems = dict.fromkeys(r["system"] for r in result["rows"][1:])
    for s in systems:
        pts = [(r["clients"], r["images_per_s"]) for r in result["rows"] if r["system"] == s]
        ax.plot(*zip(*pts), marker="o", label=s)
    ax.axhline(result["rows"][0]["images_per_s"], color="grey", ls="--", label="segrt predict (offline)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("images/s")
    ax.set_title(f"serving {Path(result['model']).name} on {result['cpu']['model']}, {result['cores']} cores")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "exported" / "pets", help="the export")
    parser.add_argument("--file", default="model.int8.onnx", help="the export's ONNX file every system runs")
    parser.add_argument("--images", type=Path, default=ROOT / "examples" / "images")
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--requests", type=int, default=64, help="requests per measurement (at least 2 per client)")
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--tag", default="machine")
    args = parser.parse_args(argv)
    result = run(args)
    result["ratios"] = ratios(result)
    name = f"{result['date']}-{args.tag}-serve-throughput"
    stem = save(result, markdown(result), re.sub(r"[^\w.-]", "-", name))
    plot(result, stem.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
