"""The speed records --provider auto reads: every gated CPU variant timed together, batch 1 from
decoded pixels, at the size predict runs it; written into the manifest (records.SpeedRecord)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from PIL import Image

from segrt.cpuinfo import cpu_info, usable_cores
from segrt.imaging.prepare import round_up
from segrt.manifest import Manifest
from segrt.records import SpeedRecord

__all__ = ["speed_size", "record_speeds"]


def speed_size(manifest, images=None) -> tuple[tuple[int, int], str]:
    """The size predict will run a model at, and why: its working size; for a native-size model the
    median size of ``images`` (a folder like the ones it will see), else its training crop."""
    m = manifest.size_multiple
    if manifest.input_size:
        return tuple(round_up(s, m) for s in manifest.input_size), "the working size predict resizes to"
    from segrt.imaging.files import list_images

    sizes = []
    for p in (list_images(images)[:50] if images and Path(images).is_dir() else []):
        if not p.is_file():  # a FIFO or a device is never opened
            continue
        try:
            with Image.open(p) as img:
                sizes.append(img.size[::-1])
        except OSError:
            continue
    if sizes:
        h, w = (int(np.median([s[i] for s in sizes])) for i in (0, 1))
        return (round_up(h, m), round_up(w, m)), f"native size: the median of {len(sizes)} images in {images}"
    crop = manifest.crop_size or (256, 256)
    return tuple(round_up(s, m) for s in crop), "native size unknown (no images given): the training crop"


def record_speeds(folder: str | Path, log=print, runs: int = 8, rounds: int = 3, images=None) -> dict:
    """Time every gated CPU variant of an export together (batch 1 at the size predict will run,
    see speed_size, from decoded pixels so that the host's normalization counts for the float
    variants; all usable cores, rounds alternating between variants) and store it as
    ``manifest.speed``."""
    from segrt.runtime.here import time_variants
    from segrt.runtime.select import candidates

    folder = Path(folder)
    manifest = Manifest.load(folder)
    ok, _ = candidates(manifest, folder=folder)
    (h, w), basis = speed_size(manifest, images)
    ms = time_variants(folder, manifest, ok, (h, w), rounds, runs)
    manifest.speed = SpeedRecord(cpu=cpu_info(), threads=usable_cores(), input=[1, manifest.channels, h, w], size_from=basis,
                                 ms_per_image=ms, date=dt.date.today().isoformat())
    manifest.save(folder)
    log(f"speed on this CPU (batch 1 at {h}x{w}, {basis}; ms/image): "
        + ", ".join(f"{k} {v:.1f}" for k, v in sorted(ms.items(), key=lambda kv: kv[1])))
    return manifest.speed
