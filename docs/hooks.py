"""MkDocs hooks: before each build, render benchmarks/results/ into docs/results.md (grouped by CPU class,
newest first, each run's table and plot as its script wrote them) and copy the pictures the pages show
from the repository into docs/assets/. Both are build outputs (git ignores them): no figure is typed twice.

    python docs/hooks.py --chart   # also the README's chart, docs/img/latest-speed.png, from the newest run
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS, RESULTS = ROOT / "docs", ROOT / "benchmarks" / "results"
PICTURES = ["examples/figure.png", "examples/parity-report.jpg", "exported/pets/training/curves.png",
            "exported/pets/training/stage1-curves.png", "exported/pets/training/stage2-curves.png"]
_TAGS = {"xeon-noamx": ("Intel Xeon", ["avx512_vnni", "avx512_bf16"]), "zen4": ("AMD EPYC (Zen 4)",
         ["avx512_vnni", "avx512_bf16"]), "zen5": ("AMD EPYC (Zen 5)", ["avx512_vnni", "avx512_bf16"])}


def cpu_class(isa: list[str]) -> str:
    """The CPU class a run belongs to, by the instructions that change segrt's choices."""
    if "amx_tile" in isa or "amx_bf16" in isa:
        return "AVX-512 with AMX"
    if "avx512_bf16" in isa or "avx512_vnni" in isa:
        return "AVX-512 VNNI / BF16, no AMX"
    if "avx2" in isa:
        return "AVX2 only"
    return "CPU not recorded"


def describe(path: Path) -> dict:
    """A result file's date, CPU model and ISA flags, from its JSON (older runs: from its name)."""
    data = json.loads(path.read_text())
    cpu = data.get("cpu") if isinstance(data, dict) else None
    model, isa = "", []
    if isinstance(cpu, dict):
        model, isa = cpu.get("model", ""), list(cpu.get("isa", []))
    elif isinstance(cpu, str):
        model, _, flags = cpu.partition("[")
        model, isa = model.strip(), flags.rstrip("]").split()
    tag = next((t for t in _TAGS if t in path.name), None)
    if tag and not model:
        model, isa = _TAGS[tag]
    date = (data.get("date") if isinstance(data, dict) else None) or \
        (re.match(r"\d{4}-\d{2}-\d{2}", path.name) or [""])[0] or "undated"
    return {"path": path, "date": date, "model": model or "not recorded", "isa": isa, "class": cpu_class(isa)}


def render() -> str:
    runs = sorted((describe(p) for p in RESULTS.glob("*.json")), key=lambda r: (r["date"], r["path"].name),
                  reverse=True)
    classes = sorted({r["class"] for r in runs}, key=lambda c: (c == "CPU not recorded", c))
    lines = ["# Benchmark results", "", "Rendered from `benchmarks/results/` when the site is built: each run's JSON "
             "gives its date and CPU; its table and plot are as its script wrote them. Grouped by CPU class, "
             "newest first.", ""]
    for cls in classes:
        lines += [f"## {cls}", ""]
        for r in (r for r in runs if r["class"] == cls):
            stem = r["path"].with_suffix("")
            lines += [f"### {r['date']}: {stem.name}", "",
                      f"CPU: {r['model']}" + (f" [{' '.join(r['isa'])}]" if r["isa"] else "") +
                      f"; data: `benchmarks/results/{r['path'].name}`", ""]
            table = stem.with_suffix(".md")
            if table.is_file():
                lines += [re.sub(r"^#+ ", "**", ln) + "**" if ln.startswith("#") else ln
                          for ln in table.read_text().splitlines()] + [""]
            if stem.with_suffix(".png").is_file():
                lines += [f"![{stem.name}](assets/results/{stem.name}.png)", ""]
    return "\n".join(lines) + "\n"


def copy_pictures() -> None:
    for rel in PICTURES:
        dst = DOCS / "assets" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, dst)
    (DOCS / "assets" / "results").mkdir(parents=True, exist_ok=True)
    for png in RESULTS.glob("*.png"):
        shutil.copyfile(png, DOCS / "assets" / "results" / png.name)


def latest_chart(path: Path) -> Path:
    """The README's chart: images/s of each path in the newest end-to-end run, its CPU in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    newest = max(RESULTS.glob("*e2e-vs-peers.json"), key=lambda p: describe(p)["date"])
    data, info = json.loads(newest.read_text()), describe(newest)
    rows = sorted(data["rows"], key=lambda r: r["images_per_s"])
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    ax.barh([r["path"] for r in rows], [r["images_per_s"] for r in rows],
            color=["#2a7ab0" if r["path"].startswith("segrt") else "#bbbbbb" for r in rows])
    ax.set_xlabel("photos -> masks on disk, images/s (whole process)")
    ax.set_title(f"{info['model']} ({info['class']}), {data.get('cores', 2)} cores, {info['date']}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def on_pre_build(config, **kwargs) -> None:  # the MkDocs hook
    copy_pictures()
    (DOCS / "results.md").write_text(render())


if __name__ == "__main__":
    on_pre_build(None)
    if "--chart" in sys.argv:
        print(latest_chart(DOCS / "img" / "latest-speed.png"))
