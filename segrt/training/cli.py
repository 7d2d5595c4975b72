"""`segrt train` (also `python -m segrt.training`, e.g. under torchrun): the options, checked up
front by click like every segrt command (defaults shown in --help, did-you-mean, no abbreviations,
one-line errors), then one call to training.train.train. Imports no torch until it runs."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import click

from segrt.cpuinfo import usable_cores
from segrt.errors import SegrtError
from segrt.options import Number, OneLineCommand, examples

__all__ = ["CORES", "options", "DATA", "MODEL", "RUN", "train_command", "data_command", "data_check_command", "parse",
           "main"]

CORES = usable_cores()
_POSITIVE = Number(0, low_open=True)


def options(specs):
    def apply(fn):
        for spec in reversed(specs):
            fn = spec(fn)
        return fn
    return apply


DATA = [
    click.option("--layout", type=click.Choice(["pets", "isbi", "folders"]), default="folders"),
    click.option("--data", type=click.Path(file_okay=False),
                 help="dataset root: --layout pets/isbi; --layout folders: every images folder with a masks/labels/"
                      "annot folder beside it, at any depth, paired by relative path; train/val/test folders split"),
    click.option("--images", type=click.Path(file_okay=False), help="image folder for --layout folders"),
    click.option("--masks", type=click.Path(file_okay=False),
                 help="mask folder for --layout folders (pairs matched by file stem)"),
    click.option("--classes", help="class names, comma separated (--layout folders)"),
    click.option("--mask-map", help="raw mask value -> class id, e.g. '0:0,255:1,128:ignore' (adds to the identity "
                                    "mapping of --layout folders)"),
    click.option("--label-colors", type=click.Path(dir_okay=False),
                 help="colour-coded labels: a table of class colours ('R G B Name' or '#RRGGBB Name' lines, or a CSV "
                      "with a name,r,g,b header); RGB and palette masks are read by colour, the classes come from it"),
    click.option("--void", multiple=True, metavar="COLOR|NAME",
                 help="with --label-colors: this class (name or colour) is void, the ignore label (repeatable; "
                      "default: a class named void/unlabelled/ignore, said)"),
    click.option("--unknown-as-void", is_flag=True, help="with --label-colors: a colour not in the table is void "
                                                         "(counted and said) instead of an error"),
    click.option("--ignore-index", type=click.IntRange(0, 255), help="this raw mask value is void (e.g. 11 in SegNet's "
                                                                     "CamVid)"),
    click.option("--mask-suffix", help="masks are named like the image stem + this suffix, e.g. _L for X_L.png "
                                       "(default: found when every mask shares one, said)"),
    click.option("--image-suffix", help="images are named like a shared stem + this suffix, e.g. _leftImg8bit "
                                        "(Cityscapes; default: found with the mask suffix, said)"),
    click.option("--reduce-zero-label", is_flag=True,
                 help="mask value 0 is void and value k is class k-1 (MMSegmentation's reduce_zero_label: ADE20K, "
                      "LoveDA, Potsdam, Vaihingen); recorded in the checkpoint and the export"),
    click.option("--channels", type=click.Choice(["1", "3"]), callback=lambda c, p, v: int(v) if v else None,
                 help="input channels (--layout folders; default: 1 when every image is grayscale, else 3)"),
    click.option("--mean", help="normalization mean, comma separated (default ImageNet, or 0.5 for gray)"),
    click.option("--std", help="normalization std, comma separated (default ImageNet, or 0.25 for gray)"),
    click.option("--val-fraction", type=Number(0, 1, True, True), default=0.2,
                 help="share of the images held out for validation (recorded in RUN/split.json)"),
    click.option("--split-file", multiple=True, metavar="FILE.json|NAME=FILE",
                 help="a JSON train/val split (used if it exists, written otherwise); or NAME=FILE (NAME train, val or "
                      "test): a list of image names, one a line, as MMSegmentation and VOC write them (repeatable; "
                      "default: train.txt/val.txt found under --data, said)"),
    click.option("--val-images", type=click.Path(file_okay=False), help="separate validation image folder"),
    click.option("--val-masks", type=click.Path(file_okay=False), help="separate validation mask folder"),
    click.option("--skip-bad", is_flag=True, help="skip and count unusable files instead of stopping"),
    click.option("--size", type=click.IntRange(min=8), default=128, help="training crop size (square)"),
    click.option("--crop-scale", type=Number(0, 1, low_open=True), default=0.25,
                 help="smallest random crop, as a fraction of the image area"),
    click.option("--native", is_flag=True, help="train on random --size crops at native scale and validate whole "
                 "images at native resolution: for models run full size or tiled (cells, EM, aerial)"),
    click.option("--workers", type=click.IntRange(0, CORES), default=max(0, min(4, CORES - 2)),
                 help="DataLoader worker processes (cores - 2, at most 4; 0 on 2 cores, where in-process "
                      "augmentation is faster)"),
]
MODEL = [
    click.option("--base-channels", type=click.IntRange(min=1), default=16),
    click.option("--depth", type=click.IntRange(min=1), default=4),
    click.option("--upsampling", type=click.Choice(["transpose", "bilinear"]), default="transpose"),
]
_OPTIMISATION = [
    click.option("--epochs", type=click.IntRange(min=1), default=20),
    click.option("--batch-size", type=click.IntRange(min=1), default=8),
    click.option("--lr", type=_POSITIVE, default=3e-3),
    click.option("--weight-decay", type=Number(0), default=1e-4),
    click.option("--loss", type=click.Choice(["ce", "dice", "ce+dice"]), default="ce+dice"),
    click.option("--dice-weight", type=Number(0), default=1.0, help="weight of Dice in ce+dice"),
    click.option("--class-weights", help="'auto' (median frequency) or comma-separated weights, one per class"),
    click.option("--grad-clip", type=_POSITIVE, default=1.0, help="max gradient norm"),
    click.option("--no-amp", is_flag=True, help="disable mixed precision on CUDA"),
    click.option("--bf16", is_flag=True, help="bfloat16 autocast on CPU (fast on AVX512-BF16/AMX CPUs)"),
    click.option("--channels-last/--no-channels-last", default=True,
                 help="NHWC memory layout (1.47x faster training steps on a 2-core Xeon, see "
                      "benchmarks/train_throughput.py --layouts)"),
    click.option("--ema", type=Number(0, 1, True, True), metavar="DECAY",
                 help="validate and save an exponential moving average of the weights (e.g. 0.998); "
                      "metrics.csv also gets the raw weights' val_miou_raw"),
    click.option("--init", type=click.Path(dir_okay=False), help="start from this checkpoint's weights with a fresh "
                 "optimizer and schedule (fine-tune, e.g. at a larger --size); same shape, or a larger "
                 "--base-channels: the weights are widened to compute the same function"),
]
RUN = [
    click.option("--out", type=click.Path(file_okay=False), required=True,
                 help="run folder: best.pt, last.pt, metrics.csv, curves.png, split.json"),
    click.option("--resume", type=click.Path(dir_okay=False), help="checkpoint to resume from (RUN/last.pt)"),
    click.option("--seed", type=click.IntRange(min=0), default=0),
    click.option("--threads", type=click.IntRange(0, CORES), default=0,
                 help=f"torch CPU threads, at most the {CORES} cores (0: torch's default)"),
    click.option("--quiet", is_flag=True, help="no progress bars and no per-epoch lines"),
]


@click.command("train", cls=OneLineCommand, epilog=examples(
    "segrt train --data DATA --classes background,road --out runs/roads",
    "segrt train --layout pets --data oxford_iiit_pet --out runs/pets --size 256 --epochs 40"),
    context_settings={"show_default": True,
                                                              "help_option_names": ["-h", "--help"]})
@options(DATA + MODEL + _OPTIMISATION + RUN)
def train_command(**kwargs):
    """Train a U-Net on image/mask folders (or the pets / ISBI layouts); also: python -m segrt.training
    (torchrun --nproc_per_node=N -m segrt.training ... for DDP)."""
    args = SimpleNamespace(**kwargs)
    if args.layout in ("pets", "isbi") and not args.data:
        raise click.UsageError(f"--layout {args.layout} needs --data")
    if args.init and args.resume:
        raise click.UsageError("--init starts a new run and --resume continues one: give one of them")
    from segrt.cpuinfo import module_available

    if not (module_available("torch") and module_available("torchvision")):
        click.echo("error: training needs torch and torchvision: pip install 'segrt[torch]'", err=True)
        return 2
    from .train import train

    try:
        train(args)
    except SegrtError as exc:  # a full disk (DiskFull) exits 1, bad input 2
        click.echo(f"error: {exc}", err=True)
        return getattr(exc, "exit_code", 2)
    except OSError as exc:  # the run folder: read-only, a file in the way, a full disk
        from segrt.fsutil import disk_full, disk_full_error

        if disk_full(args.out, exc):
            click.echo(f"error: {disk_full_error(exc.filename or args.out)}", err=True)
            return 1
        click.echo(f"error: {exc.filename or args.out}: {exc.strerror or exc}", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo(f"interrupted; resume with --resume {os.path.join(args.out, 'last.pt')}", err=True)
        return 130
    return 0


@click.group("data", context_settings={"help_option_names": ["-h", "--help"]})
def data_command():
    """Look at a dataset before training."""


@data_command.command("check", cls=OneLineCommand, context_settings={"show_default": True}, epilog=examples(
    "segrt data check --data DATA --classes background,road", "segrt data check --data ADE --classes ... "
    "--reduce-zero-label --json | jq .splits"))
@options(DATA + [click.option("--seed", type=click.IntRange(min=0), default=0),
                 click.option("--json", "as_json", is_flag=True, help="print the report as JSON")])
def data_check_command(as_json, **kwargs):
    """What `segrt train` would find with these options, without training: pairs per split, unpaired
    and unusable files, sizes, channels, class pixel shares, unknown colours."""
    import json

    from .check import check_data, format_check

    args = SimpleNamespace(**kwargs)
    if args.layout in ("pets", "isbi") and not args.data:
        raise click.UsageError(f"--layout {args.layout} needs --data")
    import contextlib

    try:  # with --json, stdout holds the JSON alone: what was found is said on stderr
        with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
            report = check_data(args)
    except SegrtError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    click.echo(json.dumps(report, indent=1) if as_json else format_check(report))
    return 1 if report["unpaired"] or report["bad"] else 0


def parse(argv: list[str]) -> SimpleNamespace:
    """The options ``argv`` gives, as train() reads them (raises click's UsageError on a bad one)."""
    with train_command.make_context("segrt train", list(argv)) as ctx:
        return SimpleNamespace(**ctx.params)


def main(argv=None) -> int:
    """Run `segrt train` with ``argv``; returns the exit code (tests call this in process)."""
    try:
        train_command.main(argv, prog_name="segrt train")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
