"""The parity report of an export, built and timed, and a screenshot of it in a real headless
browser (Debian's chromium, installed with apt-get when missing) for the README:

    python benchmarks/pets_sets.py --data ../shared/data/oxford_iiit_pet_subset --out /tmp/pets-sets
    python benchmarks/report_screenshot.py --export exported/pets --images /tmp/pets-sets/eval

Prints the parity time, the time to build the HTML from its results, and the file's size.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from segrt.manifest import Manifest
from segrt.verify.parity import image_inputs, run_parity_on
from segrt.verify.reference import eager_model, export_checkpoint
from segrt.verify.report import render

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    print("installing Debian's chromium (apt-get) ...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True,
                   env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    return shutil.which("chromium")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--export", type=Path, default=Path("exported/pets"))
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--masks", type=Path)
    p.add_argument("--out", type=Path, default=Path("/tmp/parity-report.html"))
    p.add_argument("--screenshot", type=Path, default=Path("examples/parity-report.jpg"))
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=1900)
    args = p.parse_args()
    manifest = Manifest.load(args.export)
    model = eager_model(export_checkpoint(args.export, manifest, print)[0], manifest)
    t0 = time.perf_counter()
    batches = image_inputs(manifest, args.images, args.masks)
    report, shown = run_parity_on(args.export, manifest, model, batches, worst=8)
    t1 = time.perf_counter()
    page = render(report, manifest, "cpu", shown=shown)
    t2 = time.perf_counter()
    args.out.write_text(page)
    n = sum(len(b.x) for b in batches)
    print(f"{n} images: parity {t1 - t0:.1f} s, HTML built in {t2 - t1:.2f} s, {len(page.encode()) / 1e6:.2f} MB "
          f"({args.out})")
    png = args.out.with_suffix(".png")
    subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--window-size={args.width},{args.height}",
                    f"--screenshot={png.resolve()}", args.out.resolve().as_uri()], check=True,
                   capture_output=True, timeout=120)
    Image.open(png).convert("RGB").save(args.screenshot, quality=82)  # a JPEG: a fifth of the PNG's size
    print(f"screenshot at {args.width} px wide: {args.screenshot} ({args.screenshot.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    sys.exit(main())
