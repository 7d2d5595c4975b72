"""Predict's options: built once (by the CLI or a library caller), never changed, passed down."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segrt.imaging import decode
from segrt.runtime.tiling import TileSpec

__all__ = ["PredictOptions", "decode_note"]


@dataclass(frozen=True)
class PredictOptions:
    out: Path = Path("predictions")
    batch_size: int = 4
    native: bool = False  # pad to the size multiple at native resolution instead of resizing
    color: bool = True
    overlay: bool = False
    save_probs: bool = False
    skip_existing: bool = False
    workers: int = 0  # decode threads; 0: half the cores (more only steal cores from inference)
    max_pixels: int | None = decode.DEFAULT_MAX_PIXELS
    progress: bool = True
    tile: TileSpec | None = None  # sliding-window inference at native resolution (segrt.runtime.tiling)
    shard: tuple[int, int] | None = None  # (I, N): only the inputs whose stable hash falls in shard I
    writers: int = 0  # output threads (mask resize, PNG, files); 0: a quarter of the cores, at least 1
    device_masks: bool | None = None  # native size: argmax where the model runs (None: on cuda/tensorrt)
    per_page: bool = False  # stacks: also each page's colour mask (and overlay), beside the label TIFF
    full_decode: bool = False  # every JPEG in full, whatever the export chose (manifest.decode)
    write_values: bool = False  # NAME.png holds each class's label value (manifest mask_values), not class ids

    def __post_init__(self):
        object.__setattr__(self, "out", Path(self.out))

    @property
    def decode(self) -> str | None:
        """How to read JPEGs: "full" for --full-decode, else None (as the export chose)."""
        return "full" if self.full_decode else None


def decode_note(opts: PredictOptions, manifest) -> str | None:
    """The line predict says when it decodes large JPEGs at reduced scale (the export's measured choice)."""
    if manifest.decode != "reduced" or opts.full_decode or opts.native or opts.tile or not manifest.input_size:
        return None
    check = manifest.decode_check or {}
    return ("JPEGs at least twice the working size are decoded at reduced scale (masks agree "
            f"{check.get('mask_iou', float('nan')):.4f} with full decoding on the {check.get('decoded_differently')} "
            f"held-out photos it changes, measured {check.get('date', 'when exported')}); --full-decode turns it off")
