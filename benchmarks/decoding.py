"""What reduced-scale JPEG decoding buys and what it changes: for the pet photos as shipped and
the same photos enlarged to camera size (4x, re-encoded as JPEG quality 90), at the bundled model's
working size, how long reading one photo takes (decode + resize + normalize) in full and at reduced
DCT scale, how many photos it changes, and how far the fp32 model's masks on those photos agree with
its masks on fully decoded ones (the measurement `segrt export` keeps reduced-scale decoding on: it
must pass the fp32 gate, 0.999).

    python benchmarks/decoding.py --images ../shared/data/oxford_iiit_pet_subset/images --tag zen5
"""

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import save  # noqa: E402

from segrt.cpuinfo import cpu_info, describe_cpu  # noqa: E402
from segrt.imaging.decode import read_model_input  # noqa: E402
from segrt.imaging.files import list_images
from segrt.imaging.metrics import ConfusionMatrix, agreement  # noqa: E402
from segrt.manifest import Manifest  # noqa: E402
from segrt.runtime.session import Session  # noqa: E402


def _enlarge(paths: list[Path], dst: Path, factor: int) -> list[Path]:
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as img:
            big = img.convert("RGB").resize((img.width * factor, img.height * factor), Image.BICUBIC)
        big.save(dst / p.name, quality=90)
        out.append(dst / p.name)
    return out


def _read_ms(paths: list[Path], manifest: Manifest, decode: str, rounds: int) -> float:
    """Median over rounds of the mean ms to read one photo."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for p in paths:
            read_model_input(p, manifest, decode=decode)
        times.append((time.perf_counter() - t0) * 1000 / len(paths))
    return statistics.median(times)


def measure(paths: list[Path], manifest: Manifest, session: Session, rounds: int) -> dict:
    changed, cm = 0, ConfusionMatrix(manifest.num_classes)
    for p in paths:
        full, _ = read_model_input(p, manifest, decode="full")
        reduced, _ = read_model_input(p, manifest, decode="reduced")
        if (full != reduced).any():
            changed += 1
            cm.update(session.run(reduced[None])[0].argmax(0), session.run(full[None])[0].argmax(0))
    agreed = agreement(cm) if changed else {"mask_iou": None, "pixel_agreement": None}
    full_ms, reduced_ms = (_read_ms(paths, manifest, d, rounds) for d in ("full", "reduced"))
    return {"photos": len(paths), "changed": changed, "read_ms_full": full_ms, "read_ms_reduced": reduced_ms,
            "full_over_reduced": full_ms / reduced_ms, "mask_iou_on_changed": agreed["mask_iou"],
            "pixel_agreement_on_changed": agreed["pixel_agreement"],
            "keeps_fp32_gate": bool(changed and agreed["mask_iou"] >= 0.999 and agreed["pixel_agreement"] >= 0.999)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("exported/pets"))
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tag", default="machine")
    args = parser.parse_args()
    manifest = Manifest.load(args.model)
    session = Session(args.model, artifact=manifest.artifact("onnx", "fp32").name, provider="cpu")
    paths = list_images(args.images)[: args.count]
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"pet photos as shipped": paths, "the same, enlarged 4x (camera size)": _enlarge(paths, Path(tmp), 4)}
        rows = {name: measure(ps, manifest, session, args.rounds) for name, ps in sets.items()}
    cpu = describe_cpu(cpu_info())
    size = "x".join(map(str, manifest.input_size))
    lines = [f"# Reduced-scale JPEG decoding: speed and agreement ({dt.date.today()})", "",
             f"CPU: {cpu}. Model: {args.model} fp32 ONNX at {size}; first {args.count} photos of {args.images}; "
             f"read = decode + resize + normalize, one thread, median of {args.rounds} rounds.", "",
             "| photos | changed by reduced decoding | read ms full | read ms reduced | full / reduced | "
             "mask IoU on changed | pixel agreement on changed | keeps the fp32 gate |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        iou = "-" if r["mask_iou_on_changed"] is None else f"{r['mask_iou_on_changed']:.4f}"
        pix = "-" if r["pixel_agreement_on_changed"] is None else f"{r['pixel_agreement_on_changed']:.4f}"
        lines.append(f"| {name} | {r['changed']} of {r['photos']} | {r['read_ms_full']:.2f} | {r['read_ms_reduced']:.2f} "
                     f"| {r['full_over_reduced']:.2f}x | {iou} | {pix} | {'yes' if r['keeps_fp32_gate'] else 'no'} |")
    save({"date": dt.date.today().isoformat(), "cpu": cpu, "model": str(args.model), "size": manifest.input_size,
          "rows": rows}, "\n".join(lines) + "\n", f"{dt.date.today()}-{args.tag}-decoding")


if __name__ == "__main__":
    main()
