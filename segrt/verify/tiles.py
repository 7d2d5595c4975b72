"""`segrt parity --tile`: tiled vs whole-image inference through the same artifact, on real images,
so a tile size and overlap can be chosen with evidence (and against ground truth when given)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from segrt.errors import ImageError, SegrtError
from segrt.imaging.decode import load_image
from segrt.imaging.prepare import prepare
from segrt.imaging.files import list_images
from segrt.imaging.masks import to_mask
from segrt.imaging.metrics import ConfusionMatrix
from segrt.progress import progress
from segrt.runtime.memory import batch_bytes, gb, memory_budget
from segrt.runtime.tiling import segment, tile_spec

__all__ = ["run_tile_parity", "format_tile_report"]


def run_tile_parity(export_dir: str | os.PathLike, images, masks=None, *, tile="auto", overlap: float = 0.25,
                    blend: str = "gaussian", provider: str = "cpu", artifact: str | None = None,
                    batch_size: int = 4, limit: int | None = None, json_path=None, mask_map=None) -> dict:
    """Per image: the whole-image mask (native resolution, padded) and the tiled one; their mask IoU
    and pixel agreement, and with ``masks`` the mIoU of each against the ground truth."""
    from segrt.runtime.session import Session
    from segrt.verify.truth import Unmapped, read_truth, truth_lut

    session = Session(export_dir, provider=provider, artifact=artifact,
                      kind=None if artifact else "onnx", precision=None if artifact else "fp32")
    manifest = session.manifest
    spec = tile_spec(tile, overlap, blend, manifest)
    paths = list_images(images) if Path(images).is_dir() else [Path(images)]
    paths = paths[:limit] if limit else paths
    if not paths:
        raise SegrtError(f"{images}: no images found")
    truths = {p.stem: p for p in list_images(masks)} if masks else {}
    lut, unmapped, n = truth_lut(manifest, mask_map), Unmapped(manifest, mask_map), manifest.num_classes
    agree, gt_whole, gt_tiled = ConfusionMatrix(n), ConfusionMatrix(n, 255), ConfusionMatrix(n, 255)
    per_image, skipped = [], {}
    for p in progress(paths, desc="tiled vs whole", unit="img"):
        pair = _whole_and_tiled(session, p, spec, batch_size)
        if isinstance(pair, str):
            skipped[p.name] = pair
            continue
        whole, tiled = pair
        agree.update(tiled, whole)
        per_image.append({"input": p.name, "mask_iou": ConfusionMatrix(n).update(tiled, whole).miou(),
                          "pixel_agreement": float((tiled == whole).mean())})
        if masks:
            if p.stem not in truths:
                raise SegrtError(f"{p}: no ground-truth mask named {p.stem}.* in {masks}")
            truth = read_truth(truths[p.stem], manifest, lut, unmapped)
            gt_whole.update(whole, truth)
            gt_tiled.update(tiled, truth)
    report = {"artifact": session.describe(), "tile": spec.tile, "overlap": spec.overlap, "stride": spec.stride,
              "blend": spec.blend, "inputs": len(per_image), "skipped": skipped,
              "mask_iou_tiled_vs_whole": agree.miou(), "pixel_agreement": agree.pixel_accuracy(),
              "worst": sorted(per_image, key=lambda r: r["mask_iou"])[:5]}
    if masks:
        report["miou_whole_vs_ground_truth"], report["miou_tiled_vs_ground_truth"] = gt_whole.miou(), gt_tiled.miou()
        unmapped.say(masks)
    if json_path:
        from segrt.fsutil import write_bytes_atomic

        write_bytes_atomic(Path(json_path), (json.dumps(report, indent=2) + "\n").encode())
    return report


def _whole_and_tiled(session, path: Path, spec, batch_size: int):
    """-> (whole-image mask, tiled mask) of one image, or why the whole-image run is skipped."""
    manifest = session.manifest
    try:
        image = load_image(path, manifest.channels, None)
    except ImageError as exc:
        raise SegrtError(f"parity needs readable images: {exc}") from None
    x, geo = prepare(image, manifest.mean, manifest.std, None, manifest.size_multiple)
    budget, need = memory_budget(), batch_bytes(manifest, 1, *x.shape[1:])
    if budget is not None and need > budget:
        return f"too large for a whole-image run (~{gb(need)})"
    return to_mask(session.run(x[None])[0], geo), segment(session.run, image, spec, manifest, batch_size)


def format_tile_report(r: dict) -> str:
    lines = [f"tiled {r['tile']}x{r['tile']} (overlap {r['overlap']:g}, stride {r['stride']}, {r['blend']}) vs "
             f"whole image, {r['inputs']} image(s), {r['artifact']}:",
             f"  mask IoU {r['mask_iou_tiled_vs_whole']:.5f}, pixel agreement {r['pixel_agreement']:.5f}"]
    if "miou_whole_vs_ground_truth" in r:
        lines.append(f"  mIoU vs ground truth: whole {r['miou_whole_vs_ground_truth']:.4f}, "
                     f"tiled {r['miou_tiled_vs_ground_truth']:.4f}")
    lines.append("  worst: " + ", ".join(f"{w['input']} (IoU {w['mask_iou']:.4f})" for w in r["worst"][:3]))
    lines += [f"  skipped {k}: {v}" for k, v in r["skipped"].items()]
    return "\n".join(lines)
