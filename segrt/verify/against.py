"""`segrt parity EXPORT --images DIR --against module:function`: segrt's masks against the user's own
pipeline (a function they already have: an image path in, an HW mask of class ids out, run in eager
PyTorch or anything else), per image, worst first. Where they disagree, segrt tries the pre- and
post-processing it can vary (size, filter, normalization, upsampling) on the worst images and names
the policy closest to the user's code, so a mismatch is seen and fixed before deployment."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np

from segrt.errors import SegrtError, first_line
from segrt.imaging.decode import read_model_input
from segrt.imaging.files import list_images
from segrt.imaging.masks import to_mask
from segrt.manifest import IMAGENET_MEAN, IMAGENET_STD, Manifest
from segrt.runtime.session import Session
from segrt.verify.thresholds import AGAINST_PIPELINE

__all__ = ["run_against", "format_against"]

_TRIED = 3  # worst images the alternative policies are tried on


def _theirs(fn, spec: str, path: Path) -> np.ndarray:
    try:
        out = fn(str(path))
    except Exception as exc:  # noqa: BLE001 - the user's function
        raise SegrtError(f"--against {spec}: failed on {path.name} ({type(exc).__name__}: {first_line(exc)})") from None
    out = out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)
    out = np.squeeze(out)
    if out.ndim != 2:
        raise SegrtError(f"--against {spec}: returned shape {list(out.shape)} for {path.name}; an HW mask of class ids "
                         "is expected")
    return out


def _ours(session: Session, manifest: Manifest, path: Path) -> np.ndarray:
    x, geo = read_model_input(path, manifest, pixels=session.takes_uint8)
    return to_mask(session.run(x[None])[0], geo)


def _agreement(a: np.ndarray, b: np.ndarray, spec: str, name: str) -> float:
    if a.shape != b.shape:
        raise SegrtError(f"--against {spec}: its mask of {name} is {b.shape[1]}x{b.shape[0]}, segrt's "
                         f"{a.shape[1]}x{a.shape[0]}: it should return a mask at the image's own size")
    return float((a == b).mean())


def _policies(m: Manifest) -> list[tuple[str, Manifest]]:
    """(flag text, manifest) for each single change of the recorded policy segrt can try."""
    out = []

    def variant(text: str, **changes) -> None:
        alt = copy.deepcopy(m)
        resize = {**alt.resize, **changes.pop("resize", {})}
        alt.resize = {k: v for k, v in resize.items() if v is not None}
        out.append((text, dataclasses.replace(alt, **changes)))

    for f in ("bilinear", "bicubic", "nearest"):
        if f != m.resize.get("filter", "bilinear"):
            variant(f"--resize-filter {f}", resize={"filter": f})
    other = "mask" if m.resize.get("upsample", "logits") == "logits" else "logits"
    variant(f"--upsample {other}", resize={"upsample": other})
    for mean, std, text in (([0.0] * m.channels, [1.0] * m.channels, "--mean 0 --std 1"),
                            (IMAGENET_MEAN, IMAGENET_STD, "--mean/--std ImageNet")):
        if m.channels == 3 or text.startswith("--mean 0"):
            if list(map(float, m.mean)) != list(map(float, mean[:m.channels])):
                variant(text, mean=list(mean[:m.channels]), std=list(std[:m.channels]))
    if m.size_multiple == 1 and not m.fixed_size:
        for s in (0.25, 0.5, 1.0):
            if m.resize.get("scale") != s:
                variant(f"--resize scale:{s:g}", resize={"scale": s}, input_size=None)
    return out


def run_against(export_dir, images, against: str, *, artifact: str | None = None, provider: str = "cpu",
                limit: int | None = None, gate: float = AGAINST_PIPELINE) -> dict:
    """-> the report: mean agreement, per image worst first, and the closest policy where it helps."""
    from segrt.model.arch import import_arch

    fn = import_arch(against)
    if not callable(fn):
        raise SegrtError(f"--against {against}: not a function")
    paths = list_images(images)[:limit] if Path(images).is_dir() else [Path(images)]
    if not paths:
        raise SegrtError(f"--images {images}: no images")
    session = Session(export_dir, provider=provider, artifact=artifact, kind=None if artifact else "onnx",
                      precision=None if artifact else "fp32")
    manifest = session.manifest
    rows = []
    for p in paths:
        theirs = _theirs(fn, against, p)
        rows.append((p, theirs, _agreement(_ours(session, manifest, p), theirs, against, p.name)))
    rows.sort(key=lambda r: r[2])
    mean = float(np.mean([r[2] for r in rows]))
    report = {"against": against, "artifact": session.artifact.name, "images": len(rows), "agreement": mean,
              "gate": gate, "passed": mean >= gate, "per_image": [[str(p), a] for p, _, a in rows], "closest": None}
    worst = rows[:_TRIED]
    base = float(np.mean([a for *_, a in worst]))
    tried = []
    for text, alt in _policies(manifest):
        score = float(np.mean([_agreement(_ours(session, alt, p), t, against, p.name) for p, t, _ in worst]))
        tried.append((score, text))
    best = max(tried, default=None)
    if best and best[0] > base + 0.002:
        report["closest"] = {"change": best[1], "worst_images": len(worst), "agreement": best[0], "recorded": base}
    return report


def format_against(report: dict) -> str:
    lines = [f"segrt ({report['artifact']}) against {report['against']} on {report['images']} image(s): masks agree "
             f"{report['agreement']:.4f} (gate {report['gate']}: {'passed' if report['passed'] else 'FAILED'})",
             "worst first:"]
    lines += [f"  {a:.4f}  {Path(p).name}" for p, a in report["per_image"][:8]]
    c = report["closest"]
    if c:
        lines.append(f"closest to your pipeline: {c['change']} ({c['agreement']:.4f} on the {c['worst_images']} worst "
                     f"image(s), recorded policy {c['recorded']:.4f}): re-export with it")
    elif not report["passed"]:
        lines.append("no single change of size, filter, normalization or upsampling segrt can try does better")
    return "\n".join(lines)
