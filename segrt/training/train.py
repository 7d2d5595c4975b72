"""The training loop as named stages: setup (training.setup), resume, train_one_epoch, evaluate,
and finish_epoch (checkpoints, metrics.csv, curves). AdamW + cosine schedule, AMP on CUDA, bf16 on
CPU, gradient clipping, per-epoch validation (per-class IoU, mIoU), best.pt/last.pt, exact resume,
and DDP through torchrun."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from segrt.errors import first_line
from segrt.fsutil import write_bytes_atomic
from segrt.imaging.metrics import ConfusionMatrix
from segrt.imaging.splits import SPLIT_FILE
from segrt.model.checkpoint import load_checkpoint, save_checkpoint
from segrt.model.unet import UNetConfig

from . import data
from .log import append_csv, plain_args, plot_curves
from .setup import (build_data, build_layout, build_loaders, build_loss, build_model, build_optimisation,
                    check_before_data)
from .widen import can_widen, widen

__all__ = ["Dist", "Run", "train", "setup", "resume", "train_step", "evaluate"]


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


@dataclass
class Run:
    """Everything one training run holds between its stages."""

    args: object
    d: Dist
    layout: data.Layout
    model: torch.nn.Module
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: object
    amp: object
    use_amp: bool
    train_loader: object
    val_loader: object
    start_epoch: int = 1
    best: float = -1.0
    common: dict = field(default_factory=dict)  # what every checkpoint of the run carries
    ema: object = None  # --ema: torch.optim.swa_utils.AveragedModel of the unwrapped model

    @property
    def out(self) -> Path:
        return Path(self.args.out)


def train(args) -> dict:
    """Run training as configured by the parsed CLI args; returns the last epoch's metrics."""
    d = Dist()
    try:
        return _train(args, d)
    finally:
        d.close()


def _train(args, d: Dist) -> dict:
    run = setup(args, d)
    resume(run)
    row = {}
    for epoch in range(run.start_epoch, args.epochs + 1):
        row = _finish_epoch(run, epoch, *_train_one_epoch(run, epoch))
    if d.main and row:
        print(f"done: best val mIoU {run.best:.4f}; checkpoints in {run.out}/ (best.pt, last.pt), curves in "
              f"{run.out}/curves.png")
    return row


def _show_progress(args, d: Dist) -> bool:
    """Progress bars on a terminal only (a piped log gets the per-epoch lines, not bar redraws)."""
    return d.main and not args.quiet and sys.stderr.isatty()


def setup(args, d: Dist) -> Run:
    torch.manual_seed(args.seed + d.rank)
    np.random.seed(args.seed + d.rank)
    if args.threads:
        torch.set_num_threads(args.threads)
    layout = build_layout(args)
    if d.main and layout.note:
        print(layout.note)
    check_before_data(args, layout)
    model = build_model(args, layout, d)
    if args.init:
        _init_weights(model, args.init, d, args.seed)
    train_samples, val_samples, problems, split = build_data(args, layout, show=_show_progress(args, d),
                                                                report=d.main)
    if d.main and problems:
        print(f"skipped {len(problems)} bad file(s):", *problems, sep="\n  ")
    if not val_samples:
        raise data.DataError("no validation images: set --val-fraction > 0 or --val-images")
    loss_fn = build_loss(args, train_samples, len(layout.classes), d)
    optimizer, scheduler, scaler, amp, use_amp = build_optimisation(args, model, d)
    loaders = build_loaders(args, layout, train_samples, val_samples, model.config.size_multiple, d)
    size = (args.size, args.size)
    ema = None
    if args.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema), use_buffers=True)
    run = Run(args, d, layout, model, loss_fn, optimizer, scheduler, scaler, amp, use_amp, *loaders, ema=ema,
              common=dict(classes=layout.classes, normalization={"mean": layout.mean, "std": layout.std},
                          input_size=None if args.native else size, crop_size=size, ignore_index=data.IGNORE_INDEX,
                          mask_values=layout.mask_map, train_args=plain_args(args),
                          colors=layout.table.class_colours if layout.table else None))
    if d.main:
        run.out.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(run.out / SPLIT_FILE, (json.dumps(split, indent=1) + "\n").encode())  # what validated
        print(f"{len(loaders[0].dataset)} train / {len(val_samples)} val images, {len(layout.classes)} classes "
              f"{layout.classes}, {d.world} process(es) on {d.device}, AMP "
              f"{'fp16' if use_amp else 'bf16' if args.bf16 and not d.cuda else 'off'}")
    return run


def _init_weights(model, path: str, d: Dist, seed: int) -> None:
    """--init: the weights of a checkpoint (the average, if it was trained with --ema), widened
    (segrt/training/widen.py) where this model has more base channels."""
    ckpt = load_checkpoint(path, map_location="cpu")
    state, old = ckpt["state_dict"], _stored_config(ckpt)
    wider = old is not None and can_widen(old, model.config)
    if wider:  # the same function in the wider net; the same seed on every rank
        state = widen(state, old, model.config, torch.Generator().manual_seed(seed))
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise data.DataError(f"{path}: its weights do not fit this model ({ckpt['model_config']}); --depth and "
                             "--upsampling must match it, --base-channels match it or be larger") from None
    if d.main:
        how = f", widened from base {old.base_channels} to {model.config.base_channels}" if wider else ""
        print(f"starting from the weights of {path} (epoch {ckpt['epoch']}{how})")


def _stored_config(ckpt: dict) -> UNetConfig | None:
    try:
        return UNetConfig(**ckpt["model_config"])
    except (TypeError, ValueError):
        return None  # load_state_dict then says the weights do not fit


def resume(run: Run) -> None:
    """--resume: weights, optimizer, schedule and scaler as saved; then wrap for DDP."""
    if run.args.resume:
        ckpt = load_checkpoint(run.args.resume, map_location=run.d.device)
        try:
            run.model.load_state_dict(ckpt.get("raw_state_dict", ckpt["state_dict"]))
            if run.ema is not None:
                run.ema.module.load_state_dict(ckpt["state_dict"])
                run.ema.n_averaged.fill_(1)
            run.optimizer.load_state_dict(ckpt["optimizer"])
            run.scheduler.load_state_dict(ckpt["scheduler"])
            if "scaler" in ckpt:
                run.scaler.load_state_dict(ckpt["scaler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise data.DataError(f"--resume {run.args.resume}: it does not fit the run these options build "
                                 f"({first_line(exc)[:120]}); resume with the options the run started with") from None
        run.start_epoch, run.best = ckpt["epoch"] + 1, ckpt["metrics"].get("best_miou", -1.0)
        if run.d.main:
            print(f"resumed from {run.args.resume} at epoch {ckpt['epoch']}")
    if run.d.world > 1:
        run.model = torch.nn.parallel.DistributedDataParallel(
            run.model, device_ids=[run.d.local_rank] if run.d.cuda else None)


def _train_one_epoch(run: Run, epoch: int) -> tuple[float, float, float, float]:
    """-> (summed loss, images seen, training seconds, start time), summed over ranks."""
    args, d, loader = run.args, run.d, run.train_loader
    # per-epoch seeds: a resumed run sees exactly the batches and augmentations it would have
    torch.manual_seed(args.seed + 1000 * epoch + d.rank)
    loader.generator.manual_seed(args.seed + epoch)
    if isinstance(loader.sampler, torch.utils.data.DistributedSampler):
        loader.sampler.set_epoch(epoch)
    run.model.train()
    t0, seen, loss_sum = time.perf_counter(), 0, 0.0
    bar = tqdm(loader, desc=f"epoch {epoch}/{args.epochs}", unit="batch", disable=not _show_progress(args, d),
               leave=False)
    for x, y in bar:
        x, y = x.to(d.device, non_blocking=True), y.to(d.device, non_blocking=True)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = train_step(run.model, x, y, run.loss_fn, run.optimizer, run.scaler, run.amp, args.grad_clip)
        if run.ema is not None:
            run.ema.update_parameters(getattr(run.model, "module", run.model))
        seen += len(x)
        loss_sum += loss * len(x)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", img_s=f"{seen * d.world / (time.perf_counter() - t0):.1f}")
    train_time = time.perf_counter() - t0
    run.scheduler.step()
    loss_sum, seen = (float(v) for v in d.all_sum(np.array([loss_sum, seen])))
    return loss_sum, seen, train_time, t0


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


def evaluate(model, loader, loss_fn, num_classes, d: Dist, amp) -> tuple[ConfusionMatrix, float]:
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index=data.IGNORE_INDEX)
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


def _finish_epoch(run: Run, epoch: int, loss_sum: float, seen: float, train_time: float, t0: float) -> dict:
    """Validate, then on the main rank: last.pt (and best.pt), metrics.csv, curves.png, one line."""
    args, classes = run.args, run.layout.classes
    validated = run.ema.module if run.ema is not None else run.model  # what the checkpoints hold
    cm, val_loss = evaluate(validated, run.val_loader, run.loss_fn, len(classes), run.d, run.amp)
    summary = cm.summary(classes)
    row = {"epoch": epoch, "train_loss": loss_sum / seen, "val_loss": val_loss, "val_miou": summary["miou"],
           "val_pixel_acc": summary["pixel_accuracy"], "lr": run.optimizer.param_groups[0]["lr"],
           "train_img_s": seen / train_time, "epoch_s": time.perf_counter() - t0,
           **{f"iou_{k}": v for k, v in summary["iou"].items()}}
    if run.ema is not None:  # the raw weights too: does the average help?
        row["val_miou_raw"] = evaluate(run.model, run.val_loader, run.loss_fn, len(classes), run.d,
                                       run.amp)[0].summary(classes)["miou"]
    improved = summary["miou"] > run.best
    run.best = max(run.best, summary["miou"])
    if run.d.main:
        metrics = {**row, "best_miou": run.best, "val": summary}
        save_checkpoint(run.out / "last.pt", model=validated, epoch=epoch, metrics=metrics, optimizer=run.optimizer,
                        scheduler=run.scheduler, scaler=run.scaler if run.use_amp else None,
                        raw_model=run.model if run.ema is not None else None, **run.common)
        if improved:
            save_checkpoint(run.out / "best.pt", model=validated, epoch=epoch, metrics=metrics, **run.common)
        append_csv(run.out / "metrics.csv", row)
        plot_curves(run.out / "metrics.csv", run.out / "curves.png")
        if not args.quiet:
            ious = " ".join(f"{k}={v:.3f}" if v is not None else f"{k}=absent" for k, v in summary["iou"].items())
            present = sum(v is not None for v in summary["iou"].values())
            over = "" if present == len(classes) else f" over the {present} of {len(classes)} classes present"
            print(f"epoch {epoch}: train loss {row['train_loss']:.4f}  val loss {val_loss:.4f}  mIoU "
                  f"{summary['miou']:.4f}{over} ({ious})  {row['train_img_s']:.1f} img/s" + ("  *best*" if improved else ""))
    return row
