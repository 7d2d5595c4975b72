"""Where benchmark results go: benchmarks/results/<name>.json (the numbers) and .md (the table)."""

from __future__ import annotations

import json
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
