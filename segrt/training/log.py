"""What a training run leaves beside its checkpoints: metrics.csv, curves.png, and the arguments
kept in the checkpoint."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

__all__ = ["plain_args", "append_csv", "plot_curves"]


def plain_args(args) -> dict:
    return {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}


def append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def plot_curves(csv_path: Path, png_path: Path) -> None:
    """Loss and val mIoU per epoch, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from segrt.fsutil import atomic_path

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    ep = [int(r["epoch"]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(ep, [float(r["train_loss"]) for r in rows], label="train")
    a.plot(ep, [float(r["val_loss"]) for r in rows], label="val")
    a.set(xlabel="epoch", ylabel="loss", title="loss")
    a.legend()
    b.plot(ep, [float(r["val_miou"]) for r in rows], label="mIoU", color="k")
    for key in rows[0]:
        if key.startswith("iou_"):
            b.plot(ep, [float(r[key]) if r[key] else np.nan for r in rows], label=key[4:], alpha=0.7)
    miou = [float(r["val_miou"]) for r in rows]
    best = int(np.argmax(miou))
    b.axvline(ep[best], color="k", ls=":", lw=1)
    b.annotate(f"best: epoch {ep[best]}, mIoU {miou[best]:.3f}", (ep[best], miou[best]), textcoords="offset points",
               xytext=(4, -12), fontsize=7)
    b.set(xlabel="epoch", ylabel="IoU", title="validation IoU")
    b.legend(fontsize=7)
    for axis in (a, b):  # whole epochs only
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
