import json

import pytest
from click.testing import CliRunner

from segrt.bench.bench import ROW_KEYS, SCHEMA
from segrt.cli import main

pytestmark = pytest.mark.slow


def test_bench_all_fields_and_stable_schema(exported, tmp_path):
    out = tmp_path / "b.json"
    res = CliRunner().invoke(main, ["bench", str(exported), "--runs", "2", "--warmup", "1", "--sizes", "64,40",
                                    "--batch-sizes", "1,2", "--provider", "cpu", "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["schema"] == SCHEMA and data["runs"] == 2
    assert {"cores", "threads", "onnxruntime"} <= set(data["machine"])
    rows = data["rows"]
    assert {r["artifact"] for r in rows} == {"model.onnx", "model.ts", "model.pt2"}
    assert len(rows) == 3 * 2 * 2
    for r in rows:
        assert tuple(r) == ROW_KEYS
        assert r["provider"] == "cpu" and r["height"] in (64, 40)  # multiples of 8 stay as they are
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["images_per_s"] > 0 and r["peak_rss_mb"] > 0
    assert "model.onnx" in res.output and "p99 ms" in res.output


def test_bench_markdown_and_unavailable_provider(exported):
    res = CliRunner().invoke(main, ["bench", str(exported), "--runs", "1", "--sizes", "64", "--batch-sizes", "1",
                                    "--artifact", "model.onnx", "--markdown"])
    assert res.exit_code == 0 and res.output.count("| model.onnx * |") == 1  # what auto runs, marked
    assert "* = what --provider auto runs here (provider auto -> model.onnx" in res.output
    assert "| p50 ms/batch |" in res.output and "| ms/img (p50) |" in res.output
    res = CliRunner().invoke(main, ["bench", str(exported), "--runs", "1", "--batch-sizes", "2", "--provider", "cpu",
                                    "--artifact", "model.onnx", "--markdown"])
    row = next(ln for ln in res.output.splitlines() if ln.startswith("| model.onnx |")).split(" | ")
    assert "bench at 64x64 (the working size predict resizes to" in res.output and row[4] == "64x64"
    assert float(row[10]) == pytest.approx(float(row[7]) / 2, abs=0.03)  # per image = per batch / batch size (rounded)
    res = CliRunner().invoke(main, ["bench", str(exported), "--provider", "cuda"])
    assert res.exit_code == 2 and "provider 'cuda'" in res.output and "available: cpu" in res.output


def test_bench_onnx_never_imports_torch(exported):
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "from segrt.bench.bench import run_bench\n"
            f"r = run_bench({str(exported)!r}, provider='cpu', batch_sizes=[1], sizes=[64], warmup=0, runs=1)\n"
            "print(sorted({row['artifact'] for row in r['rows']}))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "['model.onnx']"
