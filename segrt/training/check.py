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
    from .splitting import split_data

    layout = build_layout(args)
    pairs, unpaired = data.find_pairs(layout, skip_bad=True)
    train, val, test, how = split_data(args, layout, pairs, unpaired)
    splits = {"all": pairs} if how == "random" else {"train": train, "val": val, **({"test": test} if test else {})}
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
    report["palettes"] = data.palettes_note(layout)
    report["hint"] = _zero_label_hint(args, layout, [p for group in splits.values() for p in group])
    return report


def _zero_label_hint(args, layout, pairs) -> str | None:
    """MMSegmentation's reduce_zero_label sets (0 void, class k stored as k+1) read without the flag: 0 in
    most masks and exactly one value more than the classes."""
    if args.reduce_zero_label or args.mask_map or layout.table is not None or not pairs:
        return None
    from segrt.imaging.decode import load_mask

    values, with_zero = set(), 0
    for p in pairs[:200]:
        try:
            raw = np.unique(load_mask(p.mask, p.page))
        except Exception:  # noqa: BLE001 - unusable masks are listed as such
            continue
        values |= set(raw.tolist()) - {data.IGNORE_INDEX}
        with_zero += 0 in raw
    n = len(layout.classes)
    if with_zero * 2 > min(len(pairs), 200) and values <= set(range(n + 1)) and n in values:
        return (f"masks hold 0 (in {with_zero} of {min(len(pairs), 200)}) and values up to {n} for {n} classes: "
                "a reduce-zero-label set (0 void, class k stored as k+1)? pass --reduce-zero-label")
    return None


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
    lines += [f"note: {report['palettes']}"] if report.get("palettes") else []
    lines += [f"hint: {report['hint']}"] if report.get("hint") else []
    problems = len(report["unpaired"]) + len(report["bad"]) + len(report["absent_from_val"])
    lines.append(f"data check: {'no problems found' if not problems else f'{problems} problem(s) listed above'}")
    return "\n".join(lines)
