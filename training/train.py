"""The training loop: AdamW + cosine schedule, AMP on CUDA, gradient clipping, per-epoch
validation (per-class IoU, mIoU), best.pt/last.pt, resume, and DDP through torchrun."""

from __future__ import annotations

import csv
import os
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from segrt.checkpoint import load_checkpoint, save_checkpoint
from segrt.metrics import ConfusionMatrix
from segrt.model import UNet, UNetConfig
from . import data as D
from .losses import LOSS_WEIGHTS, SegmentationLoss, median_frequency_weights


class Dist:
    """Rank/world info; initialises torch.distributed when launched by torchrun."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.cuda = torch.cuda.is_available()
        if self.world > 1:
            if self.cuda:
                torch.cuda.set_device(self.local_rank)
            dist.init_process_group("nccl" if self.cuda else "gloo")
        self.device = torch.device(f"cuda:{self.local_rank}" if self.cuda else "cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, array: np.ndarray) -> np.ndarray:
        if self.world == 1:
            return array
        t = torch.as_tensor(array, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.cpu().numpy()

    def close(self):
        if self.world > 1:
            dist.destroy_process_group()


def build_layout(args) -> D.Layout:
    from segrt.options import floats

    if args.layout == "pets":
        layout = D.pets_layout(args.data)
    elif args.layout == "isbi":
        layout = D.isbi_layout(args.data)
    else:
        if not (args.images and args.masks and args.classes):
            raise D.DataError("--layout folders needs --images, --masks and --classes")
        classes = args.classes.split(",")
        layout = D.folders_layout(args.images, args.masks, classes, None, args.channels)
    if args.mask_map:
        layout.mask_map = D.parse_mask_map(args.mask_map, len(layout.classes))
    if args.mean:
        layout.mean = floats(args.mean, "--mean", layout.channels)
    if args.std:
        layout.std = floats(args.std, "--std", layout.channels, positive=True)
    return layout


def build_data(args, layout: D.Layout, show: bool):
    pairs, problems = D.find_pairs(layout, args.skip_bad)
    if args.val_images:
        val_layout = D.Layout(Path(args.val_images), Path(args.val_masks or args.val_images), layout.classes,
                              layout.mask_map, layout.channels, layout.mean, layout.std)
        train_pairs, (val_pairs, more) = pairs, D.find_pairs(val_layout, args.skip_bad)
        problems += more
    elif args.split_file and Path(args.split_file).is_file():
        train_pairs, val_pairs = D.split_from_file(pairs, Path(args.split_file))
    else:
        train_pairs, val_pairs = D.split_pairs(pairs, args.val_fraction, args.seed)
        if args.split_file:
            D.write_split(train_pairs, val_pairs, Path(args.split_file), args.seed, args.val_fraction)
    train_samples, bad = D.load_all(train_pairs, layout, args.skip_bad, "decode train", show)
    val_samples, bad2 = D.load_all(val_pairs, layout, args.skip_bad, "decode val", show)
    return train_samples, val_samples, problems + bad + bad2


def make_loader(dataset, batch_size, shuffle, workers, d: Dist, seed, drop_last):
    sampler = None
    if d.world > 1:
        if shuffle:
            sampler = torch.utils.data.DistributedSampler(dataset, d.world, d.rank, shuffle=True, seed=seed)
        else:  # unpadded shard, so every val image counts exactly once
            dataset = torch.utils.data.Subset(dataset, list(range(d.rank, len(dataset), d.world)))
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
        num_workers=workers, drop_last=drop_last, pin_memory=d.cuda,
        generator=torch.Generator().manual_seed(seed))


def evaluate(model, loader, loss_fn, num_classes, d: Dist, amp) -> tuple[ConfusionMatrix, float]:
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index=D.IGNORE_INDEX)
    loss_sum, n = 0.0, 0
    with torch.no_grad(), amp():
        for x, y in loader:
            x, y = x.to(d.device, non_blocking=True), y.to(d.device, non_blocking=True)
            logits = model(x)
            loss_sum += float(loss_fn(logits, y)) * len(x)
            n += len(x)
            cm.update(logits.argmax(1).cpu().numpy(), y.cpu().numpy())
    cm.matrix = d.all_sum(cm.matrix).astype(np.int64)
    loss_sum, n = d.all_sum(np.array([loss_sum, n]))
    return cm, float(loss_sum / max(n, 1))


def train(args) -> dict:
    """Run training as configured by the parsed CLI args; returns the last epoch's metrics."""
    d = Dist()
    try:
        return _train(args, d)
    finally:
        d.close()


def _train(args, d: Dist) -> dict:
    torch.manual_seed(args.seed + d.rank)
    np.random.seed(args.seed + d.rank)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    layout = build_layout(args)
    size = (args.size, args.size)
    train_samples, val_samples, problems = build_data(args, layout, show=d.main and not args.quiet)
    if d.main and problems:
        print(f"skipped {len(problems)} bad file(s):", *problems, sep="\n  ")
    if not val_samples:
        raise D.DataError("no validation images: set --val-fraction > 0 or --val-images")
    num_classes = len(layout.classes)

    config = UNetConfig(layout.channels, num_classes, args.base_channels, args.depth, args.upsampling)
    if args.size % config.size_multiple:
        raise D.DataError(f"--size must be a multiple of {config.size_multiple} for depth {args.depth}")
    model = UNet(config).to(d.device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    class_weights = None
    if args.class_weights == "auto":
        class_weights = median_frequency_weights(D.label_counts(train_samples, num_classes))
    elif args.class_weights:
        class_weights = torch.tensor([float(w) for w in args.class_weights.split(",")])
    ce_w, dice_w = LOSS_WEIGHTS[args.loss]
    if args.loss == "ce+dice":
        dice_w = args.dice_weight
    loss_fn = SegmentationLoss(ce_w, dice_w, class_weights, D.IGNORE_INDEX).to(d.device)

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs, eta_min=args.lr * 0.01)
    use_amp = d.cuda and not args.no_amp
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if use_amp:
        amp = lambda: torch.autocast("cuda", dtype=torch.float16)
    elif args.bf16 and not d.cuda:  # CPUs with AVX512-BF16/AMX: ~2x faster convolutions
        amp = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    else:
        amp = nullcontext

    start_epoch, best = 1, -1.0
    if args.resume:
        ckpt = load_checkpoint(args.resume, map_location=d.device)
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch = ckpt["epoch"] + 1
        best = ckpt["metrics"].get("best_miou", -1.0)
        if d.main:
            print(f"resumed from {args.resume} at epoch {ckpt['epoch']}")
    if d.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[d.local_rank] if d.cuda else None)

    transform = (D.native_train_transform(size, layout.mean, layout.std, layout.channels) if args.native
                 else D.train_transform(size, layout.mean, layout.std, layout.channels, args.crop_scale))
    train_ds = D.TrainDataset(train_samples, transform)
    val_ds = D.EvalDataset(val_samples, None if args.native else size, layout.mean, layout.std, config.size_multiple)
    train_loader = make_loader(train_ds, args.batch_size, True, args.workers, d, args.seed, drop_last=True)
    # native: whole images of any size, one at a time
    val_loader = make_loader(val_ds, 1 if args.native else args.batch_size, False, 0, d, args.seed, drop_last=False)
    if len(train_loader) == 0:
        raise D.DataError(f"{len(train_ds)} training images is fewer than one batch of {args.batch_size} per rank")

    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        print(f"{len(train_ds)} train / {len(val_ds)} val images, {num_classes} classes {layout.classes}, "
              f"{d.world} process(es) on {d.device}, AMP {'fp16' if use_amp else 'bf16' if amp is not nullcontext else 'off'}")
    common = dict(classes=layout.classes, normalization={"mean": layout.mean, "std": layout.std},
                  input_size=None if args.native else size, crop_size=size, ignore_index=D.IGNORE_INDEX,
                  mask_values=layout.mask_map,
                  train_args=plain_args(args))
    row = {}
    for epoch in range(start_epoch, args.epochs + 1):
        # per-epoch seeds: a resumed run sees exactly the batches and augmentations it would have
        torch.manual_seed(args.seed + 1000 * epoch + d.rank)
        train_loader.generator.manual_seed(args.seed + epoch)
        if isinstance(train_loader.sampler, torch.utils.data.DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        model.train()
        t0, seen, loss_sum = time.perf_counter(), 0, 0.0
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{args.epochs}", unit="batch",
                   disable=not d.main or args.quiet, leave=False)
        for x, y in bar:
            x, y = x.to(d.device, non_blocking=True), y.to(d.device, non_blocking=True)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss = train_step(model, x, y, loss_fn, optimizer, scaler, amp, args.grad_clip)
            seen += len(x)
            loss_sum += loss * len(x)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", img_s=f"{seen * d.world / (time.perf_counter() - t0):.1f}")
        train_time = time.perf_counter() - t0
        scheduler.step()
        loss_sum, seen = (float(v) for v in d.all_sum(np.array([loss_sum, seen])))
        cm, val_loss = evaluate(model, val_loader, loss_fn, num_classes, d, amp)
        summary = cm.summary(layout.classes)
        row = {"epoch": epoch, "train_loss": loss_sum / seen, "val_loss": val_loss, "val_miou": summary["miou"],
               "val_pixel_acc": summary["pixel_accuracy"], "lr": optimizer.param_groups[0]["lr"],
               "train_img_s": seen / train_time, "epoch_s": time.perf_counter() - t0,
               **{f"iou_{k}": v for k, v in summary["iou"].items()}}
        improved = summary["miou"] > best
        best = max(best, summary["miou"])
        if d.main:
            metrics = {**row, "best_miou": best, "val": summary}
            save_checkpoint(out / "last.pt", model=model, epoch=epoch, metrics=metrics, optimizer=optimizer,
                            scheduler=scheduler, scaler=scaler if use_amp else None, **common)
            if improved:
                save_checkpoint(out / "best.pt", model=model, epoch=epoch, metrics=metrics, **common)
            append_csv(out / "metrics.csv", row)
            plot_curves(out / "metrics.csv", out / "curves.png")
            if not args.quiet:
                ious = " ".join(f"{k}={v:.3f}" for k, v in summary["iou"].items() if v is not None)
                print(f"epoch {epoch}: train loss {row['train_loss']:.4f}  val loss {val_loss:.4f}  "
                      f"mIoU {summary['miou']:.4f} ({ious})  {row['train_img_s']:.1f} img/s"
                      + ("  *best*" if improved else ""))
    if d.main and row:
        print(f"done: best val mIoU {best:.4f}; checkpoints in {out}/ (best.pt, last.pt), curves in {out}/curves.png")
    return row


def train_step(model, x, y, loss_fn, optimizer, scaler, amp, grad_clip: float) -> float:
    """One optimisation step (AMP-aware, gradient clipping); returns the loss."""
    with amp():
        loss = loss_fn(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())


def plain_args(args) -> dict:
    return {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}


def append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def plot_curves(csv_path: Path, png_path: Path) -> None:
    """Loss and val mIoU per epoch, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segrt.fsutil import atomic_path

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    ep = [int(r["epoch"]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(ep, [float(r["train_loss"]) for r in rows], label="train")
    a.plot(ep, [float(r["val_loss"]) for r in rows], label="val")
    a.set(xlabel="epoch", ylabel="loss", title="loss")
    a.legend()
    b.plot(ep, [float(r["val_miou"]) for r in rows], label="mIoU", color="k")
    for key in rows[0]:
        if key.startswith("iou_"):
            b.plot(ep, [float(r[key]) if r[key] else np.nan for r in rows], label=key[4:], alpha=0.7)
    b.set(xlabel="epoch", ylabel="IoU", title="validation IoU")
    b.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
