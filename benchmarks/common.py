"""What the benchmark scripts share: where results go (benchmarks/results/<name>.json for the
numbers, .md for the table), the arguments of photo benchmarks, a folder of the first N photos."""

from __future__ import annotations

import json
import os
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def save(result: dict, md: str, name: str) -> Path:
    """Write NAME.json and NAME.md under benchmarks/results/, print the markdown; -> the stem."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / name
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    stem.with_suffix(".md").write_text(md)
    print(md)
    print(f"wrote {stem}.json/.md")
    return stem


def photo_args(parser, rounds: int, count: int = 150):
    """The arguments of the benchmarks that run a model over real photos."""
    parser.add_argument("--model", type=Path, default=Path("exported/pets"))
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--count", type=int, default=count, help="the first N photos")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=rounds, help="alternating rounds (medians reported)")
    parser.add_argument("--tag", default="machine", help="names the results file (e.g. the machine)")
    return parser


def link_photos(images: Path, count: int, dst: Path) -> Path:
    """A folder of links to the first ``count`` photos of ``images``."""
    from segrt.imaging.files import list_images

    dst.mkdir(parents=True, exist_ok=True)
    for img in list_images(images)[:count]:
        os.symlink(img.resolve(), dst / img.name)
    return dst


def heading(result: dict, what: str) -> str:
    """A results table's title: what was measured, then the CPU (model and ISA flags), cores and date."""
    cpu = result["cpu"]
    return f"# {what}, {cpu['model']} [{' '.join(cpu['isa'])}], {result['cores']} cores, {result['date']}"
