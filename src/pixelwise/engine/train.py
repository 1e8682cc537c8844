"""The training program, readable top to bottom: :func:`run_epochs` is the whole loop.

:func:`set_up` (seed, data, model, loss, optimiser, schedule, run folder) builds one
:class:`TrainingRun` holding what the loop needs -> for each epoch: one pass over the shuffled
training set with gradient accumulation and mixed precision on CUDA (:func:`train_one_epoch`,
the forward pass in :func:`forward_loss`), then (every ``val_every`` epochs) validation with the
FCN paper's metrics, a CSV/TensorBoard row, ``last`` and ``best`` checkpoints and the
zero-recall warning; :func:`should_stop` decides whether to end early (early stopping).

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from pixelwise.config import validate as check_config
from pixelwise.device import DistInfo, pick_device
from pixelwise.engine import checkpoint as ckpt
from pixelwise.engine import precise_bn
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

if TYPE_CHECKING:
    from pixelwise.data.info import DatasetInfo

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


@dataclass
class TrainingRun:
    """Everything the loop reads and updates, built once by :func:`set_up`.

    ``model`` is the bare model (checkpoints, validation); ``ddp_model`` is what trains: the same
    model, or its DistributedDataParallel wrapper under torchrun. ``meta`` is the model's
    description written with every checkpoint (also the source of classes and ignore index).
    """

    config: Config  # the run's own copy: on resume, ``train.out_dir`` is the resumed folder
    run_dir: Path
    dist_info: DistInfo
    device: torch.device
    memory_format: torch.memory_format
    amp_dtype: torch.dtype | None  # autocast dtype of the forward pass; None: full precision
    train_loader: DataLoader
    val_loader: DataLoader
    model: nn.Module
    ddp_model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    meta: ModelMeta
    progress: Progress
    writer: Any | None  # TensorBoard SummaryWriter on rank 0 when tensorboard is installed


def train(config: Config, resume: str | Path | None = None, argv: list[str] | None = None) -> dict:
    """Train as ``config`` says; return the last validation scores and where things were written.

    The result: ``run_dir``, ``epochs`` and ``step`` reached, ``best`` value of ``metric``,
    ``scores`` (the last validation's ``ConfusionMatrix.compute()``) and ``table`` (those scores
    as the printed FCN metrics table; empty when a resumed run had no epoch left), ``classes``,
    and this process's torchrun ``rank`` (0 without torchrun).

    ``resume`` is a run folder: training continues from its newest whole checkpoint (see
    :func:`pixelwise.engine.checkpoint.newest_whole`), possibly up to a larger
    ``config.train.epochs``. ``argv`` is recorded in ``run.json``. ``config`` itself is left
    unchanged.
    """
    check_config(config)  # a Config built in Python is checked as a loaded one is
    if resume is not None:  # a resumed run keeps writing into its own folder
        config = replace(config, train=replace(config.train, out_dir=str(resume)))
    cuda = config.train.device != "cpu" and torch.cuda.is_available()
    dist_info = init_from_env(cuda)
    try:
        run = set_up(config, resume is not None, argv, dist_info)
        scores = run_epochs(run)
        if run.writer is not None:
            run.writer.close()
        return summary(run, scores)
    finally:
        shutdown(dist_info)


# ---- the loop --------------------------------------------------------------------------------


def run_epochs(run: TrainingRun) -> dict[str, Any]:
    """Train from ``run.progress.epoch`` to ``train.epochs`` (or an early stop); return the last
    validation's scores ({} when no epoch was left)."""
    tc = run.config.train
    scores: dict[str, Any] = {}
    for epoch in range(run.progress.epoch, tc.epochs):
        started = time.perf_counter()
        set_loader_epoch(run.train_loader, tc.seed, epoch)
        train_loss, images = train_one_epoch(run)
        run.progress.epoch = epoch + 1
        seconds = time.perf_counter() - started
        row = {"epoch": epoch + 1, "step": run.progress.step, "lr": run.scheduler.get_last_lr()[0],
               "train_loss": train_loss, "images_per_s": images / seconds, "seconds": seconds}
        validated = (epoch + 1) % tc.val_every == 0 or epoch + 1 == tc.epochs
        improved = False
        if validated:
            scores = validate_now(run)
            row.update({key: scores[key] for key in CSV_FIELDS if key in scores})
            improved = track_validation(scores, tc.metric, run.progress, run.meta.classes,
                                        tc.zero_recall_warn_after)
        if run.dist_info.is_main:
            log_epoch(run, row, scores[tc.metric] if validated else None)
            save_epoch(run, row, improved)
        if should_stop(run, validated):
            break
    return scores


def train_one_epoch(run: TrainingRun) -> tuple[float, int]:
    """One pass over the training loader, epoch ``run.progress.epoch`` (0-based, not yet counted
    as done); returns (mean finite loss, images seen)."""
    tc, loader = run.config.train, run.train_loader
    run.ddp_model.train()
    total_loss, counted, images = 0.0, 0, 0
    started = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {run.progress.epoch + 1}/{tc.epochs}", unit="batch",
               leave=False, disable=not (tc.progress and run.dist_info.is_main), dynamic_ncols=True)
    run.optimizer.zero_grad(set_to_none=True)
    for index, (image, target) in enumerate(bar):
        image = image.to(run.device, non_blocking=True, memory_format=run.memory_format)
        target = target.to(run.device, non_blocking=True)
        loss = forward_loss(run, image, target)
        value = loss.item()  # the one host-device sync of the step
        if not math.isfinite(value):
            on_nonfinite_loss(run, value, index)
            continue
        run.scaler.scale(loss / tc.accumulate).backward()
        if (index + 1) % tc.accumulate == 0 or index + 1 == len(loader):
            optimizer_step(run)
        total_loss, counted = total_loss + value, counted + 1
        images += image.shape[0]
        rate = images / max(time.perf_counter() - started, 1e-9)
        bar.set_postfix(loss=f"{value:.4f}", img_s=f"{rate:.1f}")
    bar.close()
    return total_loss / max(counted, 1), images


def forward_loss(run: TrainingRun, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The scalar training loss of ``image (N, C, H, W)`` against ``target (N, H, W)``.

    The forward pass runs under autocast in ``run.amp_dtype`` (see :func:`autocast_dtype`); the
    loss itself is computed in float32 from the (possibly half-precision) logits.
    """
    with torch.autocast(run.device.type, dtype=run.amp_dtype or torch.float32,
                        enabled=run.amp_dtype is not None):
        logits = run.ddp_model(image)
        return run.loss_fn(logits.float(), match_target(target, logits))


def optimizer_step(run: TrainingRun) -> None:
    """Apply the accumulated gradients (through the fp16 scaler, a no-op otherwise), advance the
    schedule and count the step."""
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    run.progress.step += 1


def on_nonfinite_loss(run: TrainingRun, value: float, index: int) -> None:
    """A NaN/inf loss at batch ``index``: raise DivergenceError (the last checkpoint, written at
    the end of the previous epoch, stays good) unless ``train.skip_nonfinite``, which drops the
    gradients accumulated so far and goes on with the next batch."""
    epoch = run.progress.epoch + 1
    if not run.config.train.skip_nonfinite:
        raise DivergenceError(
            f"training loss must be finite, got {value} at epoch {epoch}, "
            f"batch {index + 1}; the last good checkpoint is kept in "
            f"{run.run_dir / 'last.safetensors'}; try a lower optim.lr, "
            "train.amp=false, or train.skip_nonfinite=true"
        )
    log.warning("skipping batch %d of epoch %d: loss is %s", index + 1, epoch, value)
    run.optimizer.zero_grad(set_to_none=True)


def validate_now(run: TrainingRun) -> dict[str, Any]:
    """The FCN metrics over the whole validation set (all ranks together under torchrun).

    In a short run the batch-norm running statistics have not settled yet; they are recomputed
    over training batches first (``train.precise_bn``, :mod:`pixelwise.engine.precise_bn`)."""
    updates = run.progress.step * run.config.train.accumulate
    if precise_bn.needs_recompute(run.config.train.precise_bn, run.model, updates):
        used = precise_bn.recompute_statistics(run.model, run.train_loader, run.device,
                                               run.memory_format)
        if run.progress.epoch <= run.config.train.val_every:  # said once, at the first validation
            log.info("recomputing batch-norm statistics over %d training batches before each "
                     "validation while fewer than %d batches are trained (%d so far); "
                     "train.precise_bn=never turns this off", used, precise_bn.SETTLED_AFTER,
                     updates)
    broadcast_buffers(run.model, run.dist_info)  # every rank validates rank 0's BN statistics
    return validate(run.model, run.val_loader, run.meta.num_classes, run.meta.ignore_index,
                    run.device, run.memory_format, run.dist_info, progress=run.config.train.progress)


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


def log_epoch(run: TrainingRun, row: dict[str, Any], score: float | None) -> None:
    """One line per epoch: loss, the ``train.metric`` score when validated, time, throughput."""
    tc = run.config.train
    scored = f", {tc.metric} {score:.4f}" if score is not None else ""
    log.info("epoch %d/%d: loss %.4f%s (%.1f s, %.1f images/s)", row["epoch"], tc.epochs,
             row["train_loss"], scored, row["seconds"], row["images_per_s"])


def save_epoch(run: TrainingRun, row: dict[str, Any], improved: bool) -> None:
    """Rank 0's files for the epoch: a ``metrics.csv`` and TensorBoard row (and, when validated,
    ``training_curves.png``), the ``last`` checkpoint pair (rotating the one before to
    ``previous``) and, when improved, ``best``."""
    append_csv(run.run_dir / "metrics.csv", row)
    if "mean_iou" in row:  # a validation epoch: redraw the curves beside metrics.csv
        from pixelwise.plots import training_curves_png

        training_curves_png(run.run_dir / "metrics.csv", run.run_dir / "training_curves.png")
    log_tensorboard(run.writer, row)
    meta = run.meta
    meta.epoch, meta.step = run.progress.epoch, run.progress.step
    meta.metrics = {key: row[key] for key in CSV_FIELDS[6:] if key in row}
    ckpt.save_last(run.run_dir, run.model, meta, training_state(
        run.optimizer, run.scheduler, run.scaler, run.progress))
    if improved:
        save_weights(run.run_dir / "best.safetensors", run.model, meta)


def should_stop(run: TrainingRun, validated: bool) -> bool:
    """Whether to end before ``train.epochs``, checked after every epoch: early stopping, after
    ``train.early_stop_patience`` validations without improving ``train.metric``."""
    tc = run.config.train
    if validated and tc.early_stop_patience and run.progress.stale >= tc.early_stop_patience:
        log.warning("early stop: %s has not improved for %d validations",
                    tc.metric, run.progress.stale)
        return True
    return False


def summary(run: TrainingRun, scores: dict[str, Any]) -> dict:
    """What :func:`train` returns (see there)."""
    from pixelwise.metrics import format_table

    classes = run.meta.classes
    return {"run_dir": str(run.run_dir), "epochs": run.progress.epoch, "step": run.progress.step,
            "best": run.progress.best, "metric": run.config.train.metric, "scores": scores,
            "table": format_table(scores, classes) if scores else "", "classes": list(classes),
            "rank": run.dist_info.rank}


# ---- set-up ----------------------------------------------------------------------------------


def set_up(config: Config, resuming: bool, argv: list[str] | None,
           dist_info: DistInfo) -> TrainingRun:
    """Everything before the first epoch: run folder, device, seed, data, model, loss,
    optimiser, schedule, the resumed state, run files. The order is part of exact repetition:
    the data and the model's initial weights draw from the RNG seeded here."""
    tc = config.train
    run_dir = Path(tc.out_dir)
    if not resuming and dist_info.is_main:  # before any data is read: fail early
        ckpt.start_fresh(run_dir, tc.overwrite)
    device = pick_device(tc.device, dist_info, "train.device={value}")
    seed_everything(tc.seed, tc.deterministic)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not tc.deterministic

    train_set = open_split(config.data, config.data.train_split, train=True)
    val_set = open_split(config.data, config.data.val_split, train=False)
    meta = describe_model(config, train_set.info)
    if config.data.quick_check and dist_info.is_main:
        from pixelwise.data.checks import quick_check

        quick_check(train_set)
    train_loader = build_loader(train_set, config.data, dist_info, train=True, seed=tc.seed)
    val_loader = build_loader(val_set, config.data, dist_info, train=False, seed=tc.seed)

    from pixelwise.losses import build_loss

    model = build_model(meta, config.model.init_from)
    memory_format = torch.channels_last if tc.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    weights = class_weights_for(config.data, meta.num_classes, train_set)
    loss_fn = build_loss(config.optim.loss, meta.num_classes, meta.ignore_index, weights)
    loss_fn = loss_fn.to(device)
    optimizer = build_optimizer(model, config.optim)
    steps_per_epoch = math.ceil(len(train_loader) / tc.accumulate)
    scheduler = build_scheduler(optimizer, steps_per_epoch * tc.epochs, config.optim)
    amp_dtype = autocast_dtype(device, tc.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    progress = Progress(zero_recall=[0] * meta.num_classes)
    if resuming:
        progress = restore(run_dir, model, optimizer, scheduler, scaler, meta)
        log_resume(run_dir, progress, tc.epochs)
    if dist_info.is_main:
        write_run_files(run_dir, config, argv)
    ddp_model = wrap_ddp(model, device, dist_info)  # after restore: DDP copies rank 0's weights
    writer = open_tensorboard(run_dir) if dist_info.is_main else None
    return TrainingRun(
        config=config, run_dir=run_dir, dist_info=dist_info, device=device,
        memory_format=memory_format, amp_dtype=amp_dtype, train_loader=train_loader,
        val_loader=val_loader, model=model, ddp_model=ddp_model, loss_fn=loss_fn,
        optimizer=optimizer, scheduler=scheduler, scaler=scaler, meta=meta, progress=progress,
        writer=writer,
    )


def log_resume(run_dir: Path, progress: Progress, epochs: int) -> None:
    """Say where a resumed run continues, or that it is complete and how to extend it."""
    if progress.epoch < epochs:
        log.info("resuming %s from epoch %d (step %d)", run_dir, progress.epoch, progress.step)
        return
    log.warning("run %s is complete: it has trained %d of train.epochs=%d epochs, nothing is "
                "left to train; to train longer, resume with more epochs: pixelwise train "
                "--resume %s train.epochs=%d", run_dir, progress.epoch, epochs, run_dir,
                progress.epoch + max(epochs, 1))


def describe_model(config: Config, info: DatasetInfo) -> ModelMeta:
    """The metadata of the model ``config`` trains on data described by ``info``: class count
    (``model.num_classes``, 0 takes the data's), ignore index, builder options, mean/std.

    A class count other than the data's raises ConfigError now, not an index error in the first
    loss.
    """
    data = config.data
    ignore_index = info.ignore_index if data.ignore_index is None else data.ignore_index
    num_classes = config.model.num_classes or info.num_classes
    if num_classes != info.num_classes:
        raise ConfigError(
            f"model.num_classes must equal the {data.dataset} data's class count "
            f"{info.num_classes} ({', '.join(info.classes)}) at {data.root or 'built-in'}, "
            f"got {num_classes}; try model.num_classes=0 (take it from the data)"
        )
    mean, std = normalisation(data, info)
    return ModelMeta(
        name=config.model.name, num_classes=num_classes,
        options={"in_channels": info.in_channels, **config.model.options},
        classes=list(info.classes), palette=[tuple(c) for c in info.palette],
        ignore_index=ignore_index, in_channels=info.in_channels, mean=mean, std=std,
        version=_version(),
    )


def build_model(meta: ModelMeta, init_from: str | None) -> nn.Module:
    """The model ``meta`` describes, freshly initialised or with the matching tensors of the
    checkpoint ``init_from`` (``model.init_from``) copied in."""
    from pixelwise.models import build

    model = build(meta.name, meta.num_classes, **meta.options)
    if init_from:
        from pixelwise.models import init_from as copy_matching

        source, _ = read_weights(init_from)
        try:
            copied = copy_matching(model, source)
        except CheckpointError as err:
            raise CheckpointError(f"model.init_from {init_from}: {err}") from None
        log.info("initialised %d tensors from %s", len(copied), init_from)
    return model


# ---- set-up helpers --------------------------------------------------------------------------


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

