"""What `segrt predict` reads and writes: input files, folders and path lists -> (path, output
stem) pairs, the output files of each, and the rules that keep outputs off inputs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from segrt import fsutil
from segrt.errors import SegrtError
from segrt.imaging import decode
from segrt.imaging.files import list_images
from segrt.predict.outputs import output_paths

__all__ = ["gather_inputs", "real", "check_no_overwrite", "check_out_folder", "parse_shard", "select_shard"]

if TYPE_CHECKING:
    from segrt.predict.options import PredictOptions

_OWN_OUTPUTS = (".color.png", ".overlay.jpg")  # segrt's outputs, never read back as inputs


def gather_inputs(inputs: list[str | os.PathLike], out: Path | None, problems: list | None = None
                  ) -> list[tuple[Path, Path]]:
    """Files, folders (recursive) or text files listing paths -> [(path, output stem)].

    Output stems mirror each folder's structure; with several inputs each gets its own prefix.
    Anything that exists but is not a folder or a regular text file (a FIFO, a device, a symlink
    loop) is kept as an input: decoding then fails for it alone, with the reason. ``out`` None: the
    outputs are not on this file system (a URI), so they cannot collide with inputs. Folders that
    cannot be read go into ``problems`` as (path, reason) (see imaging.files.list_images).
    """
    out = real(out) if out is not None else None
    pairs = []
    for raw in inputs:
        src = Path(raw)
        prefix = Path(src.name if src.is_dir() else src.stem) if len(inputs) > 1 else Path()
        if src.is_dir():
            if out is not None and real(src) == out:
                raise SegrtError(f"--out {src} is an input folder: the outputs would be read as inputs next time; "
                                 "choose another --out")
            inside = out is not None and real(src) in out.parents  # out inside src: its files are not inputs
            files = [p for p in list_images(src, problems) if not p.name.lower().endswith(_OWN_OUTPUTS)
                     and not (inside and out in real(p).parents)]
            pairs += [(p, prefix / p.relative_to(src).with_suffix("")) for p in files]
        elif not os.path.lexists(src):
            raise SegrtError(f"{src}: no such file or folder")
        elif src.suffix.lower() in decode.IMAGE_EXTENSIONS or not src.is_file():
            pairs.append((src, Path(src.stem)))
        else:
            pairs += [(p, prefix / p.with_suffix("").name) for p in _read_list(src)]
    by_output: dict[Path, list[Path]] = {}
    for path, rel in pairs:
        by_output.setdefault(rel, []).append(path)
    clash = next(((rel, paths) for rel, paths in by_output.items() if len(paths) > 1), None)
    if clash:
        raise SegrtError(f"{clash[1][0]} and {clash[1][1]} would both write {clash[0]}.png (same name, "
                         "different extension?); rename one or predict them separately")
    return pairs


def real(path: str | os.PathLike) -> Path:
    """The absolute path with symlinks resolved; a symlink loop is left as it is (no error)."""
    return Path(os.path.realpath(path))


def _read_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        raise SegrtError(f"{path}: neither an image (by extension) nor a text file listing image paths") from None
    base = path.parent
    return [p if p.is_absolute() else base / p
            for p in (Path(ln.strip()) for ln in lines if ln.strip() and not ln.lstrip().startswith("#"))]


def check_no_overwrite(pairs, out: Path, opts: PredictOptions, stacks: dict[Path, int] | None = None) -> None:
    """Refuse, before any work, outputs that would land on an input file, two inputs that would
    write the same output file (by final name: a.jpg's a.color.png and a.color.jpg's mask), and
    existing files in an --out that segrt did not write (no summary of a segrt run in it)."""
    inputs = {real(p) for p, _ in pairs}
    writer: dict[Path, Path] = {}
    ours = any(out.glob("summary*.json")) or opts.skip_existing
    for p, rel in pairs:
        for target in output_paths(out, rel, opts, (stacks or {}).get(p, 1)).values():
            if real(target) in inputs:
                raise SegrtError(f"output {target} would overwrite the input {target}; choose an --out "
                                 "folder outside the input folders")
            first = writer.setdefault(target, p)
            if first != p:
                raise SegrtError(f"{first} and {p} would both write {target}; rename one or predict them "
                                 "separately")
            if not ours and os.path.lexists(target):
                raise SegrtError(f"{target} exists and {out} holds no summary of a segrt run: segrt overwrites "
                                 "only its own outputs; choose a new --out (or --skip-existing to resume a run)")


def check_out_folder(out: Path, summary: str) -> None:
    """--out must be a folder segrt can create and write, with room for its summary file."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SegrtError(f"--out {out}: a file is in the way (not a folder)") from None
    except OSError as exc:
        raise SegrtError(f"--out {out}: cannot create it ({exc.strerror or exc})") from None
    if not fsutil.writable(out):
        raise SegrtError(f"--out {out}: not writable (permission denied)")
    target = out / summary
    if os.path.lexists(target) and not target.is_file():
        raise SegrtError(f"--out {out}: {summary} there is not a regular file; move it away")


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N (I is 0-based, like a Kubernetes indexed job's index)."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise SegrtError(f"--shard: expected I/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise SegrtError(f"--shard {text}: need 0 <= I < N (shards are numbered from 0)")
    return i, n


def _shard_of(rel: Path, n: int) -> int:
    """A stable shard for an output stem: its hash, so adding files never moves others."""
    digest = hashlib.sha1(rel.as_posix().encode()).digest()
    return int.from_bytes(digest[:8], "big") % n


def select_shard(pairs: list[tuple[Path, Path]], shard: tuple[int, int] | None) -> list[tuple[Path, Path]]:
    if shard is None:
        return pairs
    i, n = shard
    return [(p, rel) for p, rel in pairs if _shard_of(rel, n) == i]
