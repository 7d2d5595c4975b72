"""The servers a user would write instead of `segrt serve`, for benchmarks/serve_throughput.py: the tutorial
pipeline (Pillow decode, bilinear resize to the working size, normalize, ONNX Runtime, argmax, nearest
resize of the mask back, PNG) behind

    fastapi:   FastAPI + uvicorn, one request at a time through one ONNX Runtime session
    litserve:  LitServe with its request batching (max_batch_size, batch_timeout)

Run: python benchmarks/serve_peers.py fastapi|litserve --model FILE.onnx --export DIR --port P
Both answer POST /predict with a PNG of class ids: FastAPI takes the image as the body, LitServe (which
parses JSON or forms only) as the multipart form file "file".
"""


import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image


class Pipeline:
    def __init__(self, model: Path, export: Path):
        import onnxruntime as ort

        manifest = json.loads((export / "manifest.json").read_text())
        self.size = tuple(manifest["input"]["size"])
        self.mean = np.array(manifest["normalization"]["mean"], np.float32)[:, None, None]
        self.std = np.array(manifest["normalization"]["std"], np.float32)[:, None, None]
        self.session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def pre(self, data: bytes) -> tuple[np.ndarray, tuple[int, int]]:
        img = Image.open(io.BytesIO(data)).convert("RGB")
        x = np.asarray(img.resize(self.size[::-1], Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255.0
        return (x - self.mean) / self.std, img.size

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: x})[0]

    @staticmethod
    def post(logits: np.ndarray, wh: tuple[int, int]) -> bytes:
        mask = Image.fromarray(logits.argmax(0).astype(np.uint8)).resize(wh, Image.NEAREST)
        buf = io.BytesIO()
        mask.save(buf, "PNG")
        return buf.getvalue()


def fastapi_app(pipe: Pipeline):
    from fastapi import FastAPI, Request, Response

    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request):
        data = await request.body()
        x, wh = pipe.pre(data)  # one request at a time: the event loop runs it
        return Response(pipe.post(pipe.run(x[None])[0], wh), media_type="image/png")

    return app


try:  # LitServe starts its workers by spawn: the API class must live at module level
    import litserve as ls
except ImportError:  # only the litserve peer needs it
    ls = None

if ls is not None:
    from fastapi import Request, Response

    class LitPipeline(ls.LitAPI):
        def __init__(self, model: Path, export: Path, **kwargs):
            super().__init__(**kwargs)
            self.model, self.export = model, export

        def setup(self, device):
            self.pipe = Pipeline(self.model, self.export)

        def decode_request(self, request: Request):  # LitServe hands over the parsed multipart form
            return self.pipe.pre(request["file"].file.read())

        def batch(self, inputs):
            return np.stack([x for x, _ in inputs]), [wh for _, wh in inputs]

        def predict(self, batch):
            x, whs = batch
            return self.pipe.run(x), whs

        def unbatch(self, output):
            logits, whs = output
            return list(zip(logits, whs))

        def encode_response(self, output):
            logits, wh = output
            return Response(self.pipe.post(logits, wh), media_type="image/png")


def litserve_server(model: Path, export: Path, max_batch: int, timeout: float):
    if ls is None:
        raise SystemExit("the litserve peer needs: pip install litserve")
    api = LitPipeline(model, export, max_batch_size=max_batch, batch_timeout=timeout, api_path="/predict")
    return ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["fastapi", "litserve"])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--export", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--batch-timeout", type=float, default=0.005)
    args = parser.parse_args()
    if args.kind == "fastapi":
        import uvicorn

        uvicorn.run(fastapi_app(Pipeline(args.model, args.export)), host="127.0.0.1", port=args.port,
                    log_level="warning")
    else:
        litserve_server(args.model, args.export, args.max_batch, args.batch_timeout).run(port=args.port, host="127.0.0.1",
                                                                       log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
