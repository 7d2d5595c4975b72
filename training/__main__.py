"""segrt train --layout pets --data DIR --out runs/NAME [options]   (or: python -m segrt.training ...)

Multi-GPU / multi-node: torchrun --nproc_per_node=N -m segrt.training ... (CPU: gloo backend).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from segrt.backends import usable_cores
from segrt.errors import SegrtError

CORES = usable_cores()


class Parser(argparse.ArgumentParser):
    """Usage errors as one line, exit 2."""

    def error(self, message):
        print(f"error: {message} (see 'segrt train --help')", file=sys.stderr)
        sys.exit(2)


def at_least(minimum: int):
    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return check


def at_most(maximum: int):
    """An argparse type: an integer in 0..maximum."""
    low = at_least(0)

    def check(text: str) -> int:
        value = low(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum} (this machine's cores), got {value}")
        return value
    return check


def number(low: float, high: float = float("inf"), low_open: bool = False, high_open: bool = False):
    """An argparse type: a finite number in [low, high] (open ends where asked)."""
    span = (f"{'>' if low_open else '>='} {low:g}" if high == float("inf") else
            f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}")

    def check(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        inside = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not (math.isfinite(value) and inside):
            raise argparse.ArgumentTypeError(f"must be a finite number {span}, got {text}")
        return value
    return check


positive_float = number(0, low_open=True)


def optimisation_args(g) -> None:
    g.add_argument("--epochs", type=at_least(1), default=20)
    g.add_argument("--batch-size", type=at_least(1), default=8)
    g.add_argument("--lr", type=positive_float, default=3e-3)
    g.add_argument("--weight-decay", type=number(0), default=1e-4)
    g.add_argument("--loss", choices=["ce", "dice", "ce+dice"], default="ce+dice")
    g.add_argument("--dice-weight", type=number(0), default=1.0, help="weight of Dice in ce+dice")
    g.add_argument("--class-weights", help="'auto' (median frequency) or comma-separated weights")
    g.add_argument("--grad-clip", type=positive_float, default=1.0, help="max gradient norm")
    g.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast on CPU (fast on AVX512-BF16/AMX CPUs)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="NHWC memory layout (default; 1.47x faster training steps on a 2-core Xeon, see "
                        "benchmarks/train_throughput.py --layouts); --no-channels-last for NCHW")
    g.add_argument("--ema", type=number(0, 1, True, True), metavar="DECAY",
                   help="validate and save an exponential moving average of the weights (e.g. 0.998); "
                        "metrics.csv also gets the raw weights' val_miou_raw")
    g.add_argument("--init", help="start from this checkpoint's weights, with a fresh optimizer and schedule: "
                                  "fine-tune, e.g. at a larger --size. Same model shape, or a larger "
                                  "--base-channels: the weights are widened to compute the same function")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="segrt train", description="Train a segrt U-Net (also: python -m segrt.training).")
    g = p.add_argument_group("data")
    g.add_argument("--layout", choices=["pets", "isbi", "folders"], default="folders")
    g.add_argument("--data", help="dataset root for --layout pets/isbi")
    g.add_argument("--images", help="image folder for --layout folders")
    g.add_argument("--masks", help="mask folder for --layout folders (pairs matched by file stem)")
    g.add_argument("--classes", help="class names, comma separated (--layout folders)")
    g.add_argument("--mask-map", help="raw mask value -> class id, e.g. '0:0,255:1,128:ignore'")
    g.add_argument("--channels", type=int, choices=[1, 3],
                   help="input channels (--layout folders; default: 1 when every image is grayscale, else 3)")
    g.add_argument("--mean", help="normalization mean, comma separated (default ImageNet / 0.5 for gray)")
    g.add_argument("--std", help="normalization std, comma separated")
    g.add_argument("--val-fraction", type=number(0, 1, True, True), default=0.2)
    g.add_argument("--split-file", help="JSON train/val split: used if it exists, written otherwise")
    g.add_argument("--val-images", help="separate validation image folder (instead of a split)")
    g.add_argument("--val-masks", help="separate validation mask folder")
    g.add_argument("--skip-bad", action="store_true", help="skip and count unusable files instead of stopping")
    g.add_argument("--size", type=at_least(8), default=128, help="training crop size (square)")
    g.add_argument("--crop-scale", type=number(0, 1, low_open=True), default=0.25, help="smallest random crop, as a fraction of the image area")
    g.add_argument("--native", action="store_true",
                   help="train on random --size crops at native scale and validate whole images at native "
                        "resolution: for models run full size or tiled (cells, EM, aerial), not resized"),
    g.add_argument("--workers", type=at_most(CORES), default=max(0, min(4, (os.cpu_count() or 1) - 2)),
                   help="DataLoader worker processes (default: cores - 2, at most 4; 0 on 2 cores, where "
                        "in-process augmentation is faster)")
    g = p.add_argument_group("model")
    g.add_argument("--base-channels", type=at_least(1), default=16)
    g.add_argument("--depth", type=at_least(1), default=4)
    g.add_argument("--upsampling", choices=["transpose", "bilinear"], default="transpose")
    optimisation_args(p.add_argument_group("optimisation"))
    g = p.add_argument_group("run")
    g.add_argument("--out", required=True, help="run folder for checkpoints, metrics.csv, curves.png")
    g.add_argument("--resume", help="checkpoint to resume from (e.g. RUN/last.pt)")
    g.add_argument("--seed", type=at_least(0), default=0)
    g.add_argument("--threads", type=at_most(CORES), default=0, help=f"torch CPU threads, at most the {CORES} cores "
                                                                        "(0: torch default)")
    g.add_argument("--quiet", action="store_true")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.layout in ("pets", "isbi") and not args.data:
        parser().error(f"--layout {args.layout} needs --data")
    if args.init and args.resume:
        parser().error("--init starts a new run and --resume continues one: give one of them")
    from .train import train

    try:
        train(args)
    except SegrtError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the run folder: read-only, a file in the way, a full disk
        print(f"error: {exc.filename or args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with --resume OUT/last.pt", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
