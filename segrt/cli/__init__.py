"""The `segrt` command line: one module per command group, each command parses its options and calls
one library function."""

from __future__ import annotations

import click

from segrt import __version__
from segrt.cli import bench, export, predict, scale, serve, verify
from segrt.options import OneLineErrors, examples
from segrt.training.cli import data_command, train_command  # their options; torch is imported only when they run

__all__ = ["main"]


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]}, epilog=examples(
    "segrt predict photo.jpg   (the bundled pets model; masks in a new predictions/)",
    "segrt export runs/pets/best.pt --out exported/pets && segrt serve --model exported/pets"))
@click.version_option(__version__, prog_name="segrt")
def main():
    """segrt: U-Net segmentation from training to a fast, verified deployment.

    \b
    Train:   segrt train --layout pets --data DIR --out runs/NAME
    Export:  segrt export runs/NAME/best.pt --out exported/NAME
    Check:   segrt parity exported/NAME --images DIR [--masks DIR]
    Here:    segrt verify exported/NAME   (every variant on its gate sample, on this CPU)
    Run:     segrt predict IMAGES... --model exported/NAME --provider auto
    Serve:   segrt serve --model exported/NAME   (HTTP: KServe v2 + POST /predict)
    """


for command in (train_command, data_command, export.export, verify.parity, verify.verify, export.quantize, export.import_onnx, predict.predict, bench.bench,
                scale.triton_repo, serve.serve):
    main.add_command(command)
