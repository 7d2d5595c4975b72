"""Tiled sliding-window inference, measured (issue 14's targets), in one run:

1. agreement: tiled (default tile 256, overlap 0.25, gaussian) vs whole-image masks on real images
   (mask IoU), and both against the ground truth (mIoU), through `segrt parity --tile`'s code;
2. memory: a large grayscale mosaic built from those images (default 16000 x 16000) segmented by
   `segrt predict --tile` in a child process, its peak RSS read from /usr/bin/time -v, and the
   output mask checked to be full size;
3. throughput: megapixels/s of tiled vs whole-image inference on a 4096 x 4096 crop, alternating,
   against the bound 0.85 x (1 - overlap)^2 x whole-image.

    python benchmarks/tiling.py --model exported/isbi --images ../shared/data/isbi2012_membrane/images \
        --masks ../shared/data/isbi2012_membrane/masks

Writes benchmarks/results/<date>-<tag>-tiling.json/.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from segrt.cpuinfo import cpu_info, describe_cpu
from segrt.imaging.prepare import prepare
from segrt.imaging.files import list_images
from segrt.imaging.masks import to_mask
from segrt.runtime.backends.base import SessionOptions
from segrt.runtime.session import Session
from segrt.runtime.tiling import segment, tile_spec
from segrt.verify.tiles import run_tile_parity

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from common import save  # noqa: E402
from make_mosaic import mosaic  # noqa: E402 - the README's example makes the same mosaic


def peak_rss_predict(model: Path, image: Path, out: Path, tile: int, overlap: float, blend: str) -> dict:
    """`segrt predict --tile` on one image in a child process under /usr/bin/time -v."""
    cmd = [sys.executable, "-m", "segrt.cli", "predict", str(image), "--model", str(model), "--out", str(out),
           "--tile", str(tile), "--overlap", str(overlap), "--blend", blend, "--max-pixels", "0", "--quiet", "--json"]
    t0 = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"predict failed: {res.stderr[-2000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr).group(1))
    summary = json.loads(res.stdout)
    with Image.open(out / f"{image.stem}.png") as mask:
        mask_size = list(mask.size)
    return {"peak_rss_mb": rss_kb / 1024, "wall_s": wall, "mask_size": mask_size, "runtime": summary["runtime"],
            "mode": summary["mode"], "timings_s": summary["timings_s"]}


def throughput(model: Path, image: np.ndarray, tile: int, overlap: float, blend: str, rounds: int) -> dict:
    """Megapixels/s, whole image (padded, one run) vs tiled, alternating rounds, medians."""
    session = Session(model, options=SessionOptions())
    m = session.manifest
    spec = tile_spec(tile, overlap, blend, m)

    def whole():
        x, geo = prepare(image, m.mean, m.std, None, m.size_multiple)
        return to_mask(session.run(x[None])[0], geo)

    tiled = lambda: segment(session.run, image, spec, m)  # noqa: E731
    times = {"whole": [], "tiled": []}
    for _ in range(rounds):
        for name, fn in (("whole", whole), ("tiled", tiled)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    mpx = image.shape[0] * image.shape[1] / 1e6
    rate = {k: mpx / statistics.median(v) for k, v in times.items()}
    bound = 0.85 * (1 - overlap) ** 2
    return {"runtime": session.describe(), "megapixels": mpx, "whole_mpx_s": rate["whole"],
            "tiled_mpx_s": rate["tiled"], "ratio": rate["tiled"] / rate["whole"], "bound": bound,
            "passed": rate["tiled"] >= bound * rate["whole"], "seconds": times}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", type=Path, default=Path("exported/isbi"))
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--masks", type=Path, required=True)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--blend", default="gaussian")
    p.add_argument("--mosaic", type=int, default=16000)
    p.add_argument("--speed-size", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--work", type=Path, default=Path("."), help="folder for the mosaic and its outputs (a temp folder inside)")
    p.add_argument("--tag", default="machine")
    args = p.parse_args()
    log = lambda m: print(m, flush=True)  # noqa: E731
    result = {"date": dt.date.today().isoformat(), "cpu": cpu_info(), "model": str(args.model), "tile": args.tile,
              "overlap": args.overlap, "blend": args.blend}
    log("1. tiled vs whole image on the real images ...")
    agree = run_tile_parity(args.model, args.images, args.masks, tile=args.tile, overlap=args.overlap,
                            blend=args.blend, provider="auto")
    result["agreement"] = {k: agree[k] for k in ("artifact", "inputs", "mask_iou_tiled_vs_whole", "pixel_agreement",
                                                 "miou_whole_vs_ground_truth", "miou_tiled_vs_ground_truth")}
    images = list_images(args.images)
    with tempfile.TemporaryDirectory(dir=args.work, prefix=".tiling-bench-") as tmp:
        tmp = Path(tmp)
        log(f"2. a {args.mosaic}x{args.mosaic} mosaic through segrt predict --tile ...")
        big = mosaic(images, args.mosaic)
        Image.fromarray(big).save(tmp / "mosaic.png", compress_level=1)
        speed_image = big[: args.speed_size, : args.speed_size, None].copy()
        del big
        result["memory"] = {"image": [args.mosaic, args.mosaic], "file_mb": (tmp / "mosaic.png").stat().st_size / 1e6,
                            **peak_rss_predict(args.model, tmp / "mosaic.png", tmp / "out", args.tile, args.overlap,
                                               args.blend)}
        shutil.rmtree(tmp / "out", ignore_errors=True)
    log(f"3. throughput on {args.speed_size}x{args.speed_size}, whole image vs tiled ...")
    result["throughput"] = throughput(args.model, speed_image, args.tile, args.overlap, args.blend, args.rounds)
    write(result, args.tag)


def write(r: dict, tag: str) -> None:
    a, mem, t = r["agreement"], r["memory"], r["throughput"]
    lines = [f"### Tiled inference, tile {r['tile']}, overlap {r['overlap']}, {r['blend']} ({r['date']})", "",
             f"CPU: {describe_cpu(r['cpu'])}, {r['cpu']['cores']} cores; model {r['model']}", "",
             f"- Agreement on {a['inputs']} images ({a['artifact']}): tiled vs whole-image mask IoU "
             f"**{a['mask_iou_tiled_vs_whole']:.4f}** (pixels {a['pixel_agreement']:.4f}); mIoU vs ground truth "
             f"whole {a['miou_whole_vs_ground_truth']:.4f}, tiled {a['miou_tiled_vs_ground_truth']:.4f} "
             f"(difference {a['miou_tiled_vs_ground_truth'] - a['miou_whole_vs_ground_truth']:+.4f})",
             f"- Memory: {mem['image'][0]}x{mem['image'][1]} grayscale mosaic ({mem['file_mb']:.0f} MB PNG), "
             f"`segrt predict --tile` peak RSS **{mem['peak_rss_mb']:.0f} MB**, {mem['wall_s']:.0f} s, output mask "
             f"{mem['mask_size'][0]}x{mem['mask_size'][1]} ({mem['runtime']})",
             f"- Throughput on {t['megapixels']:.1f} MP ({t['runtime']}): whole image {t['whole_mpx_s']:.2f} MP/s, "
             f"tiled {t['tiled_mpx_s']:.2f} MP/s: **{t['ratio']:.3f}x**, bound 0.85 x (1 - overlap)^2 = "
             f"{t['bound']:.3f}: {'met' if t['passed'] else 'MISSED'}"]
    save(r, "\n".join(lines) + "\n", f"{r['date']}-{tag}-tiling")


if __name__ == "__main__":
    main()
