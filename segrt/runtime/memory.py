"""How much memory a model run needs, and how much there is: predict checks a batch before running it."""

from __future__ import annotations

from segrt.errors import SegrtError

__all__ = ["batch_bytes", "memory_budget", "gb", "check_batch_memory", "check_tiled_memory", "check_bench_memory"]

_MEMORY_SHARE = 0.8  # a batch may use at most this share of the memory available when it starts


def batch_bytes(manifest, n: int, h: int, w: int) -> int:
    """Rough peak memory of one model run on ``n`` images of h x w: per pixel, float32 input, logits and
    about 8 feature maps of the base width (measured: 1.44 GB for one 1600x1200 photo through the
    bundled base-24 U-Net, i.e. ~750 bytes a pixel; this gives 792)."""
    base = int(manifest.model_config.get("base_channels", 32))
    return n * h * w * 4 * (manifest.channels + manifest.num_classes + 8 * base)


def memory_budget() -> int | None:
    from segrt.cpuinfo import available_memory

    free = available_memory()
    return int(free * _MEMORY_SHARE) if free else None


def gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def check_batch_memory(manifest, n: int, batch_size: int, hw: tuple[int, int] | None) -> None:
    """Inputs of one size ``hw`` (the model's size, or the tile): refuse a --batch-size whose run
    would not fit in memory, up front (native sizes are checked per batch; hw None)."""
    budget = memory_budget()
    if not hw or budget is None or n < 1:
        return
    h, w = hw
    need = batch_bytes(manifest, n, h, w)
    if need > budget:
        fit = budget // batch_bytes(manifest, 1, h, w)
        raise SegrtError(f"--batch-size {batch_size} at {w}x{h} needs ~{gb(need)}, {gb(budget)} of memory is "
                         f"available; use --batch-size {max(1, fit)} or less")


def check_tiled_memory(manifest, path, h: int, w: int, tile: int) -> None:
    """Tiled, an image costs its decoded uint8 pixels, its mask and a band of C x tile x W float32
    logits: raise ImageError (that image fails, the run goes on) when that cannot fit."""
    from segrt.errors import ImageError

    budget = memory_budget()
    need = h * w * (manifest.channels + 1) + manifest.num_classes * tile * w * 4
    if budget is not None and need > budget:
        raise ImageError(f"{path}: {w}x{h} needs ~{gb(need)} even tiled (the decoded image, its mask and a band of "
                         f"logits), {gb(budget)} of memory is available")


def check_bench_memory(manifest, batch: int, sides: list[int]) -> None:
    """segrt bench: refuse, before any run, a square size whose largest batch would not fit, and
    name the largest side that does."""
    budget = memory_budget()
    if budget is None:
        return
    for side in sides:
        need = batch_bytes(manifest, batch, side, side)
        if need > budget:
            per_pixel = batch_bytes(manifest, batch, 1, 1)
            fit = int((budget // per_pixel) ** 0.5) // manifest.size_multiple * manifest.size_multiple
            raise SegrtError(f"--sizes {side} at batch {batch} needs ~{gb(need)}, {gb(budget)} of memory is "
                             f"available; the largest size that fits at batch {batch} is {fit}")
