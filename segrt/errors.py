"""User-facing errors: one line that says what is wrong and, where possible, what to do."""

__all__ = ["SegrtError", "ImageError", "CheckpointError", "ProviderError", "GateFailed", "DiskFull", "first_line"]


class SegrtError(Exception):
    """A problem with the user's input or environment (shown as one line, exit code 2)."""


class ImageError(SegrtError):
    """An image file that cannot be used (the message names the file)."""


class CheckpointError(SegrtError):
    """A file that is not a usable segrt checkpoint."""


class ProviderError(SegrtError):
    """A requested execution provider is not available."""


class GateFailed(SegrtError):
    """An accuracy/parity gate failed (exit code 1); ``report`` holds the measurements."""

    exit_code = 1

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report or {}


class DiskFull(SegrtError):
    """The disk filled up while segrt wrote a file (exit code 1): what was there before is untouched."""

    exit_code = 1


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line: its first line, else its type name."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
