"""The training program, readable top to bottom: :func:`train` is the whole loop.

Setup (seed, data, model, loss, optimiser, schedule, run folder) -> for each epoch: one pass
over the shuffled training set with gradient accumulation and mixed precision on CUDA, then
(every ``val_every`` epochs) validation with the FCN paper's metrics, a CSV/TensorBoard row,
``last`` and ``best`` checkpoints, early stopping and the zero-recall warning.

Exact resume: a checkpoint is written at the end of an epoch with the model, optimiser,
scheduler, RNG states and counters. The training order of epoch ``e`` comes from a
``torch.Generator`` seeded with ``(seed, e)`` alone, so a resumed run sees the same batches,
and restoring the global RNG states reproduces random augmentation and dropout.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pixelwise.checkpoint import (
    ModelMeta,
    atomic_write_bytes,
    load_state_into,
    read_weights,
    save_weights,
)
from pixelwise.config import Config, to_dict, to_yaml
from pixelwise.device import DistInfo, pick_device
from pixelwise.engine import checkpoint as ckpt
from pixelwise.engine.data_setup import (
    build_loader,
    class_weights_for,
    match_target,
    normalisation,
    open_split,
)
from pixelwise.engine.distributed import broadcast_buffers, init_from_env, shutdown
from pixelwise.engine.evaluate import validate
from pixelwise.engine.optim import build_optimizer, build_scheduler
from pixelwise.errors import CheckpointError, ConfigError, DivergenceError

log = logging.getLogger("pixelwise")

CSV_FIELDS = ["epoch", "step", "lr", "train_loss", "images_per_s", "seconds",
              "pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"]


@dataclass
class Progress:
    """Counters that survive a resume (saved in ``last.state.pt``)."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken
    best: float = -math.inf  # best value of config.train.metric so far
    stale: int = 0  # validations since the best one (early stopping)
    zero_recall: list[int] = field(default_factory=list)  # consecutive validations, per class


def train(config: Config, resume: str | Path | None = None, argv: list[str] | None = None) -> dict:
    """Train as ``config`` says; return the last validation scores and where things were written.

    The result: ``run_dir``, ``epochs`` and ``step`` reached, ``best`` value of ``metric``,
    ``scores`` (the last validation's ``ConfusionMatrix.compute()``) and ``table`` (those scores
    as the printed FCN metrics table; empty when a resumed run had no epoch left), ``classes``,
    and this process's torchrun ``rank`` (0 without torchrun).

    ``resume`` is a run folder: training continues from its newest whole checkpoint (see
    :func:`pixelwise.engine.checkpoint.newest_whole`), possibly up to a larger
    ``config.train.epochs``. ``argv`` is recorded in ``run.json``.
    """
    cuda = config.train.device != "cpu" and torch.cuda.is_available()
    dist_info = init_from_env(cuda)
    try:
        return _train(config, resume, argv, dist_info)
    finally:
        shutdown(dist_info)


def _train(config: Config, resume, argv, dist_info: DistInfo) -> dict:
    if resume is not None:
        config.train.out_dir = str(resume)  # a resumed run keeps writing into its own folder
    tc = config.train
    if resume is None and dist_info.is_main:  # before any data is read: fail early
        ckpt.start_fresh(Path(tc.out_dir), tc.overwrite)
    device = pick_device(tc.device, dist_info)
    seed_everything(tc.seed, tc.deterministic)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not tc.deterministic

    # ---- data ------------------------------------------------------------------------------
    train_set = open_split(config.data, config.data.train_split, train=True)
    val_set = open_split(config.data, config.data.val_split, train=False)
    info = train_set.info
    ignore_index = info.ignore_index if config.data.ignore_index is None else config.data.ignore_index
    num_classes = config.model.num_classes or info.num_classes
    if num_classes != info.num_classes:  # found now, not as an index error in the first loss
        raise ConfigError(
            f"model.num_classes must equal the {config.data.dataset} data's class count "
            f"{info.num_classes} ({', '.join(info.classes)}) at {config.data.root or 'built-in'}, "
            f"got {num_classes}; try model.num_classes=0 (take it from the data)"
        )
    mean, std = normalisation(config.data, info)
    if config.data.quick_check and dist_info.is_main:
        from pixelwise.data.checks import quick_check

        quick_check(train_set)
    train_loader = build_loader(train_set, config.data, dist_info, train=True, seed=tc.seed)
    val_loader = build_loader(val_set, config.data, dist_info, train=False, seed=tc.seed)

    # ---- model, loss, optimiser ------------------------------------------------------------
    from pixelwise.losses import build_loss
    from pixelwise.models import build

    options = {"in_channels": info.in_channels, **config.model.options}
    model = build(config.model.name, num_classes, **options)
    if config.model.init_from:
        from pixelwise.models import init_from

        source, _ = read_weights(config.model.init_from)
        try:
            copied = init_from(model, source)
        except CheckpointError as err:
            raise CheckpointError(f"model.init_from {config.model.init_from}: {err}") from None
        log.info("initialised %d tensors from %s", len(copied), config.model.init_from)
    memory_format = torch.channels_last if tc.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    weights = class_weights_for(config.data, num_classes, train_set)
    loss_fn = build_loss(config.optim.loss, num_classes, ignore_index, weights).to(device)
    optimizer = build_optimizer(model, config.optim)
    steps_per_epoch = math.ceil(len(train_loader) / tc.accumulate)
    scheduler = build_scheduler(optimizer, steps_per_epoch * tc.epochs, config.optim)
    amp_dtype = autocast_dtype(device, tc.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    meta = ModelMeta(
        name=config.model.name, num_classes=num_classes, options=options,
        classes=list(info.classes), palette=[tuple(c) for c in info.palette],
        ignore_index=ignore_index, in_channels=info.in_channels, mean=mean, std=std,
        version=_version(),
    )
    progress = Progress(zero_recall=[0] * num_classes)
    run_dir = Path(tc.out_dir)
    if resume is not None:
        progress = restore(run_dir, model, optimizer, scheduler, scaler, meta)
        log.info("resuming %s from epoch %d (step %d)", run_dir, progress.epoch, progress.step)
    if dist_info.is_main:
        write_run_files(run_dir, config, argv)
    ddp_model = wrap_ddp(model, device, dist_info)
    writer = open_tensorboard(run_dir) if dist_info.is_main else None

    # ---- the loop ---------------------------------------------------------------------------
    scores: dict[str, Any] = {}
    for epoch in range(progress.epoch, tc.epochs):
        started = time.perf_counter()
        set_loader_epoch(train_loader, tc.seed, epoch)
        train_loss, images = train_one_epoch(
            ddp_model, train_loader, loss_fn, optimizer, scheduler, scaler, config,
            progress, epoch, device, amp_dtype, memory_format, dist_info,
        )
        progress.epoch = epoch + 1
        seconds = time.perf_counter() - started
        row = {"epoch": epoch + 1, "step": progress.step, "lr": scheduler.get_last_lr()[0],
               "train_loss": train_loss, "images_per_s": images / seconds, "seconds": seconds}
        validated = (epoch + 1) % tc.val_every == 0 or epoch + 1 == tc.epochs
        improved = False
        if validated:
            broadcast_buffers(model, dist_info)
            scores = validate(model, val_loader, num_classes, ignore_index, device,
                              memory_format, dist_info, progress=tc.progress)
            row.update({key: scores[key] for key in CSV_FIELDS if key in scores})
            improved = track_validation(scores, tc.metric, progress, info.classes,
                                        tc.zero_recall_warn_after)
        if dist_info.is_main:
            summary = f", {tc.metric} {scores[tc.metric]:.4f}" if validated else ""
            log.info("epoch %d/%d: loss %.4f%s (%.1f s, %.1f images/s)", epoch + 1, tc.epochs,
                     train_loss, summary, seconds, row["images_per_s"])
            append_csv(run_dir / "metrics.csv", row)
            log_tensorboard(writer, row)
            meta.epoch, meta.step = progress.epoch, progress.step
            meta.metrics = {key: row[key] for key in CSV_FIELDS[6:] if key in row}
            ckpt.save_last(run_dir, model, meta, training_state(
                optimizer, scheduler, scaler, progress))
            if improved:
                save_weights(run_dir / "best.safetensors", model, meta)
        if validated and tc.early_stop_patience and progress.stale >= tc.early_stop_patience:
            log.warning("early stop: %s has not improved for %d validations",
                        tc.metric, progress.stale)
            break
    if writer is not None:
        writer.close()
    from pixelwise.metrics import format_table

    table = format_table(scores, info.classes) if scores else ""
    return {"run_dir": str(run_dir), "epochs": progress.epoch, "step": progress.step,
            "best": progress.best, "metric": tc.metric, "scores": scores, "table": table,
            "classes": list(info.classes), "rank": dist_info.rank}


def train_one_epoch(model, loader, loss_fn, optimizer, scheduler, scaler, config: Config,
                    progress: Progress, epoch: int, device, amp_dtype, memory_format,
                    dist_info: DistInfo) -> tuple[float, int]:
    """One pass over ``loader``; returns (mean finite loss, images seen)."""
    tc = config.train
    model.train()
    total_loss, counted, images = 0.0, 0, 0
    started = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{tc.epochs}", unit="batch", leave=False,
               disable=not (tc.progress and dist_info.is_main), dynamic_ncols=True)
    optimizer.zero_grad(set_to_none=True)
    for index, (image, target) in enumerate(bar):
        image = image.to(device, non_blocking=True, memory_format=memory_format)
        target = target.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            logits = model(image)
            loss = loss_fn(logits.float(), match_target(target, logits))
        value = loss.item()  # the one host-device sync of the step
        if not math.isfinite(value):
            if not tc.skip_nonfinite:
                raise DivergenceError(
                    f"training loss must be finite, got {value} at epoch {epoch + 1}, "
                    f"batch {index + 1}; the last good checkpoint is kept in "
                    f"{Path(tc.out_dir) / 'last.safetensors'}; try a lower optim.lr, "
                    "train.amp=false, or train.skip_nonfinite=true"
                )
            log.warning("skipping batch %d of epoch %d: loss is %s", index + 1, epoch + 1, value)
            optimizer.zero_grad(set_to_none=True)
            continue
        scaler.scale(loss / tc.accumulate).backward()
        if (index + 1) % tc.accumulate == 0 or index + 1 == len(loader):
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            progress.step += 1
        total_loss, counted = total_loss + value, counted + 1
        images += image.shape[0]
        rate = images / max(time.perf_counter() - started, 1e-9)
        bar.set_postfix(loss=f"{value:.4f}", img_s=f"{rate:.1f}")
    bar.close()
    return total_loss / max(counted, 1), images


def track_validation(scores: dict, metric: str, progress: Progress, classes: list[str],
                     warn_after: int) -> bool:
    """Update best/stale and zero-recall counters; return whether ``metric`` improved."""
    value = float(scores[metric])
    improved = value > progress.best
    progress.best, progress.stale = (value, 0) if improved else (progress.best, progress.stale + 1)
    for k, recall in enumerate(scores["accuracy"]):
        # recall is NaN when the class is absent from the validation set: not a collapse.
        progress.zero_recall[k] = progress.zero_recall[k] + 1 if recall == 0 else 0
        if warn_after and progress.zero_recall[k] == warn_after:
            log.warning(
                "class %r has had zero recall for %d validations: the model predicts it nowhere "
                "(collapsed into another class); try data.class_weights=auto or a lower lr",
                classes[k], warn_after)
    return improved


# ---- setup helpers ---------------------------------------------------------------------------


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed python, numpy and torch; with ``deterministic`` use only deterministic kernels."""
    if deterministic:  # cuBLAS needs this to be deterministic on CUDA
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=False)


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """bf16 on CUDA devices that support it, else fp16; None (full precision) on CPU."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def set_loader_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Make epoch ``epoch``'s shuffle a function of ``(seed, epoch)`` only (exact resume)."""
    sampler = loader.sampler
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    elif loader.generator is not None:
        loader.generator.manual_seed(seed * 1_000_003 + epoch)


def wrap_ddp(model: nn.Module, device: torch.device, dist_info: DistInfo) -> nn.Module:
    if not dist_info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def training_state(optimizer, scheduler, scaler, progress: Progress) -> dict[str, Any]:
    """Everything besides the weights that an exact resume needs (weights-only loadable)."""
    return {
        "epoch": progress.epoch, "step": progress.step, "best": progress.best,
        "stale": progress.stale, "zero_recall": list(progress.zero_recall),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(), "rng": ckpt.rng_state(),
    }


def restore(run_dir: Path, model, optimizer, scheduler, scaler, meta: ModelMeta) -> Progress:
    """Load the newest whole checkpoint of ``run_dir`` into the objects; return the counters.

    ``meta`` describes the model and classes of this configuration; a checkpoint of another
    model, options or class list raises CheckpointError naming what differs.
    """
    found = ckpt.newest_whole(run_dir)
    ckpt.check_same_model(found.meta, meta, found.stem.with_suffix(".safetensors"))
    load_state_into(model, found.weights, found.stem.with_suffix(".safetensors"))
    state = found.state
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(
            f"training state {found.stem}.state.pt must match this configuration's optimiser, "
            f"got {err}; try resuming with the run's own config.yaml"
        ) from None
    ckpt.set_rng_state(state["rng"])
    return Progress(state["epoch"], state["step"], state["best"], state["stale"],
                    list(state["zero_recall"]))


def _version() -> str:
    from pixelwise.version import __version__

    return __version__


def write_run_files(run_dir: Path, config: Config, argv: list[str] | None) -> None:
    """``config.yaml`` (the resolved config) and ``run.json`` (seed, versions, command line)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / "config.yaml", to_yaml(config).encode())
    record = {
        "command": argv if argv is not None else sys.argv,
        "seed": config.train.seed,
        "deterministic": config.train.deterministic,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pixelwise": _version(),
        "platform": platform.platform(),
        "config": to_dict(config),
    }
    atomic_write_bytes(run_dir / "run.json", json.dumps(record, indent=2).encode())


def append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)


def open_tensorboard(run_dir: Path):
    """A TensorBoard SummaryWriter when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def log_tensorboard(writer, row: dict[str, Any]) -> None:
    if writer is None:
        return
    for key, value in row.items():
        if key not in ("epoch", "step"):
            writer.add_scalar(key, value, row["step"])
    writer.flush()

