"""The parity report as text (format_report, what `segrt parity` prints) and, for `segrt parity
--report report.html`, as one self-contained HTML page.

Built from the same data as the JSON report (plus the worst images' photos and masks), with the
standard library only: images are embedded as data URIs (JPEG), the histograms are inline SVG, and
there is no JavaScript and no external URL, so the file opens from disk or a CI artifact viewer.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io

import numpy as np
from PIL import Image

from segrt.cpuinfo import cpu_info, describe_cpu
from segrt.imaging.masks import overlay, voc_palette
from segrt.verify.decoding import describe
from segrt.verify.thresholds import FP32_MASK_IOU

__all__ = ["fmt", "render", "format_report"]

_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1220px;color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:6px 0 12px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.pass{color:#176d2e;font-weight:600}
.fail{color:#b3261e;font-weight:600}.muted{color:#666}.worst{display:flex;flex-wrap:wrap;gap:14px}
figure{margin:0;border:1px solid #ddd;padding:6px}figure img{width:138px;height:auto;image-rendering:pixelated}
figcaption{font-size:12px;max-width:560px}.legend span{display:inline-block;width:12px;height:12px;margin:0 4px}"""


_MAX_SIDE = 256  # embedded images are shown at 138 px; this keeps a 100-photo report small


def _data_uri(image: np.ndarray, quality: int = 80) -> str:
    """HWC uint8 -> an embedded JPEG, at most MAX_SIDE pixels a side."""
    img = Image.fromarray(image)
    img.thumbnail((_MAX_SIDE, _MAX_SIDE), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _disagreement(photo: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The photo dimmed, with the pixels where the two masks differ in red."""
    out = (photo.astype(np.float32) * 0.45).astype(np.uint8)
    out[a != b] = (230, 30, 30)
    return out


def _histogram_svg(values: list[float], bins: int = 20, width: int = 360, height: int = 90) -> str:
    """Per-image agreement (mask IoU) as an inline SVG bar chart from the lowest value to 1."""
    if not values:
        return ""
    low = min(min(values), FP32_MASK_IOU)  # the axis always shows the fp32 gate
    counts, edges = np.histogram(values, bins=bins, range=(low, 1.0))
    bar, top = width / bins, max(counts.max(), 1)
    bars = "".join(f'<rect x="{i * bar:.1f}" y="{height - 14 - c / top * (height - 24):.1f}" width="{bar - 1:.1f}" '
                   f'height="{c / top * (height - 24):.1f}" fill="#4a6fa5"><title>{c} image(s) in '
                   f'[{edges[i]:.4f}, {edges[i + 1]:.4f})</title></rect>' for i, c in enumerate(counts))
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="histogram">{bars}'
            f'<text x="0" y="{height - 2}" font-size="10">{low:.4f}</text>'
            f'<text x="{width - 20}" y="{height - 2}" font-size="10">1.0</text></svg>')


def fmt(value, digits: int = 5) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 and value else f"{value:.{digits}f}"
    return html.escape(str(value))


def _artifact_table(name: str, res: dict, classes: list[str], speed: dict | None) -> str:
    s = res["summary"]
    rows = [("max |logit diff|", fmt(s["max_abs_logit_diff"])), ("mean |logit diff|", fmt(s["mean_abs_logit_diff"])),
            ("pixel agreement", fmt(s["pixel_agreement"])), ("mask IoU agreement", fmt(s["mask_iou"]))]
    per_class = s.get("classes") or [{"iou": v} for v in s.get("iou_agreement_per_class", [])]
    rows += [(f"IoU agreement: {c}", fmt(k["iou"]) + (f" ({k['share']:.1%} of the pixels{', gated' if k['gated'] else ', too rare to gate'})"
                                                       if "share" in k else "")) for c, k in zip(classes, per_class)]
    if "miou_vs_ground_truth" in s:
        rows.append(("mIoU vs ground truth (eager)",
                     f"{fmt(s['miou_vs_ground_truth'], 4)} ({fmt(s['miou_eager_vs_ground_truth'], 4)})"))
    bi = s.get("batch_invariance", {})
    if bi.get("checked"):
        rows.append(("batch invariance", "same mask" if bi["same_mask"] else "MASK CHANGES"))
    rows.append(("gate", f"mask IoU >= {s['gates']['mask_iou_min']}" + (
        f", |logit diff| <= {s['gates']['max_abs_logit_diff_max']:g}" if "max_abs_logit_diff_max" in s["gates"] else "")))
    if speed:
        rows.append(("speed (p50, batch 1)", f"{speed['p50_ms']:.1f} ms at {speed['height']}x{speed['width']}"))
    body = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    verdict = '<span class="pass">PASS</span>' if s["passed"] else '<span class="fail">FAIL</span>'
    return (f'<h2 id="{html.escape(name)}">{html.escape(name)} <span class="muted">{html.escape(s["kind"])} '
            f'{html.escape(s["precision"])} on {html.escape(s["provider"])}</span> {verdict}</h2>'
            f"<table>{body}</table><p>Per-image mask IoU agreement ({s['inputs']} images):</p>"
            + _histogram_svg([r["mask_iou"] for r in res.get("per_image", [])]))


def _worst_figures(items: list[dict], skip_class: int | None) -> str:
    figs = []
    for it in items:
        photo = it["photo"]
        imgs = [("photo", photo), ("eager", overlay(photo, it["eager"], skip_class=skip_class)),
                ("artifact", overlay(photo, it["mask"], skip_class=skip_class)),
                ("disagreement", _disagreement(photo, it["eager"], it["mask"]))]
        tags = "".join(f'<img src="{_data_uri(a)}" alt="{k}" title="{k}">' for k, a in imgs)
        figs.append(f"<figure>{tags}<figcaption><b>{html.escape(it['input'])}</b>: mask IoU {it['mask_iou']:.4f}, "
                    f"pixels {it['pixel_agreement']:.4f}" + (", decoded at reduced scale for the artifact" if
                    it.get("decoded_differently") else "") + _logit_caption(it["max_abs_logit_diff"]) +
                    "</figcaption></figure>")
    return '<div class="worst">' + "".join(figs) + "</div>"


def _logit_caption(diff: float | None) -> str:
    return "" if diff is None else f", max |logit diff| {diff:.3g}"


def render(report: dict, manifest, provider: str, bench: dict | None = None, shown: dict | None = None) -> str:
    """The HTML page for a parity report (run_parity's dict; ``shown``: its worst images, as
    run_parity_on returns them)."""
    classes = manifest.classes
    speed = {r["artifact"]: r for r in (bench or {}).get("rows", []) if r["batch_size"] == 1}
    legend = "".join(f'<span style="background:rgb{tuple(int(v) for v in voc_palette()[i])}"></span>{html.escape(c)}'
                     for i, c in enumerate(classes))
    verdicts = "".join(f'<tr><td><a href="#{html.escape(n)}">{html.escape(n)}</a></td>'
                       f'<td>{fmt(r["summary"]["mask_iou"])}</td><td>{r["summary"]["gates"]["mask_iou_min"]}</td>'
                       f'<td class="{"pass" if r["summary"]["passed"] else "fail"}">'
                       f'{"PASS" if r["summary"]["passed"] else "FAIL"}</td></tr>'
                       for n, r in report["artifacts"].items())
    exported = manifest.versions.get("exported", "not recorded")
    head = (f"<h1>Parity report: {html.escape(manifest.name)}</h1><p class='muted'>exported {html.escape(exported)}; "
            f"report {dt.date.today().isoformat()}; classes {html.escape(', '.join(classes))}; machine "
            f"{html.escape(describe_cpu(cpu_info()))}, provider {html.escape(provider)}; reference: "
            f"{html.escape(report.get('reference', 'eager PyTorch'))}; "
            f"{len(report['inputs'])} batch(es) of inputs; images: "
            f"{html.escape(report.get('images_are', 'random inputs'))}"
            f"{'; ' + html.escape(describe(report['decoding'])) if 'decoding' in report else ''}</p>"
            f"<table><tr><th>artifact</th><th>mask IoU</th><th>gate</th><th>verdict</th></tr>{verdicts}</table>"
            f"<p>Overall: <span class='{'pass' if report['passed'] else 'fail'}'>"
            f"{'all gates passed' if report['passed'] else 'FAILED: ' + html.escape('; '.join(report['failures']))}"
            f"</span></p>")
    skipped = "".join(f"<li>{html.escape(a)}: {html.escape(w)}</li>" for a, w in report.get("skipped", {}).items())
    failed = "".join(f"<li><b>{html.escape(a)}</b>: failed its gate, not written: {html.escape(w)}</li>"
                     for a, w in report.get("failed_variants", {}).items())
    failed += "".join(f"<li><b>{html.escape(a)}</b>: below its gate on this CPU (gated on another CPU class; auto "
                      f"leaves it out here, predict refuses it): {html.escape(w)}</li>"
                      for a, w in report.get("below_gate_here", {}).items())
    parts = [head, f"<p>Not compared here:</p><ul class='muted'>{skipped}</ul>" if skipped else "",
             f"<ul class='fail'>{failed}</ul>" if failed else ""]
    skip_class = 0 if classes and classes[0].lower() in ("background", "bg") else None
    for name, res in report["artifacts"].items():
        parts.append(_artifact_table(name, res, classes, speed.get(name)))
        worst = (shown or {}).get(name)
        if worst:
            parts.append(f"<p>The {len(worst)} images where it agrees least with eager: photo, eager mask, its "
                         f"mask, and in red the pixels that differ. <span class='legend'>{legend}</span></p>")
            parts.append(_worst_figures(worst, skip_class))
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>parity: "
            f"{html.escape(manifest.name)}</title><style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n")


def format_report(report: dict) -> str:
    rows = [("artifact", "provider", "inputs", "max|dlogit|", "mean|dlogit|", "pix agree", "mask IoU",
             "mIoU GT (eager)", "batch inv", "gate")]
    for name, res in report["artifacts"].items():
        s = res["summary"]
        gt = (f"{s['miou_vs_ground_truth']:.4f} ({s['miou_eager_vs_ground_truth']:.4f})"
              if "miou_vs_ground_truth" in s else "-")
        bi = s["batch_invariance"]
        rows.append((name, s["provider"], str(s["inputs"]), f"{s['max_abs_logit_diff']:.2e}",
                     f"{s['mean_abs_logit_diff']:.2e}", f"{s['pixel_agreement']:.5f}", f"{s['mask_iou']:.5f}", gt,
                     ("yes" if bi["same_mask"] else "NO") if bi.get("checked") else "-",
                     "pass" if s["passed"] else "FAIL"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    for name, res in report["artifacts"].items():
        worst = ", ".join(f"{w['input']} (IoU {w['mask_iou']:.4f})" for w in res["worst"][:3])
        lines.append(f"worst for {name}: {worst}")
    lines += [f"per class for {name}: " + ", ".join(
        f"{c} {k['iou'] if k['iou'] is not None else float('nan'):.4f} ({k['share']:.1%}{'' if k['gated'] else ', not gating'})"
        for c, k in zip(report.get("classes", []), res["summary"].get("classes") or []))
        for name, res in report["artifacts"].items() if res["summary"]["precision"] != "fp32"]
    lines += [f"vs ground truth, per class for {name}: " + ", ".join(
        f"{c} {v:.4f}" if v is not None else f"{c} absent"
        for c, v in zip(report.get("classes", []), res["summary"]["iou_vs_ground_truth"]))
        for name, res in report["artifacts"].items() if "iou_vs_ground_truth" in res["summary"]]
    lines += [f"skipped {a}: {why}" for a, why in report.get("skipped", {}).items()]
    lines += [f"failed its gate, not written: {a}: {why}" for a, why in report.get("failed_variants", {}).items()]
    lines += [f"below its gate on this CPU (gated on another CPU class; auto leaves it out here, predict refuses it): "
              f"{a}: {why}" for a, why in report.get("below_gate_here", {}).items()]
    lines += [f"FAIL {f}" for f in report["failures"]]
    if "images_are" in report:
        lines.append(f"images scored: {report['images_are']}")
    if "decoding" in report:
        lines.append(describe(report["decoding"]))
    lines.append("parity: " + ("all gates passed" if report["passed"] else "FAILED"))
    return "\n".join(lines)
