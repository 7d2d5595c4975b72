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
from pathlib import Path, PurePosixPath, PureWindowsPath

from segrt.errors import SegrtError

__all__ = ["disk_full", "disk_full_error", "umask", "temp_beside", "atomic_path", "atomic_dir", "write_bytes_atomic", "remove_stale_temps",
           "remove_stale_temps_under", "cache_root", "writable_dir", "plain_name", "inside", "check_apart",
           "check_replaceable", "check_file_output", "writable", "check_writable", "next_free", "check_member",
           "export_path"]


@functools.lru_cache(maxsize=1)
def umask() -> int:
    """The process umask (read once: os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def temp_beside(path: Path) -> Path:
    """A new empty temp file beside ``path`` (.NAME.PID.XXXX.tmp.SUFFIX), with a plain write's mode."""
    fd, tmp = _temp_file(path)
    os.close(fd)
    return tmp


def _temp_file(path: Path) -> tuple[int, Path]:
    """temp_beside, still open: (its descriptor, its path)."""
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp" + path.suffix, dir=path.parent)
    os.fchmod(fd, 0o666 & ~umask())
    return fd, Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, opened: bool = False):
    """Yield a temp path beside ``path`` (``opened``: that file open for binary writing); on success rename
    it onto ``path``, else delete it. A write that failed because the disk is full becomes DiskFull, one
    line naming the device and file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_file(path)
    try:
        if opened:
            with open(fd, "wb", buffering=0) as f:  # unbuffered: callers write whole buffers
                yield f
        else:
            os.close(fd)
            yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, (OSError, RuntimeError)) and disk_full(path.parent, exc):
            raise disk_full_error(path) from None
        raise


def disk_full(folder: str | os.PathLike, exc: BaseException) -> bool:
    """Did ``exc`` (an OSError, or torch's RuntimeError from its zip writer) come from a full disk?"""
    import errno
    import shutil

    if getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc):
        return True
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


def disk_full_error(path: str | os.PathLike):
    """DiskFull: no space left on the file system (its mount point) while writing ``path``."""
    from segrt.errors import DiskFull

    mount = Path(path).resolve().parent
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    return DiskFull(f"no space left on {mount} while writing {path}; nothing was left half-written (free some space "
                    "and run it again)")


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
        if path.exists() and force:  # the old folder moves to a temp name of ours, then goes
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".old.tmp", dir=path.parent))
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, (OSError, RuntimeError)) and disk_full(path.parent, exc):
            raise disk_full_error(path) from None
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path, opened=True) as f:
        f.write(data)


_STALE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


def remove_stale_temps(parent: str | os.PathLike, name: str) -> list[Path]:
    """Delete temp folders/files segrt left beside ``parent/name`` when its writer was killed (their
    pid no longer runs); returns what was removed."""
    return _remove_stale(Path(parent).glob(f".{_glob_escape(name)}.*.tmp*"), name)


def remove_stale_temps_under(folder: str | os.PathLike) -> list[Path]:
    """remove_stale_temps for every file and folder below ``folder`` (a predictions folder after a
    SIGKILLed run: its writers' temp files, named for files that were never finished)."""
    return _remove_stale(sorted(Path(folder).rglob(".*.tmp*")) if Path(folder).is_dir() else [])


def _remove_stale(paths, name: str | None = None) -> list[Path]:
    removed = []
    for p in paths:
        match = _STALE.match(p.name.split(".tmp", 1)[0] + ".tmp")
        if not match or (name is not None and match["name"] != name) or _alive(int(match["pid"])) \
                or not os.path.lexists(p):
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _glob_escape(text: str) -> str:
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


def plain_name(name: str, option: str) -> str:
    """``name`` as one ordinary path component (no '.', '..', separators or NUL), else SegrtError."""
    if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise SegrtError(f"{option} {name!r}: must be a plain name (one path component, not '.' or '..', "
                         "no separators)")
    return name


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Is ``path`` (symlinks resolved) ``folder`` itself or below it?"""
    p, f = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return p == f or f in p.parents


def check_apart(out: str | os.PathLike, inputs: dict[str, str | os.PathLike | None], option: str = "--out") -> None:
    """Refuse an output folder that is, contains or lies inside one of the inputs ({what: path})."""
    for what, path in inputs.items():
        if path is None:
            continue
        below, above = inside(out, path), inside(path, out)
        if below or above:
            relation = "is" if below and above else "lies inside" if below else "contains"
            raise SegrtError(f"{option} {out} {relation} the {what} {path}: writing there could destroy it; "
                             "keep the two apart")


def check_replaceable(folder: Path, marker: str, what: str, option: str) -> None:
    """An existing ``folder`` may be replaced only when segrt made it (it holds ``marker``, a segrt
    JSON file with a "format" of ours)."""
    import json

    try:
        fmt = json.loads((folder / marker).read_text()).get("format", "")
    except (OSError, ValueError, AttributeError, RecursionError):
        fmt = ""
    if not (isinstance(fmt, str) and fmt.startswith("segrt-")):
        raise SegrtError(f"{folder}: exists and is not {what} segrt made (no segrt {marker}); {option} replaces "
                         "only folders segrt wrote: choose another path")


def check_file_output(target, option: str, folders: dict[str, str | os.PathLike | None],
                      files: list[str | os.PathLike] = ()) -> None:
    """Refuse an output file that would land inside an input folder ({what: path}) or on one of
    the input ``files``, or where a folder is."""
    if target is None:
        return
    if os.path.isdir(target):
        raise SegrtError(f"{option} {target}: is a folder; give a file name")
    for what, folder in folders.items():
        if folder is not None and os.path.isdir(folder) and inside(target, folder):
            raise SegrtError(f"{option} {target} lies inside the {what} {folder}; write it elsewhere")
    if any(os.path.realpath(target) == os.path.realpath(f) for f in files):
        raise SegrtError(f"{option} {target} is one of the files it reads; write it elsewhere")


def writable(folder: str | os.PathLike) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def export_path(value) -> Path:
    """An export folder or model file given to the API as a path; an nn.Module (say) gets one line
    saying what to do instead of a TypeError."""
    if not isinstance(value, (str, os.PathLike)):
        raise SegrtError(f"a {type(value).__name__} is not an export: segrt runs an export folder or a model file; "
                         "for your own model, segrt.run_export(model, OUT, mean=..., std=...) first, then use OUT")
    return Path(value)


def check_writable(folder: str | os.PathLike, why: str) -> None:
    """A folder segrt must write into (e.g. an export it adds to): one line when it cannot."""
    if not writable(folder):
        raise SegrtError(f"{folder}: not writable, and {why}; copy it somewhere writable first")


def next_free(path: Path) -> Path:
    """``path`` if nothing is there, else the first free PATH-2, PATH-3, ..."""
    n, candidate = 2, Path(path)
    while os.path.lexists(candidate):
        candidate, n = Path(path).with_name(f"{Path(path).name}-{n}"), n + 1
    return candidate


def check_member(file, folder: str | os.PathLike | None = None, where: str = "manifest") -> None:
    """A file the manifest names: a relative name inside the export, no '..', and (with ``folder``)
    no symbolic link that leads out of it."""
    ok = isinstance(file, str) and file and "\0" not in file and "\\" not in file
    parts = PurePosixPath(file).parts if ok else ()
    if not ok or PurePosixPath(file).is_absolute() or PureWindowsPath(file).drive or ".." in parts:
        raise SegrtError(f"{where}: artifact file {file!r} is not a relative name inside the export folder; "
                         "refused (an export names only its own files)")
    if folder is not None:
        path, root = os.path.realpath(Path(folder) / file), os.path.realpath(folder)
        if os.path.commonpath([path, root]) != root:
            raise SegrtError(f"{Path(folder) / file}: a symbolic link that leads out of the export folder "
                             f"(to {path}); refused")
