"""The `segrt` command line: each command parses arguments and calls one library function."""

from __future__ import annotations

import functools
import sys

import click

from segrt import __version__
from segrt.errors import SegrtError


def user_errors(fn):
    """Show SegrtError as one line on stderr with exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SegrtError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="segrt")
def main():
    """segrt: U-Net segmentation from training to a fast, verified deployment.

    \b
    Train:   python -m training --layout pets --data DIR --out runs/NAME
    Export:  segrt export runs/NAME/best.pt --out exported/NAME
    Check:   segrt parity exported/NAME --images DIR [--masks DIR]
    Run:     segrt predict IMAGES... --model exported/NAME --provider auto
    """
