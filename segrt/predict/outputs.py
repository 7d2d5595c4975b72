"""What one input writes: the file names, the mask and colour-mask bytes, and the --skip-existing
rule (every output there). Local predict and the Ray engine both write through these."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segrt.imaging import masks
from segrt.predict.options import PredictOptions

__all__ = ["output_paths", "outputs_exist", "mask_files", "value_table"]


def output_paths(out: Path, rel: Path, opts: PredictOptions, pages: int = 1) -> dict[str, Path]:
    """The files one input writes: NAME.png (class ids), NAME.color.png, ...; a stack of ``pages``
    pages writes NAME.tif (segrt.imaging.stacks)."""
    base = out / rel
    if pages > 1:
        from segrt.imaging.stacks import stack_paths

        return stack_paths(base, pages, opts)
    paths = {"mask": base.with_name(base.name + ".png")}
    if opts.color:
        paths["color"] = base.with_name(base.name + ".color.png")
    if opts.overlay:
        paths["overlay"] = base.with_name(base.name + ".overlay.jpg")
    if opts.save_probs:
        paths["probs"] = base.with_name(base.name + ".probs.npy")
    return paths


def outputs_exist(out: Path, rel: Path, opts: PredictOptions, pages: int = 1) -> bool:
    """--skip-existing: an input is done when every output it writes exists."""
    return all(p.exists() for p in output_paths(out, rel, opts, pages).values())


def mask_files(mask: np.ndarray, paths: dict, colours: list | None = None) -> dict:
    """{path: bytes} for the class-id PNG ("mask") and the colour PNG ("color", in the dataset's
    ``colours`` where the manifest has them) among ``paths``."""
    grey, color = masks.encode_mask_pngs(mask, colours)
    return {paths[key]: data for key, data in (("mask", grey), ("color", color)) if key in paths}


def value_table(manifest) -> np.ndarray:
    """--write-values: a 256-entry table from class id to the label value the export records for it (the
    lowest raw value of its manifest's mask values: milesial's mask_values, a training run's mask map)."""
    from segrt.errors import SegrtError

    table = np.full(256, 255, np.uint8)
    found = {}
    for raw, cls in sorted(((int(r), int(c)) for r, c in manifest.mask_values.items()), reverse=True):
        if 0 <= cls < manifest.num_classes:
            found[cls] = raw
    missing = [manifest.classes[c] for c in range(manifest.num_classes) if c not in found]
    if missing:
        raise SegrtError(f"--write-values: the export records no label value for {', '.join(missing)} (its manifest's "
                         "labels.mask_values); drop --write-values to write class ids")
    for cls, raw in found.items():
        table[cls] = raw
    return table
