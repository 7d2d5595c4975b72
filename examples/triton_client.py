"""Segment images with a model served by Triton (a repository from `segrt triton-repo`), using
segrt's own preprocessing and mask code, so the masks match `segrt predict`:

    segrt triton-repo exported/pets --out models/            # then, where Triton runs:
    tritonserver --model-repository models/
    python examples/triton_client.py --url localhost:8001 --model pets --repo models/ examples/images/*.jpg

Needs `pip install 'segrt[triton]'` (tritonclient with gRPC).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def segment(client, model: str, manifest, path: Path) -> np.ndarray:
    """preprocess (segrt.imaging.decode) -> infer on Triton -> HW uint8 mask (segrt.imaging.masks)."""
    import tritonclient.grpc as grpcclient

    from segrt.imaging.decode import read_model_input
    from segrt.imaging.masks import to_mask

    x, geometry = read_model_input(path, manifest)
    request = grpcclient.InferInput(manifest.input_name, [1, *x.shape], "FP32")
    request.set_data_from_numpy(x[None])
    result = client.infer(model, [request], outputs=[grpcclient.InferRequestedOutput(manifest.output_name)])
    return to_mask(result.as_numpy(manifest.output_name)[0], geometry)


def main():
    import tritonclient.grpc as grpcclient

    from segrt.imaging.masks import encode_mask_pngs
    from segrt.manifest import Manifest

    p = argparse.ArgumentParser()
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--url", default="localhost:8001", help="Triton's gRPC endpoint")
    p.add_argument("--model", default="pets")
    p.add_argument("--repo", type=Path, default=Path("models"), help="the repository (its manifest.json is read)")
    p.add_argument("--out", type=Path, default=Path("triton-masks"))
    args = p.parse_args()
    manifest = Manifest.load(args.repo / args.model)
    client = grpcclient.InferenceServerClient(args.url)
    if not client.is_model_ready(args.model):
        raise SystemExit(f"error: model {args.model!r} is not ready on {args.url}")
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        grey, _ = encode_mask_pngs(segment(client, args.model, manifest, path))
        (args.out / f"{path.stem}.png").write_bytes(grey)
        print(f"{path} -> {args.out / path.stem}.png")


if __name__ == "__main__":
    main()
