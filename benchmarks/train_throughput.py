"""Training throughput: the full loop (DataLoader + augmentation + step) vs model-only steps on
tensors already in memory. Same model, batch, loss and optimizer; measured alternately in one run.
With --layouts: model-only steps in NCHW vs channels-last (NHWC), the same weights and batch.

    python benchmarks/train_throughput.py --data ../shared/data/oxford_iiit_pet_subset
    python benchmarks/train_throughput.py --data ../shared/data/oxford_iiit_pet_subset --layouts \
        --size 224 --base-channels 24 --workers 0
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from segrt.cpuinfo import cpu_info
from segrt.model.unet import UNet, UNetConfig
from segrt.training import augment, data
from segrt.training.losses import SegmentationLoss
from segrt.training.setup import make_loader
from segrt.training.train import Dist, train_step


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True, help="Oxford-IIIT Pet layout folder")
    p.add_argument("--images", type=int, default=160, help="images decoded into the dataset")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--steps", type=int, default=20, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast on CPU, as segrt train --bf16")
    p.add_argument("--layouts", action="store_true", help="instead: model-only steps, NCHW vs channels-last")
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    layout = data.pets_layout(args.data)
    pairs, _ = data.find_pairs(layout)
    samples, _ = data.load_all(pairs[: args.images], layout, False, "decode")
    size = (args.size, args.size)
    ds = augment.TrainDataset(samples, augment.train_transform(size, layout.mean, layout.std))
    d = Dist()
    loader = make_loader(ds, args.batch_size, True, args.workers, d, 0, drop_last=True)

    torch.manual_seed(0)
    model = UNet(UNetConfig(in_channels=3, num_classes=3, base_channels=args.base_channels, depth=4)).train()
    loss_fn = SegmentationLoss(1, 1, None, data.IGNORE_INDEX)
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.bf16 else nullcontext
    x0, y0 = next(iter(loader))
    res = {"machine": platform.processor() or platform.machine(), "cpu": cpu_info(), "threads": torch.get_num_threads(),
           "size": args.size, "base_channels": args.base_channels, "batch_size": args.batch_size,
           "workers": args.workers, "bf16": args.bf16}
    what = f"[{args.size}px, base {args.base_channels}, batch {args.batch_size}, threads {res['threads']}, bf16 {args.bf16}]"
    if args.layouts:
        res.update(compare_layouts(args, model, loss_fn, amp, x0, y0))
        print(f"NCHW {res['nchw_img_s']:.2f} img/s | channels-last {res['channels_last_img_s']:.2f} img/s | "
              f"ratio {res['ratio']:.2f}x  {what} on {res['cpu']['model']} {res['cpu']['isa']}")
    else:
        res.update(compare_loader(args, loader, stepper(model, loss_fn, amp), x0, y0))
        print(f"model-only {res['model_only_img_s']:.1f} img/s | full loop {res['full_loop_img_s']:.1f} img/s | "
              f"ratio {res['ratio']:.3f} (target >= 0.85)  {what}, workers {args.workers}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")


def stepper(model, loss_fn, amp):
    """One optimisation step of model, as segrt train takes it (AdamW, no GradScaler on CPU)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    return lambda x, y: train_step(model, x, y, loss_fn, opt, scaler, amp, 1.0)


def img_s(step, x, y, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    return steps * len(x) / (time.perf_counter() - t0)


def compare_loader(args, loader, step, x0, y0) -> dict:
    """The full loop (loader + augmentation + step) vs steps on one batch already in memory."""
    def full_loop():
        n, it, t0 = 0, iter(loader), time.perf_counter()
        for _ in range(args.steps):
            try:
                x, y = next(it)
            except StopIteration:
                it = iter(loader)
                x, y = next(it)
            step(x, y)
            n += len(x)
        return n / (time.perf_counter() - t0)

    img_s(step, x0, y0, args.steps), full_loop()  # warm-up
    full, bare = [], []
    for _ in range(args.rounds):  # A B A B: machine noise hits both
        bare.append(img_s(step, x0, y0, args.steps))
        full.append(full_loop())
    res = {"model_only_img_s": statistics.median(bare), "full_loop_img_s": statistics.median(full)}
    return {**res, "ratio": res["full_loop_img_s"] / res["model_only_img_s"]}


def compare_layouts(args, model, loss_fn, amp, x0, y0) -> dict:
    """Model-only steps of the same weights on the same batch, NCHW vs channels-last (segrt train's
    default), alternated round by round."""
    nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)
    runs = {"nchw": (stepper(model, loss_fn, amp), x0),
            "channels_last": (stepper(nhwc, loss_fn, amp), x0.contiguous(memory_format=torch.channels_last))}
    speeds = {k: [] for k in runs}
    for step, x in runs.values():
        img_s(step, x, y0, 2)  # warm-up
    for _ in range(args.rounds):
        for k, (step, x) in runs.items():
            speeds[k].append(img_s(step, x, y0, args.steps))
    res = {f"{k}_img_s": statistics.median(v) for k, v in speeds.items()}
    return {**res, "ratio": res["channels_last_img_s"] / res["nchw_img_s"]}


if __name__ == "__main__":
    main()
