"""The gate sample an export carries (runtime.here re-checks variants on it), and `segrt verify`:
every variant of an export on that sample, on this CPU, against its gate."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from segrt.errors import SegrtError
from segrt.imaging.decode import read_model_input
from segrt.imaging.prepare import round_up, to_uint8
from segrt.imaging.files import list_images
from segrt.manifest import Manifest, sha256_file
from segrt.runtime.here import (SAMPLE_FILE, SAMPLE_MAX, check_here, load_sample, open_variant, sample_inputs,
                               sample_verdict, signature)

__all__ = ["sample_paths", "write_sample", "run_verify", "format_verify"]


def sample_paths(paths: list[Path], train: list[str] | None) -> list[Path]:
    """Up to SAMPLE_MAX of ``paths``, evenly spread, never a training image (stems in ``train``)."""
    held = [p for p in sorted(paths) if p.stem not in set(train or ())]
    step = max(1, len(held) // SAMPLE_MAX)
    return held[::step][:SAMPLE_MAX]


def _sample_input(path: Path, manifest: Manifest) -> np.ndarray | None:
    """One input at the working size as NCHW-ready uint8 pixels; a native-size model's is a centre
    crop of its training crop (None when the image is smaller than that)."""
    x, geo = read_model_input(path, manifest)
    pixels = to_uint8(x[None], manifest.mean, manifest.std)[0]
    if manifest.input_size:
        return pixels
    h, w = (round_up(s, manifest.size_multiple) for s in (manifest.crop_size or [256, 256]))
    oh, ow = geo.original_hw
    if oh < h or ow < w:
        return None
    top, left = (oh - h) // 2, (ow - w) // 2
    return pixels[:, top:top + h, left:left + w]


def _encode_webp(pixels: np.ndarray) -> bytes:
    """CHW uint8 -> lossless WebP (a third smaller than PNG; one channel stored as grey RGB)."""
    from PIL import Image

    hwc = pixels.transpose(1, 2, 0)
    out = io.BytesIO()
    Image.fromarray(np.repeat(hwc, 3, axis=2) if hwc.shape[2] == 1 else hwc).save(out, "WEBP", lossless=True,
                                                                               quality=100, method=4)
    return out.getvalue()


def write_sample(folder: Path, paths: list[Path], source: str, log=print) -> dict:
    """gate_sample.npz from held-out images (up to 16: see sample_paths), with the fp32 ONNX's masks
    on them; listed in the manifest with its hash."""
    from segrt.fsutil import write_bytes_atomic
    from segrt.runtime.session import Session

    manifest = Manifest.load(folder)
    chosen = sample_paths(paths, manifest.split.get("train"))
    pixels = [p for p in (_sample_input(path, manifest) for path in chosen) if p is not None]
    if not pixels:
        raise SegrtError(f"{source}: no held-out image (not in the model's training split) for the gate sample")
    pixels = np.stack(pixels)
    fp32 = Session(folder, artifact=manifest.artifact("onnx", "fp32").name, provider="cpu")
    masks = np.concatenate([fp32.run(sample_inputs(pixels[i:i + 4], manifest, False)).argmax(1).astype(np.uint8)
                            for i in range(0, len(pixels), 4)])
    webp = [_encode_webp(p) for p in pixels]
    buf = io.BytesIO()
    np.savez_compressed(buf, webp=np.frombuffer(b"".join(webp), np.uint8), ends=np.cumsum([len(w) for w in webp]),
                        masks=masks)
    write_bytes_atomic(folder / SAMPLE_FILE, buf.getvalue())
    manifest.gate_sample = {"file": SAMPLE_FILE, "sha256": sha256_file(folder / SAMPLE_FILE), "images": len(pixels),
                            "size": list(pixels.shape[2:]), "source": source, "masks": "the fp32 ONNX's argmax"}
    manifest.gate_sample["agreement"] = _agreement_then(folder, manifest, (pixels, masks))
    manifest.gate_sample["measured_on"] = signature()
    manifest.save(folder)
    log(f"gate sample: {len(pixels)} held-out images from {source} at {pixels.shape[3]}x{pixels.shape[2]} "
        f"({(folder / SAMPLE_FILE).stat().st_size / 1e6:.2f} MB) in {folder / SAMPLE_FILE}")
    return manifest.gate_sample


def _agreement_then(folder: Path, manifest: Manifest, sample) -> dict[str, float]:
    """Each gated reduced-precision variant's agreement on the new sample, on this CPU: what a check
    elsewhere compares with (runtime.here.Verdict)."""
    from segrt.runtime.select import cannot_run_here

    found = {}
    for art in manifest.artifacts:
        if art.kind in ("onnx", "openvino") and art.precision != "fp32" and manifest.passed(art.name) \
                and not cannot_run_here(art) and manifest.in_copy(folder, art):
            backend, uint8 = open_variant(folder, manifest, art)
            verdict = sample_verdict(backend.run, uint8, sample, manifest, art, backend.fixed_batch or 4)
            found[art.name] = verdict.mask_iou
    return found


def run_verify(folder: str | Path, sample_images=None, log=print) -> dict:
    """`segrt verify`: every ONNX/OpenVINO variant on the gate sample here (fresh, and cached for
    auto), against its gate. ``sample_images``: held-out images to make the sample from first."""
    from segrt.fsutil import check_writable
    from segrt.runtime.select import cannot_run_here

    folder = Path(folder)
    manifest = Manifest.load(folder)
    manifest.verify(folder)
    if sample_images:
        check_writable(folder, "--sample-images writes gate_sample.npz into it")
        write_sample(folder, list_images(sample_images) if Path(sample_images).is_dir() else [Path(sample_images)],
                     str(sample_images), log)
        manifest = Manifest.load(folder)
    sample = load_sample(folder, manifest)
    if sample is None:
        raise SegrtError(f"{folder}: no gate sample in this export; add one with segrt verify {folder} "
                         "--sample-images HELD_OUT_IMAGES")
    rows = []
    for art in manifest.artifacts:
        if art.kind not in ("onnx", "openvino"):
            continue
        gate = manifest.parity.get(art.name)
        row = {"artifact": art.name, "precision": art.precision, "gated": gate.mask_iou if gate else None,
               "gate": gate.gates.mask_iou_min if gate else None}
        why = cannot_run_here(art) or (None if manifest.in_copy(folder, art) else "not in this copy")
        if why or gate is None:
            rows.append({**row, "status": f"not run here: {why}" if why else "no gate recorded"})
            continue
        # gated on another CPU class: the check auto makes, run fresh and cached for it; else the sample alone
        verdict = check_here(folder, manifest, art, log, fresh=True) if art.precision != "fp32" else None
        if verdict is None:
            try:
                backend, uint8 = open_variant(folder, manifest, art)
                verdict = sample_verdict(backend.run, uint8, sample, manifest, art, backend.fixed_batch or 4)
            except SegrtError as exc:
                rows.append({**row, "problems": [f"cannot run here: {exc}"], "status": "FAIL"})
                continue
        if not verdict.images:  # the runtime cannot run it here
            rows.append({**row, "problems": verdict.problems, "status": "FAIL"})
            continue
        rows.append({**row, "here": verdict.mask_iou, "estimate": verdict.estimate, "then": verdict.then,
                     "pixel_agreement": verdict.pixel_agreement,
                     "problems": verdict.problems, "status": "pass" if verdict.passed else "FAIL"})
    failed = [r for r in rows if r["status"] == "FAIL"]
    return {"export": str(folder), "sample": manifest.gate_sample, "machine": signature(), "rows": rows,
            "passed": not failed}


def format_verify(result: dict) -> str:
    """The table: agreement with fp32 on the gate set where the variant was gated, on the gate sample
    when it was made and here, the estimate for the gate set here (what is gated), the result."""
    num = lambda v: f"{v:.4f}" if v is not None else "-"  # noqa: E731
    head = ("variant", "precision", "agreement where gated", "gate", "sample then", "sample here", "gated here",
            "result")
    body = [(r["artifact"], r["precision"], num(r["gated"]), str(r["gate"] or "-"), num(r.get("then")),
             num(r.get("here")), num(r.get("estimate")), r["status"]) for r in result["rows"]]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in (head, *body)]
    lines += [f"FAIL {r['artifact']}: {'; '.join(r['problems'])}" for r in result["rows"] if r["status"] == "FAIL"]
    m, s = result["machine"], result["sample"]
    lines.append(f"on {m['cpu']} ({m['isa_class']}; " + ", ".join(f"{k} {v}" for k, v in m.items()
                                                               if k not in ("cpu", "isa_class"))
                 + f"), gate sample: {s['images']} images at {'x'.join(map(str, s['size']))}")
    lines.append("verify: " + ("every variant holds its gate on this CPU" if result["passed"] else "FAILED"))
    return "\n".join(lines)
