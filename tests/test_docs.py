"""The README and the docs cannot drift: the README stays a short front page whose links resolve, the
command reference covers every command and option `segrt --help` shows, every `bash` block a reader
would paste runs (or says why it is illustrative), and the quick start prints what the README shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
_BLOCK = re.compile(r"^(?P<indent>[ \t]*)```bash\n(?P<body>.*?)^(?P=indent)```", re.S | re.M)


def blocks(page: Path) -> list[tuple[int, str, str | None]]:
    """(line, commands, why illustrative or None) of each bash block of a page."""
    text, out = page.read_text(), []
    for m in _BLOCK.finditer(text):
        line = text[:m.start()].count("\n") + 1
        before = [ln.strip() for ln in text[:m.start()].splitlines() if ln.strip()]
        why = before[-1][len("<!-- illustrative:"):].rstrip("->").strip() if before and \
            before[-1].startswith("<!-- illustrative:") else None
        body = "\n".join(ln[len(m.group("indent")):] for ln in m.group("body").splitlines())
        out.append((line, body, why))
    return out


def test_readme_is_a_short_front_page_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert re.findall(r"^make \w+", text, re.M)[:2] == ["make demo", "make test"]  # the quick start comes first
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not target.startswith(("http://", "https://", "mailto:")):
            assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_illustrative_blocks_say_why():
    for page in PAGES:
        for line, _, why in blocks(page):
            assert why != "", f"{page.name}:{line}: an illustrative block must say why"


def _commands(cmd: click.Command, path: str):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from _commands(sub, f"{path} {name}")


def test_the_command_reference_lists_every_command_and_option():
    """The reference page is mkdocs-click over segrt.cli:main; rendered here as the site renders it."""
    from mkdocs_click._docs import make_command_docs

    from segrt.cli import main

    page = (ROOT / "docs" / "reference" / "commands.md").read_text()
    assert ":module: segrt.cli" in page and ":command: main" in page and ":list_subcommands: true" in page
    style = re.search(r":style: (\w+)", page).group(1)
    text = "\n".join(make_command_docs("segrt", main, depth=1, style=style, list_subcommands=True))
    for path, cmd in _commands(main, "segrt"):
        assert path in text, f"{path} is missing from the command reference"
        for param in cmd.params:
            for opt in getattr(param, "opts", []):
                if isinstance(param, click.Option) and not param.hidden:
                    assert opt in text, f"{path} {opt} is missing from the command reference"


def _sandbox(tmp_path: Path) -> dict:
    """A folder like the repository root for the blocks (its examples, bundled models and test data,
    linked), and an environment with segrt on PATH."""
    for name in ("examples", "exported", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return env


RUNNABLE = [(page, line, body) for page in PAGES for line, body, why in blocks(page) if why is None]


@pytest.mark.slow
@pytest.mark.parametrize("page, line, body", RUNNABLE,
                         ids=[f"{p.relative_to(ROOT)}:{line}" for p, line, _ in RUNNABLE])
def test_documented_command_blocks_run(page, line, body, tmp_path):
    env = _sandbox(tmp_path)
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, f"{page.name}:{line} failed ({res.returncode}):\n{body}\n{res.stdout[-2000:]}" \
                                f"\n{res.stderr[-2000:]}"


def test_some_blocks_are_run():
    assert len(RUNNABLE) >= 2


def _pattern(shown: str) -> re.Pattern:
    """A line of output as the README shows it, as a pattern: numbers, variant file names and their
    runtime may differ from CPU to CPU, and '...' stands for anything."""
    parts = []
    for piece in re.split(r"( ?\.\.\.|\d+(?:\.\d+)?|model\.[\w.@]+|\((?:onnx|openvino) )", shown):
        if piece.strip() == "...":
            parts.append(".*")
        elif piece in ("(onnx ", "(openvino "):
            parts.append(r"\((?:onnx|openvino) ")
        elif re.fullmatch(r"\d+(?:\.\d+)?", piece or "x"):
            parts.append(r"\d+(?:\.\d+)?")
        elif piece.startswith("model."):
            parts.append(r"model\.[\w.@]+")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts))


@pytest.mark.slow
def test_the_quick_start_prints_what_the_readme_shows(tmp_path):
    text = (ROOT / "README.md").read_text()
    shown = re.search(r"```text\n(.*?)```", text, re.S).group(1).strip().splitlines()
    demo = re.search(r"^demo:.*\n\t\$\(VENV\)/bin/(segrt .*)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    env = _sandbox(tmp_path)
    res = subprocess.run(["bash", "-c", demo], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    printed = (res.stderr + res.stdout).splitlines()
    for line in shown:
        assert any(_pattern(line).fullmatch(p) for p in printed), f"the README shows {line!r}; today:\n" + \
            "\n".join(printed)
