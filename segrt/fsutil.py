"""Atomic file and directory writes: temp name in the same folder, then rename.

The results get the modes a plain ``open(path, "w")`` / ``mkdir`` would give (0666 / 0777 less
the umask), not mkstemp's owner-only 0600 / 0700. Temp names carry the writer's pid
(``.NAME.PID.XXXX.tmp``), so leftovers of a killed process can be told from work in progress.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import tempfile
from pathlib import Path


@functools.lru_cache(maxsize=1)
def umask() -> int:
    """The process umask (read once: os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temp path beside ``path``; on success rename it onto ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp" + path.suffix, dir=path.parent)
    os.fchmod(fd, 0o666 & ~umask())
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, force: bool = False):
    """Yield a fresh temp folder beside ``path``; on success it becomes ``path``.

    An existing ``path`` is replaced only when ``force`` (callers check and refuse earlier).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~umask())
    try:
        yield tmp
        if path.exists() and force:
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


STALE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


def remove_stale_temps(parent: str | os.PathLike, name: str) -> list[Path]:
    """Delete temp folders/files segrt left beside ``parent/name`` when its writer was killed (their
    pid no longer runs); returns what was removed."""
    removed = []
    for p in Path(parent).glob(f".{glob_escape(name)}.*.tmp*"):
        match = STALE.match(p.name.split(".tmp", 1)[0] + ".tmp")
        if not match or match["name"] != name or _alive(int(match["pid"])):
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def cache_root() -> Path:
    """$SEGRT_CACHE_DIR, else $XDG_CACHE_HOME/segrt, else ~/.cache/segrt."""
    return Path(os.environ.get("SEGRT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "segrt"))


def writable_dir(preferred: Path, fallback: str) -> Path | None:
    """``preferred`` if it can be created and written, else CACHE_ROOT/FALLBACK, else None."""
    for path in (Path(preferred), cache_root() / fallback):
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    return None
