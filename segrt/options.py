"""Option values checked once, up front: click types for the CLI, plain parsers for the library and
`segrt train`; the quantizers' options. A bad value is one line naming the option and what it needs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import click

from segrt.errors import SegrtError

__all__ = ["examples", "numbers", "floats", "ints", "FloatList", "IntList", "Number", "OneLineErrors", "OneLineCommand",
           "QuantizeOptions"]


def numbers(text: str, option: str, cast, what: str) -> list:
    """'1,2' -> [cast('1'), cast('2')]; at least one, or a one-line error naming ``option``."""
    try:
        values = [cast(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise SegrtError(f"{option}: expected comma-separated {what}, got {text!r}")
    return values


def floats(text: str, option: str, count: int | None = None, positive: bool = False,
           each: str = "one per channel") -> list[float]:
    """'0.5,0.25' -> [0.5, 0.25]: finite numbers (and > 0 with ``positive``), ``count`` of them."""
    values = numbers(text, option, float, "numbers")
    if not all(math.isfinite(v) for v in values):
        raise SegrtError(f"{option}: values must be finite numbers, got {text!r}")
    if positive and not all(v > 0 for v in values):
        raise SegrtError(f"{option}: values must be > 0, got {text!r}")
    if count is not None and len(values) != count:
        raise SegrtError(f"{option}: expected {count} values ({each}), got {len(values)} ({text!r})")
    return values


def ints(text: str, option: str, minimum: int = 1) -> list[int]:
    """'1,8' -> [1, 8], each >= ``minimum``."""
    values = numbers(text, option, int, f"integers >= {minimum}")
    if min(values) < minimum:
        raise SegrtError(f"{option}: expected comma-separated integers >= {minimum}, got {text!r}")
    return values


class FloatList(click.ParamType):
    """A click type for floats(): comma-separated, finite, optionally > 0."""

    name = "FLOATS"

    def __init__(self, positive: bool = False):
        self.positive = positive

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        try:
            return floats(value, param.opts[0] if param else "value", positive=self.positive)
        except SegrtError as exc:
            self.fail(str(exc).split(": ", 1)[1], param, ctx)


class IntList(click.ParamType):
    name = "INTS"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        try:
            return ints(value, param.opts[0] if param else "value")
        except SegrtError as exc:
            self.fail(str(exc).split(": ", 1)[1], param, ctx)


class Number(click.ParamType):
    """A finite float in a range (click's FloatRange lets nan through): Number(0, 1, high_open=True)."""

    name = "NUMBER"

    def __init__(self, low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False):
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open
        self.span = (f"{'>' if low_open else '>='} {low:g}" if high == math.inf else
                     f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}")

    def convert(self, value, param, ctx):
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"expected a number, got {value!r}", param, ctx)
        inside = (v > self.low if self.low_open else v >= self.low) and \
            (v < self.high if self.high_open else v <= self.high)
        if not (math.isfinite(v) and inside):
            self.fail(f"must be a finite number {self.span}, got {value}", param, ctx)
        return v

    def get_metavar(self, param, ctx=None):
        return "NUMBER"


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


class _OneLine:
    """For a click group or command: usage errors are one line (``error: ...``, exit 2) instead of
    the usage block, and Ctrl-C outside a command's own handling exits 130."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as exc:  # a bare `segrt` shows the help
            click.echo(exc.format_message())
            raise SystemExit(0) from None
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            click.echo(f"error: {exc.format_message()}{where}", err=True)
            raise SystemExit(2) from None
        except (click.Abort, KeyboardInterrupt):
            click.echo("error: interrupted", err=True)
            raise SystemExit(130) from None
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            raise SystemExit(exc.exit_code) from None
        raise SystemExit(rv if isinstance(rv, int) else 0)


class OneLineErrors(_OneLine, click.Group):
    """The segrt group (see OneLine)."""


class OneLineCommand(_OneLine, click.Command):
    """A command run on its own, e.g. `python -m segrt.training` under torchrun (see OneLine)."""


@dataclass
class QuantizeOptions:
    calib_images: Path | None = None
    calib_count: int | None = None
    calib_method: str | None = None  # ONNX Runtime INT8; None: minmax, then percentile where minmax misses the gate
    val_images: Path | None = None
    val_masks: Path | None = None
    val_fraction: float = 0.2
    gate: float | None = None  # mask IoU agreement; default by precision
    max_fp32_nodes: float = 0.34  # fraction of quantizable nodes the fallback may keep out of INT8
    batch_size: int = 4
    seed: int = 0


def examples(*lines: str) -> str:
    """A command's help epilog: one or two real examples, kept as written (click's \\b)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)
