"""`segrt data check`: what `segrt train` would find, without training: pairs per split, unpaired
files, sizes, channels, classes with their pixel shares (a class in train but absent from val
flagged), unknown colours or values. The same options as train for finding data."""

from __future__ import annotations

import numpy as np

from . import data

__all__ = ["check_data", "format_check"]


def check_data(args) -> dict:
    """-> the report (plain JSON). Every pair is decoded once; a bad one is listed, not fatal."""
    from .setup import build_layout
    from .splitting import folder_split

    layout = build_layout(args)
    pairs, unpaired = data.find_pairs(layout, skip_bad=True)
    splits = dict(zip(("train", "val"), folder_split(pairs, args))) if any(p.split for p in pairs) else {"all": pairs}
    if any(p.split == "test" for p in pairs):
        splits["test"] = [p for p in pairs if p.split == "test"]
    report = {"classes": layout.classes, "channels": layout.channels, "note": layout.note, "unpaired": unpaired,
              "splits": {}, "bad": []}
    sizes = []
    for name, group in splits.items():
        samples, bad = data.load_all(group, layout, True, f"reading {name}", show=False)
        report["bad"] += bad
        sizes += [img.shape[:2] for img, _ in samples]
        report["splits"][name] = {"pairs": len(group), "read": len(samples),
                                  "shares": data.class_shares(samples, len(layout.classes))}
    if sizes:
        report["sizes"] = {"min": [int(v) for v in np.min(sizes, axis=0)], "max": [int(v) for v in np.max(sizes, axis=0)]}
    train, val = report["splits"].get("train"), report["splits"].get("val")
    report["absent_from_val"] = [c for c, a, b in zip(layout.classes, train["shares"], val["shares"])
                                 if a > 0 and b == 0] if train and val else []
    report["unknown_colours"] = {f"{k}": v for k, v in layout.unknown_colours.items()}
    return report


def format_check(report: dict) -> str:
    lines = [f"classes: {', '.join(report['classes'])}; {report['channels']} channel(s)"
             + (f"; {report['note']}" if report.get("note") else "")]
    if "sizes" in report:
        (h0, w0), (h1, w1) = report["sizes"]["min"], report["sizes"]["max"]
        lines.append(f"image sizes: {w0}x{h0} to {w1}x{h1}")
    for name, s in report["splits"].items():
        lines.append(f"{name}: {s['pairs']} pairs ({s['read']} read); pixels: "
                     f"{data.describe_shares(report['classes'], s['shares'])}")
    lines += [f"in train but absent from val: {c}" for c in report["absent_from_val"]]
    lines += [f"unpaired: {u}" for u in report["unpaired"]]
    lines += [f"unusable: {b}" for b in report["bad"]]
    lines += [f"unknown colour {k}: {v} pixels read as void" for k, v in report["unknown_colours"].items()]
    problems = len(report["unpaired"]) + len(report["bad"]) + len(report["absent_from_val"])
    lines.append(f"data check: {'no problems found' if not problems else f'{problems} problem(s) listed above'}")
    return "\n".join(lines)
