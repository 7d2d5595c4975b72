"""Setting a training run up from its arguments: the data layout and splits, the loaders (DDP
aware), the model, the loss and the optimisation (AdamW, cosine schedule, AMP / bf16 autocast)."""

from __future__ import annotations

from contextlib import nullcontext
from os.path import commonprefix
from pathlib import Path

import torch

from segrt.model.unet import UNet, UNetConfig

from . import augment, data, splitting
from .losses import LOSS_WEIGHTS, SegmentationLoss, median_frequency_weights

__all__ = ["build_layout", "check_before_data", "class_weights", "build_data", "make_loader", "build_model",
           "build_loss", "build_optimisation", "build_loaders"]


def build_layout(args) -> data.Layout:
    from segrt.options import floats

    if args.layout == "pets":
        layout = data.pets_layout(args.data)
    elif args.layout == "isbi":
        layout = data.isbi_layout(args.data)
    else:
        table = _label_table(args)
        if not ((args.images and args.masks or args.data) and (args.classes or table)):
            raise data.DataError("--layout folders needs --images and --masks, or --data ROOT; and --classes (or "
                                 "--label-colors)")
        classes = table.classes if table else args.classes.split(",")
        folders = _found_folders(args.data) if args.data and not args.images else []
        first = folders[0][:2] if folders else (args.images, args.masks)
        layout = data.folders_layout(*first, classes, None, args.channels)
        layout.table, layout.unknown_as_void = table, args.unknown_as_void
        layout.image_suffix, layout.mask_suffix = _common_suffixes(layout, args.image_suffix, args.mask_suffix)
        if folders:
            layout.images = layout.masks = Path(args.data)
            layout.folders = folders
    if args.reduce_zero_label:  # MMSegmentation's: 0 is void, k is class k-1
        layout.mask_map = data.reduce_zero_label(len(layout.classes))
        print(f"--reduce-zero-label: mask value 0 is void, values 1..{len(layout.classes)} are classes 0.."
              f"{len(layout.classes) - 1}", flush=True)
    if args.mask_map:  # adds to (or changes) the identity mapping of the folders layout
        layout.mask_map = {**layout.mask_map, **data.parse_mask_map(args.mask_map, len(layout.classes))}
    if args.ignore_index is not None:
        layout.mask_map[args.ignore_index] = data.IGNORE_INDEX
    if args.layout == "folders" and layout.table is None and layout.mask_map.get(255) == data.IGNORE_INDEX \
            and not args.reduce_zero_label:
        print("mask value 255 is void (the ignore label: out of the loss and the metrics; --mask-map 255:N makes it "
              "a class)", flush=True)
    if args.mean:
        layout.mean = floats(args.mean, "--mean", layout.channels)
    if args.std:
        layout.std = floats(args.std, "--std", layout.channels, positive=True)
    return layout


def _label_table(args):
    """--label-colors FILE with its --void choice, or None."""
    if not args.label_colors:
        if args.void or args.unknown_as_void:
            raise data.DataError("--void and --unknown-as-void need --label-colors")
        return None
    from segrt.imaging.labels import read_label_table

    table = read_label_table(args.label_colors)
    for note in table.notes:
        print(f"note: {note}", flush=True)
    table.choose_void(list(args.void or ()), lambda m: print(m, flush=True))
    if args.classes and args.classes.split(",") != table.classes:
        raise data.DataError(f"--classes and --label-colors disagree: the table's classes are {', '.join(table.classes)}")
    return table


def _found_folders(root) -> list:
    """The image/mask folders under --data ROOT, said in one line each."""
    from .folders import discover

    found = discover(root)
    for images, masks, split in found:
        print(f"found {images} with its masks in {masks.name}/" + (f" ({split} split)" if split else ""), flush=True)
    return found


def _common_suffixes(layout: data.Layout, image_suffix: str | None, mask_suffix: str | None) -> tuple[str, str]:
    """(image suffix, mask suffix): as given, else what every image and every mask stem adds to a shared
    core (X.png with X_L.png; X_leftImg8bit.png with X_gtFine_labelTrainIds.png), said in one line."""
    if image_suffix is not None or mask_suffix is not None:
        return image_suffix or "", mask_suffix or ""
    images = sorted({p.stem for p in data.list_images(layout.images)}) if layout.images.is_dir() else []
    masks = sorted({p.stem for p in data.list_images(layout.masks)}) if layout.masks.is_dir() else []
    if not images or not masks or set(masks) & set(images):
        return "", ""
    def fits(k: int) -> bool:
        si, sm = images[0][k:], masks[0][k:]
        return all(i.endswith(si) for i in images) and all(m.endswith(sm) for m in masks) and \
            {m[:len(m) - len(sm)] for m in masks} <= {i[:len(i) - len(si)] for i in images}

    for k in range(len(commonprefix([images[0], masks[0]])), 0, -1):
        if fits(k):
            k -= images[0][k - 1] in "_-." and k > 1 and fits(k - 1)  # the separator goes with the suffixes
            si, sm = images[0][k:], masks[0][k:]
            print(f"masks are named like {masks[0]}: " + (
                f"each is its image's stem + {sm!r} (--mask-suffix to set it)" if not si else
                f"and images like {images[0]}: paired with the suffixes {si!r} and {sm!r} taken off (--image-suffix "
                "/ --mask-suffix to set them)"), flush=True)
            return si, sm
    return "", ""


def check_before_data(args, layout: data.Layout) -> None:
    """What can be refused before any image is decoded: class weights, the split file, the run
    folder, a checkpoint to resume."""
    if args.class_weights and args.class_weights != "auto":
        class_weights(args.class_weights, len(layout.classes))
    for file in args.split_file or ():
        if "=" not in file and Path(file).is_file():
            splitting.read_split(Path(file))
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise data.DataError(f"--out {args.out}: a file is in the way (not a folder)")
    if args.resume:
        from segrt.errors import CheckpointError
        from segrt.model.checkpoint import load_checkpoint

        missing = [k for k in ("optimizer", "scheduler") if k not in load_checkpoint(args.resume)]
        if missing:
            raise CheckpointError(f"--resume {args.resume}: holds no {' or '.join(missing)} state (best.pt and exports "
                                  "keep weights only); resume from RUN/last.pt, or start from its weights with --init")


def class_weights(text: str, num_classes: int) -> list[float]:
    from segrt.options import floats

    weights = floats(text, "--class-weights", num_classes, each="one per class")
    if min(weights) < 0 or max(weights) == 0:
        raise data.DataError(f"--class-weights: weights must be >= 0 and not all 0, got {text!r}")
    return weights


def build_data(args, layout: data.Layout, show: bool, report: bool = False):
    pairs, problems = data.find_pairs(layout, skip_bad=True)
    train_pairs, val_pairs, test_pairs, _ = splitting.split_data(args, layout, pairs, problems)
    if problems and not args.skip_bad:
        raise data.DataError(problems[0] + " (use --skip-bad to skip such images)")
    if not train_pairs or not val_pairs:
        n = len(train_pairs) + len(val_pairs)
        raise data.DataError(f"{layout.images}: {n} image/mask pair(s) in all, {len(train_pairs)} to train on and "
                             f"{len(val_pairs)} to validate on; a run needs at least 1 of each (2 pairs with "
                             "--val-fraction, or --val-images): add images")
    train_samples, bad = data.load_all(train_pairs, layout, args.skip_bad, "decode train", show)
    val_samples, bad2 = data.load_all(val_pairs, layout, args.skip_bad, "decode val", show)
    for name, samples in (("train", train_samples), ("val", val_samples)) if report else ():
        counts = data.label_counts(samples, len(layout.classes))
        if not args.quiet:  # what was found, before the first epoch
            shares = data.class_shares(samples, len(layout.classes))
            print(f"{name}: {len(samples)} pairs; pixels: {data.describe_shares(layout.classes, shares)}", flush=True)
        never = [f"{c} ({int(n)} pixels)" for c, n in zip(layout.classes, counts) if n == 0]
        if never:
            print(f"warning: never in the {name} masks: {', '.join(never)}; "
                  + ("the model cannot learn them" if name == "train" else "their IoU shows as absent"), flush=True)
    split = splitting.split_record(train_pairs, val_pairs, args.seed, None if args.val_images else args.val_fraction)
    if test_pairs:
        split["test"] = sorted(p.name for p in test_pairs)
    if data.palettes_note(layout) and report:
        print(data.palettes_note(layout), flush=True)
    return train_samples, val_samples, problems + bad + bad2, split


def make_loader(dataset, batch_size, shuffle, workers, d, seed, drop_last):
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


def build_model(args, layout: data.Layout, d) -> UNet:
    config = UNetConfig(in_channels=layout.channels, num_classes=len(layout.classes), base_channels=args.base_channels,
                        depth=args.depth, upsampling=args.upsampling)
    if args.size % config.size_multiple:
        raise data.DataError(f"--size must be a multiple of {config.size_multiple} for depth {args.depth}")
    model = UNet(config).to(d.device)
    return model.to(memory_format=torch.channels_last) if args.channels_last else model


def build_loss(args, train_samples, num_classes: int, d) -> SegmentationLoss:
    weights = None
    if args.class_weights == "auto":
        weights = median_frequency_weights(data.label_counts(train_samples, num_classes))
    elif args.class_weights:
        weights = torch.tensor(class_weights(args.class_weights, num_classes))
    ce_w, dice_w = LOSS_WEIGHTS[args.loss]
    if args.loss == "ce+dice":
        dice_w = args.dice_weight
    return SegmentationLoss(ce_w, dice_w, weights, data.IGNORE_INDEX).to(d.device)


def build_optimisation(args, model, d):
    """-> (optimizer, scheduler, scaler, amp context factory, AMP in use)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs, eta_min=args.lr * 0.01)
    use_amp = d.cuda and not args.no_amp
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if use_amp:
        amp = lambda: torch.autocast("cuda", dtype=torch.float16)  # noqa: E731
    elif args.bf16 and not d.cuda:  # CPUs with AVX512-BF16/AMX: ~2x faster convolutions
        amp = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    else:
        amp = nullcontext
    return optimizer, scheduler, scaler, amp, use_amp


def build_loaders(args, layout: data.Layout, train_samples, val_samples, multiple: int, d):
    size = (args.size, args.size)
    transform = (augment.native_train_transform(size, layout.mean, layout.std, layout.channels) if args.native
                 else augment.train_transform(size, layout.mean, layout.std, layout.channels, args.crop_scale))
    train_ds = augment.TrainDataset(train_samples, transform)
    val_ds = augment.EvalDataset(val_samples, None if args.native else size, layout.mean, layout.std, multiple)
    train_loader = make_loader(train_ds, args.batch_size, True, args.workers, d, args.seed, drop_last=True)
    # native: whole images of any size, one at a time
    val_loader = make_loader(val_ds, 1 if args.native else args.batch_size, False, 0, d, args.seed, drop_last=False)
    if len(train_loader) == 0:
        raise data.DataError(f"{len(train_ds)} training images is fewer than one batch of {args.batch_size} per rank")
    return train_loader, val_loader
