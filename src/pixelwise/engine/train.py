"""The training program, readable top to bottom: :func:`run_epochs` is the whole loop.

:func:`set_up` (seed, data, model, loss, optimiser, schedule, run folder) builds one
:class:`TrainingRun` holding what the loop needs -> for each epoch: one pass over the shuffled
training set with gradient accumulation and mixed precision on CUDA (:func:`train_one_epoch`,
the forward pass in :func:`forward_loss`), then (every ``val_every`` epochs) validation with the
FCN paper's metrics, a CSV/TensorBoard row, ``last`` and ``best`` checkpoints and the
zero-recall warning; :func:`should_stop` decides whether to end early (early stopping, or a
spent ``train.time_budget`` / ``train.max_steps``, which also drives the schedule:
:mod:`pixelwise.engine.budget`).

Exact resume: a checkpoint is written at the end of an epoch (every epoch, or once
``train.checkpoint_interval`` has passed) with the model, optimiser, scheduler, RNG states and
counters. The training order of epoch ``e`` comes from a
``torch.Generator`` seeded with ``(seed, e)`` alone, so a resumed run sees the same batches,
and restoring the global RNG states reproduces random augmentation and dropout.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
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
from pixelwise.config import Config, duration_seconds, to_dict, to_yaml
from pixelwise.config import validate as check_config
from pixelwise.device import DistInfo, pick_device
from pixelwise.engine import checkpoint as ckpt
from pixelwise.engine import ema as averaging
from pixelwise.engine import precise_bn, precision
from pixelwise.engine.budget import Budget
from pixelwise.engine.data_setup import (
    batches_of,
    build_loader,
    class_weights_for,
    match_target,
    normalisation,
    open_split,
)
from pixelwise.engine.distributed import (
    broadcast_buffers,
    init_from_env,
    mean_over_ranks,
    shutdown,
)
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
    seconds: float = 0.0  # wall-clock seconds used up to the last checkpoint (budget accounting)
    precision: str = ""  # the forward pass's dtype (engine.precision.dtype_name); "": not chosen


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
    budget: Budget  # train.time_budget / train.max_steps: the fraction used, the stop
    writer: Any | None  # TensorBoard SummaryWriter on rank 0 when tensorboard is installed
    ema: nn.Module | None = None  # train.ema's averaged copy (engine.ema); None: off
    saved_at: float = 0.0  # budget.elapsed() when ``last`` was last written (or the loop began)
    warned_slow_save: bool = False  # the slow-checkpoint advice is logged once a run


def train(config: Config, resume: str | Path | None = None, argv: list[str] | None = None,
          clock: Callable[[], float] = time.perf_counter) -> dict:
    """Train as ``config`` says; return the last validation scores and where things were written.

    The result: ``run_dir``, ``epochs`` and ``step`` reached, ``seconds`` used (earlier sessions
    of a resumed run included), ``stopped_by`` (``epochs``, ``early_stop``, ``time_budget`` or
    ``max_steps``), ``best`` value of ``metric``, ``scores`` (the last validation's
    ``ConfusionMatrix.compute()``) and ``table`` (those scores as the printed FCN metrics table;
    empty when a resumed run had nothing left to do), ``classes``, and this process's torchrun
    ``rank`` (0 without torchrun). ``clock`` (seconds) times ``train.time_budget``; the budget
    starts now (:mod:`pixelwise.engine.budget`).

    ``resume`` is a run folder: training continues from its newest whole checkpoint (see
    :func:`pixelwise.engine.checkpoint.newest_whole`), possibly up to a larger
    ``config.train.epochs``. ``argv`` is recorded in ``run.json``. ``config`` itself is left
    unchanged.
    """
    check_config(config)  # a Config built in Python is checked as a loaded one is
    budget = Budget.from_config(config.train, clock)  # counts from here: set-up included
    if resume is not None:  # a resumed run keeps writing into its own folder
        config = replace(config, train=replace(config.train, out_dir=str(resume)))
    cuda = config.train.device != "cpu" and torch.cuda.is_available()
    dist_info = init_from_env(cuda)
    try:
        run = set_up(config, resume is not None, argv, dist_info, budget)
        try:
            scores = run_epochs(run)
        finally:  # also when training fails: the writer's thread and file must not outlive it
            if run.writer is not None:
                run.writer.close()
        result = summary(run, scores)
        if dist_info.is_main:
            record_result(run, result)
        return result
    finally:
        shutdown(dist_info)


# ---- the loop --------------------------------------------------------------------------------


def run_epochs(run: TrainingRun) -> dict[str, Any]:
    """Train from ``run.progress.epoch`` to ``train.epochs`` (or an early stop); return the last
    validation's scores ({} when no epoch was left). Under a budget, train until it is spent
    (``train.epochs`` is no limit), then validate and save at once, even mid-epoch."""
    tc, budget = run.config.train, run.budget
    scores: dict[str, Any] = {}
    budget.update(run.progress.step, run.dist_info)
    if budget.spent:
        log.info("the run's budget is already spent (%d steps, %.0f s); try a larger "
                 "train.time_budget or train.max_steps to extend it", run.progress.step,
                 run.progress.seconds)
        return scores
    if budget.seconds is not None:
        reserve_final_validation(run)
    run.saved_at = budget.elapsed()
    epochs = itertools.count(run.progress.epoch) if budget.enabled else range(
        run.progress.epoch, tc.epochs)
    for epoch in epochs:
        started = time.perf_counter()
        set_loader_epoch(run.train_loader, tc.seed, epoch)
        train_loss, images = train_one_epoch(run)
        run.progress.epoch = epoch + 1
        seconds = time.perf_counter() - started
        row = {"epoch": epoch + 1, "step": run.progress.step, "lr": run.scheduler.get_last_lr()[0],
               "train_loss": train_loss, "images_per_s": images / seconds, "seconds": seconds}
        last = budget.spent if budget.enabled else epoch + 1 == tc.epochs
        validated = (epoch + 1) % tc.val_every == 0 or last
        improved = False
        if validated:
            scores = validate_now(run)
            row.update({key: scores[key] for key in CSV_FIELDS if key in scores})
            improved = track_validation(scores, tc.metric, run.progress, run.meta.classes,
                                        tc.zero_recall_warn_after)
        if run.dist_info.is_main:
            log_epoch(run, row, scores[tc.metric] if validated else None)
        stop = should_stop(run, validated)
        if run.dist_info.is_main:
            save_epoch(run, row, improved, checkpoint=last or stop or checkpoint_due(run))
        if stop:
            break
    return scores


def train_one_epoch(run: TrainingRun) -> tuple[float, int]:
    """One pass over the training loader, epoch ``run.progress.epoch`` (0-based, not yet counted
    as done); returns (mean finite loss, images seen)."""
    run.ddp_model.train()
    run.optimizer.zero_grad(set_to_none=True)
    with batches_of(run.train_loader) as batches:
        return _epoch_steps(run, batches)


def _epoch_steps(run: TrainingRun, batches: Iterator) -> tuple[float, int]:
    """The steps of `train_one_epoch` over ``batches`` of ``run.train_loader``."""
    tc, loader = run.config.train, run.train_loader
    total_loss, counted, images = 0.0, 0, 0
    started = time.perf_counter()
    bar = tqdm(batches, desc=f"epoch {epoch_label(run, run.progress.epoch + 1)}", unit="batch",
               total=len(loader), leave=False, disable=not (tc.progress and run.dist_info.is_main),
               dynamic_ncols=True)
    for index, (image, target) in enumerate(bar):
        image = image.to(run.device, non_blocking=True, memory_format=run.memory_format)
        target = target.to(run.device, non_blocking=True)
        loss = forward_loss(run, image, target)
        # The one host-device sync of the step. Under torchrun the mean over ranks: a NaN on one
        # rank is then seen by all, which stop (or skip the batch) together.
        value = mean_over_ranks(loss, run.dist_info)
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
        if run.budget.spent:  # the same step on every rank: the fraction is rank 0's
            break
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
    run.progress.step += 1
    run.budget.update(run.progress.step, run.dist_info)  # before the schedule reads it
    run.scheduler.step()
    averaging.update(run.ema, run.model)


def published(run: TrainingRun) -> nn.Module:
    """The model the run validates, saves as ``last``/``best`` and so exports: the weights'
    moving average under ``train.ema``, else the trained weights themselves."""
    return run.ema.module if run.ema is not None else run.model


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


def validate_now(run: TrainingRun, loader: Iterable | None = None) -> dict[str, Any]:
    """The FCN metrics over the whole validation set (all ranks together under torchrun), or
    over ``loader``, part of it. Under a time budget, its duration becomes the reserve kept for
    the final validation.

    In a short run the batch-norm running statistics have not settled yet; before a full
    validation they are recomputed over training batches (``train.precise_bn``,
    :mod:`pixelwise.engine.precise_bn`)."""
    updates = run.progress.step * run.config.train.accumulate
    model = published(run)
    if loader is None and precise_bn.needs_recompute(run.config.train.precise_bn, model,
                                                     updates):
        used = precise_bn.recompute_statistics(model, run.train_loader, run.device,
                                               run.memory_format)
        if run.progress.epoch <= run.config.train.val_every:  # said once, at the first validation
            why = ("train.precise_bn=always" if run.config.train.precise_bn == "always" else
                   f"while fewer than {precise_bn.settled_after(model)} batches are trained, "
                   f"{updates} so far")
            log.info("recomputing batch-norm statistics over %d training batches before each "
                     "validation (%s); train.precise_bn=never turns this off", used, why)
    broadcast_buffers(model, run.dist_info)  # every rank validates rank 0's BN statistics
    started = run.budget.clock()
    scores = validate(model, run.val_loader if loader is None else loader,
                      run.meta.num_classes, run.meta.ignore_index, run.device,
                      run.memory_format, run.dist_info, progress=run.config.train.progress)
    run.budget.reserve = run.budget.clock() - started
    return scores


def reserve_final_validation(run: TrainingRun) -> None:
    """Time one validation batch and keep that times the batch count in reserve, so that the
    final validation also fits in ``train.time_budget``. The global RNG is left as it was (a
    loader draws a seed from it), so a resumed run still repeats the uninterrupted one."""
    with torch.random.fork_rng(devices=[]):
        validate_now(run, itertools.islice(run.val_loader, 1))
    run.budget.reserve *= len(run.val_loader)
    log.info("time budget %.0f s: %.1f s kept for the final validation",
             run.budget.seconds, run.budget.reserve)


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
    log.info("epoch %s: loss %.4f%s (%.1f s, %.1f images/s)", epoch_label(run, row["epoch"]),
             row["train_loss"], scored, row["seconds"], row["images_per_s"])


def epoch_label(run: TrainingRun, epoch: int) -> str:
    """``3/10``, or under a budget ``3 (42% of the budget)``."""
    if run.budget.enabled:
        return f"{epoch} ({100 * min(run.budget.used, 1.0):.0f}% of the budget)"
    return f"{epoch}/{run.config.train.epochs}"


def checkpoint_due(run: TrainingRun) -> bool:
    """Whether this epoch's end writes ``last``: always, unless ``train.checkpoint_interval`` is
    set and less than that has passed since the last one (a run of short epochs would otherwise
    spend much of its time writing the optimiser's state)."""
    interval = duration_seconds(run.config.train.checkpoint_interval,
                                "train.checkpoint_interval", "every epoch")
    return interval is None or run.budget.elapsed() - run.saved_at >= interval


def save_epoch(run: TrainingRun, row: dict[str, Any], improved: bool,
               checkpoint: bool = True) -> None:
    """Rank 0's files for the epoch: a ``metrics.csv`` and TensorBoard row (and, when validated,
    ``training_curves.png`` unless ``train.figures`` is off), the ``last`` checkpoint pair
    (rotating the one before to ``previous``) when ``checkpoint``, and, when improved, ``best``."""
    append_csv(run.run_dir / "metrics.csv", row)
    if "mean_iou" in row and run.config.train.figures:  # validated: redraw beside metrics.csv
        from pixelwise.plots import training_curves_png

        training_curves_png(run.run_dir / "metrics.csv", run.run_dir / "training_curves.png")
    log_tensorboard(run.writer, row)
    meta = run.meta
    meta.epoch, meta.step = run.progress.epoch, run.progress.step
    meta.metrics = {key: row[key] for key in CSV_FIELDS[6:] if key in row}
    run.progress.seconds = run.budget.elapsed()
    if checkpoint:
        started = time.perf_counter()
        ckpt.save_last(run.run_dir, published(run), meta, training_state(
            run.optimizer, run.scheduler, run.scaler, run.progress, run.model, run.ema))
        run.saved_at = run.progress.seconds
        advise_on_slow_save(run, time.perf_counter() - started, row["seconds"])
    if improved:
        save_weights(run.run_dir / "best.safetensors", published(run), meta)


def advise_on_slow_save(run: TrainingRun, save_seconds: float, epoch_seconds: float) -> None:
    """Log once when writing ``last`` every epoch costs over a tenth of the epoch (and over half a
    second): short epochs of a large model, where ``train.checkpoint_interval`` buys steps."""
    if (run.warned_slow_save or run.config.train.checkpoint_interval is not None
            or save_seconds < max(0.5, 0.1 * epoch_seconds)):
        return
    run.warned_slow_save = True
    log.warning("writing the last checkpoint took %.1f s, %.0f%% of the epoch's %.1f s; "
                "train.checkpoint_interval=2m writes it at most every 2 minutes (and after the "
                "final epoch)", save_seconds, 100 * save_seconds / epoch_seconds, epoch_seconds)


def should_stop(run: TrainingRun, validated: bool) -> bool:
    """Whether to end before ``train.epochs``, checked after every epoch: the budget is spent,
    or early stopping, after ``train.early_stop_patience`` validations without improving
    ``train.metric``."""
    tc = run.config.train
    if run.budget.spent:
        log.info("budget spent: %s after %d steps, %.0f s", run.budget.stopped_by(
            run.progress.step), run.progress.step, run.budget.elapsed())
        return True
    if validated and tc.early_stop_patience and run.progress.stale >= tc.early_stop_patience:
        log.warning("early stop: %s has not improved for %d validations",
                    tc.metric, run.progress.stale)
        return True
    return False


def summary(run: TrainingRun, scores: dict[str, Any]) -> dict:
    """What :func:`train` returns (see there)."""
    from pixelwise.metrics import format_table

    classes = run.meta.classes
    stopped_by = run.budget.stopped_by(run.progress.step) or (
        "epochs" if run.progress.epoch >= run.config.train.epochs else "early_stop")
    return {"run_dir": str(run.run_dir), "epochs": run.progress.epoch, "step": run.progress.step,
            "seconds": run.budget.elapsed(), "stopped_by": stopped_by,
            "best": run.progress.best, "metric": run.config.train.metric, "scores": scores,
            "table": format_table(scores, classes) if scores else "", "classes": list(classes),
            "rank": run.dist_info.rank}


# ---- set-up ----------------------------------------------------------------------------------


def set_up(config: Config, resuming: bool, argv: list[str] | None,
           dist_info: DistInfo, budget: Budget) -> TrainingRun:
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

    train_set = open_split(config.data, config.data.train_split, train=True, dist_info=dist_info)
    val_set = open_split(config.data, config.data.val_split, train=False, dist_info=dist_info)
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
    loss_fn = build_loss(config.optim.loss, meta.num_classes, meta.ignore_index, weights,
                         **config.optim.loss_options)
    loss_fn = loss_fn.to(device)
    optimizer = build_optimizer(model, config.optim)
    steps_per_epoch = math.ceil(len(train_loader) / tc.accumulate)
    scheduler = build_scheduler(optimizer, steps_per_epoch * tc.epochs, config.optim,
                                (lambda: budget.used) if budget.enabled else None)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.uses_grad_scaler(device, tc.amp))

    ema = averaging.build_ema(model, tc.ema)
    progress = Progress(zero_recall=[0] * meta.num_classes)
    if resuming:
        progress = restore(run_dir, model, optimizer, scheduler, scaler, meta, ema)
        log_resume(run_dir, progress, tc.epochs if not (tc.time_budget or tc.max_steps) else None)
        budget.spent_before = progress.seconds
    amp_dtype = precision.autocast_dtype(
        device, tc.amp, recorded=progress.precision, dist_info=dist_info,
        measure=lambda: precision.bf16_training_pays(
            model, example_batch(train_set, config.data.batch_size, device, memory_format)))
    progress.precision = precision.dtype_name(amp_dtype)
    if dist_info.is_main:
        write_run_files(run_dir, config, argv)
    ddp_model = wrap_ddp(model, device, dist_info)  # after restore: DDP copies rank 0's weights
    writer = open_tensorboard(run_dir) if dist_info.is_main else None
    return TrainingRun(
        config=config, run_dir=run_dir, dist_info=dist_info, device=device,
        memory_format=memory_format, amp_dtype=amp_dtype, train_loader=train_loader,
        val_loader=val_loader, model=model, ddp_model=ddp_model, loss_fn=loss_fn,
        optimizer=optimizer, scheduler=scheduler, scaler=scaler, meta=meta, progress=progress,
        budget=budget, writer=writer, ema=ema,
    )


def log_resume(run_dir: Path, progress: Progress, epochs: int | None) -> None:
    """Say where a resumed run continues, or that it is complete and how to extend it
    (``epochs`` None: a time or step budget decides, which says so itself)."""
    if epochs is None or progress.epoch < epochs:
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
        background=info.background,
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


def example_batch(dataset, batch_size: int, device: torch.device,
                  memory_format: torch.memory_format) -> torch.Tensor:
    """Random values shaped like one training batch (``batch_size`` times the shape of training
    sample 0 as augmented: the crop) in the model's layout, for timing the model at the size it
    trains at. The random states are restored and the values come from a generator of their
    own, so the training that follows draws what it would have."""
    saved = ckpt.rng_state()
    try:
        image, _ = dataset[0]
    finally:
        ckpt.set_rng_state(saved)
    values = torch.randn(batch_size, *image.shape, generator=torch.Generator().manual_seed(0))
    return values.to(device, memory_format=memory_format)


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


def training_state(optimizer, scheduler, scaler, progress: Progress, model: nn.Module,
                   ema: nn.Module | None) -> dict[str, Any]:
    """Everything besides the published weights that an exact resume needs (weights-only
    loadable): under ``train.ema`` the published weights are the average, so the trained ones
    (``trained``) and the average's update count come along."""
    averaged = {} if ema is None else {"trained": model.state_dict(),
                                       "ema_updates": averaging.updates(ema)}
    return averaged | {
        "epoch": progress.epoch, "step": progress.step, "best": progress.best,
        "stale": progress.stale, "zero_recall": list(progress.zero_recall),
        "seconds": progress.seconds, "precision": progress.precision,
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(), "rng": ckpt.rng_state(),
    }


def restore(run_dir: Path, model, optimizer, scheduler, scaler, meta: ModelMeta,
            ema: nn.Module | None = None) -> Progress:
    """Load the newest whole checkpoint of ``run_dir`` into the objects; return the counters.

    ``meta`` describes the model and classes of this configuration; a checkpoint of another
    model, options or class list raises CheckpointError naming what differs.
    """
    found = ckpt.newest_whole(run_dir)
    ckpt.check_same_model(found.meta, meta, found.stem.with_suffix(".safetensors"))
    state = found.state
    restore_weights(model, ema, found.weights, state, found.stem)
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
                    list(state["zero_recall"]), state.get("seconds", 0.0),
                    state.get("precision", ""))


def restore_weights(model: nn.Module, ema: nn.Module | None, weights: dict[str, torch.Tensor],
                    state: dict[str, Any], stem: Path) -> None:
    """Load a checkpoint pair's weights: ``stem.safetensors`` holds the published ones (the
    average under ``train.ema``, whose trained weights are in the state); a run resumed with
    ``train.ema`` on where it was off, or off where it was on, raises CheckpointError."""
    averaged = "trained" in state
    if averaged != (ema is not None):
        raise CheckpointError(
            f"checkpoint {stem}.safetensors must be resumed as it was trained, got train.ema "
            f"{'off' if averaged else 'on'} for a run that {'averaged' if averaged else 'did not average'} "
            "its weights; try resuming with the run's own config.yaml"
        )
    if ema is None:
        load_state_into(model, weights, stem.with_suffix(".safetensors"))
        return
    load_state_into(ema.module, weights, stem.with_suffix(".safetensors"))
    load_state_into(model, state["trained"], stem.with_suffix(".state.pt"))
    averaging.set_updates(ema, state["ema_updates"])


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


def record_result(run: TrainingRun, result: dict[str, Any]) -> None:
    """Add how far the run got to ``run.json``: steps, epochs, seconds, why it stopped, and
    the budget it had."""
    path = run.run_dir / "run.json"
    record = json.loads(path.read_text())
    record["result"] = {key: result[key] for key in ("step", "epochs", "seconds", "stopped_by")}
    record["result"].update(time_budget=run.config.train.time_budget,
                            time_budget_seconds=run.budget.seconds,
                            max_steps=run.config.train.max_steps)
    ckpt.atomic_write_bytes(path, json.dumps(record, indent=2).encode())


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

