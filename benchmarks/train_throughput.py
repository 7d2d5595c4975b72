"""Training throughput: the full loop (DataLoader + augmentation + step) vs model-only steps on
tensors already in memory. Same model, batch, loss and optimizer; measured alternately in one run.

    python benchmarks/train_throughput.py --data ../shared/data/oxford_iiit_pet_subset
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from segrt.model import UNet, UNetConfig
from segrt.training import data
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
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    layout = data.pets_layout(args.data)
    pairs, _ = data.find_pairs(layout)
    samples, _ = data.load_all(pairs[: args.images], layout, False, "decode")
    size = (args.size, args.size)
    ds = data.TrainDataset(samples, data.train_transform(size, layout.mean, layout.std))
    d = Dist()
    loader = make_loader(ds, args.batch_size, True, args.workers, d, 0, drop_last=True)

    torch.manual_seed(0)
    model = UNet(UNetConfig(in_channels=3, num_classes=3, base_channels=args.base_channels, depth=4)).train()
    loss_fn = SegmentationLoss(1, 1, None, data.IGNORE_INDEX)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.bf16 else nullcontext
    step = lambda x, y: train_step(model, x, y, loss_fn, opt, scaler, amp, 1.0)
    x0, y0 = next(iter(loader))

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

    def model_only():
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step(x0, y0)
        return args.steps * len(x0) / (time.perf_counter() - t0)

    model_only(), full_loop()  # warm-up
    full, bare = [], []
    for _ in range(args.rounds):  # A B A B: machine noise hits both
        bare.append(model_only())
        full.append(full_loop())
    res = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "size": args.size, "base_channels": args.base_channels, "batch_size": args.batch_size,
           "workers": args.workers, "bf16": args.bf16, "model_only_img_s": statistics.median(bare),
           "full_loop_img_s": statistics.median(full)}
    res["ratio"] = res["full_loop_img_s"] / res["model_only_img_s"]
    print(f"model-only {res['model_only_img_s']:.1f} img/s | full loop {res['full_loop_img_s']:.1f} img/s | "
          f"ratio {res['ratio']:.3f} (target >= 0.85)  [{args.size}px, base {args.base_channels}, "
          f"batch {args.batch_size}, workers {args.workers}, threads {res['threads']}, bf16 {args.bf16}]")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
