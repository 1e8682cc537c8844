"""From a :class:`~pixelwise.config.DataConfig` to datasets, loaders, normalisation and weights.

Kept apart from the loop so ``train.py`` reads as the loop and ``evaluate`` can share it.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from pixelwise.config import CLASS_WEIGHTINGS, DataConfig
from pixelwise.data.info import DatasetInfo
from pixelwise.device import SINGLE_PROCESS, DistInfo
from pixelwise.engine.distributed import shard_sampler, shard_without_padding
from pixelwise.errors import ConfigError

logger = logging.getLogger(__name__)


def normalisation(config: DataConfig, info: DatasetInfo) -> tuple[list[float], list[float]]:
    """The per-channel mean/std to normalise with: the config's, else the dataset kind's
    recommended ones (``pixelwise.data.transforms.RECOMMENDED``).

    Stored in every checkpoint so that prediction normalises exactly as training did.
    """
    from pixelwise.data.transforms import RECOMMENDED

    if config.mean is not None:
        mean, std = list(config.mean), list(config.std)
    else:
        mean, std = list(RECOMMENDED[config.dataset]["mean"]), list(RECOMMENDED[config.dataset]["std"])
    if len(mean) != info.in_channels or len(std) != info.in_channels:
        raise ConfigError(
            f"data.mean and data.std must have one value per image channel ({info.in_channels}), "
            f"got {len(mean)} and {len(std)}; try data.mean=[...] data.std=[...] with "
            f"{info.in_channels} values each"
        )
    return mean, std


def open_split(config: DataConfig, split: str, train: bool,
               dist_info: DistInfo = SINGLE_PROCESS) -> Dataset:
    """The dataset split with the training augmentation (the kind's recommended settings,
    overridden by ``data.crop_size`` and ``data.augment``) or the evaluation preset, read into
    memory now with ``data.cache`` (``dist_info``: how many processes keep a copy)."""
    from pixelwise.data import open_dataset
    from pixelwise.data.info import class_ids_of
    from pixelwise.data.transforms import RECOMMENDED, eval_preset, train_preset

    dataset = open_dataset(config.dataset, config.root, split, **config.options)
    mean, std = normalisation(config, dataset.info)
    if train:
        options = {**RECOMMENDED[config.dataset], **config.augment, "mean": mean, "std": std}
        if config.crop_size is not None:
            crop = config.crop_size
            options["crop_size"] = crop if isinstance(crop, int) else tuple(crop)
        for key in ("focus_classes", "paste_classes"):  # names or ids in the config, ids here
            if options.get(key):
                options[key] = class_ids_of(f"data.augment.{key}", options[key],
                                            dataset.info.classes)
        # data.augment's keys are checked with the config (pixelwise.config.check_names).
        transforms = train_preset(ignore_index=dataset.info.ignore_index, **options)
    else:
        transforms = eval_preset(mean=mean, std=std)
    dataset.transforms = transforms  # every dataset applies ``.transforms`` last, per item
    if config.cache:
        keep_in_memory(dataset, split, dist_info.world_size)
    return dataset


def keep_in_memory(dataset: Dataset, split: str, copies: int) -> None:
    """``data.cache``: every pair of the split read now and kept in memory
    (:meth:`~pixelwise.data.datasets.FileDataset.keep_in_memory`; generated datasets have no
    files to skip). Refused first, with nothing read but one pair, when ``copies`` of the split
    (one per torchrun process; DataLoader workers share their process's), estimated from the
    first pair, would take more than half the memory available now."""
    from pixelwise.data.datasets import FileDataset

    if not isinstance(dataset, FileDataset) or not len(dataset):
        return
    start = time.perf_counter()
    image, mask = dataset.read_pair(0)
    need = len(dataset) * (image.nbytes + 2 * mask.numel()) * copies
    free = available_memory()
    if free is not None and need > free / 2:
        raise ConfigError(
            f"data.cache would keep about {need / 2**30:.1f} GiB of the {split!r} split in "
            f"memory ({len(dataset)} pairs of {tuple(image.shape)} like "
            f"{dataset.samples[0].image}, kept by {copies} process(es)), more than half the "
            f"{free / 2**30:.1f} GiB available; try data.cache=false or a smaller "
            "data.options.scale"
        )
    dataset.keep_in_memory()
    logger.info("data.cache: the %d %r pairs read into memory (about %.2f GiB, %.1f s)",
                len(dataset), split, need / copies / 2**30, time.perf_counter() - start)


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``; elsewhere the
    free pages), or None where neither can be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def build_loader(dataset: Dataset, config: DataConfig, dist_info: DistInfo, train: bool,
                 seed: int) -> DataLoader:
    """Training loaders shuffle with their own ``torch.Generator`` (reseeded every epoch by the
    loop) or, under torchrun, a ``DistributedSampler``; evaluation loaders keep file order.

    Under torchrun each rank evaluates every ``world_size``-th image (no padding), so the
    all-reduced confusion matrix counts each validation image exactly once. A training
    augmentation with a batch-level step (``data.augment.paste_classes``) collates the batches.
    """
    sampler = None
    if dist_info.enabled and train:
        sampler = shard_sampler(dataset, dist_info, shuffle=True, seed=seed)
    elif dist_info.enabled:
        dataset = shard_without_padding(dataset, dist_info)
    generator = torch.Generator().manual_seed(seed) if train and sampler is None else None
    collate = getattr(getattr(dataset, "transforms", None), "collate", None) if train else None
    return DataLoader(
        dataset,
        batch_size=config.batch_size if train else config.val_batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        generator=generator,
        num_workers=loader_workers(config.workers, dist_info),
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        drop_last=train and len(dataset) > config.batch_size,
        collate_fn=collate,
    )


@contextmanager
def batches_of(loader: Iterable) -> Iterator[Iterator]:
    """Iterate ``loader``; its worker processes stop when the loop ends, however it ends.

    Left to itself, an iterator that a failure leaves in a reference cycle (the exception's
    traceback holds its frames) is freed by the garbage collector, which closes its queues
    before the iterator's own shutdown runs: the workers never receive the stop signal and
    the shutdown waits out a 5 s join timeout per worker (torch 2.14) at some later moment.
    """
    iterator = iter(loader)
    try:
        yield iterator
    finally:
        stop = getattr(iterator, "_shutdown_workers", None)  # torch offers no public close
        if stop is not None:
            stop()


def loader_workers(workers: int | str, dist_info: DistInfo) -> int:
    """``data.workers`` as a number: ``"auto"`` is the CPU cores this process may use (its
    share under torchrun), less one for the training loop itself, at most 8."""
    if workers != "auto":
        return int(workers)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(8, (cores or 1) // dist_info.world_size - 1))


def class_weights_for(config: DataConfig, num_classes: int,
                      train_set: Dataset) -> list[float] | None:
    """``data.class_weights`` resolved: None, an explicit list, ``"auto"`` (median frequency
    balancing, Eigen & Fergus 2015, with SegNet's per-image denominator, counted over the
    un-augmented training masks: the same weights ``pixelwise data check`` prints) or
    ``"sqrt"``, their square roots: a softer balance that lifts the rare classes without
    giving up the frequent ones (CamVid train: ``auto`` weighs Bicyclist 59x Road, ``sqrt`` 8x).

    ``train_set`` is the training split already opened (its transforms are not applied here).
    """
    weights: Any = config.class_weights
    if weights is None:
        return None
    if weights in CLASS_WEIGHTINGS:
        from pixelwise.data.checks import check_dataset

        plain = copy.copy(train_set)  # the same samples, without the augmentation
        plain.transforms = None
        median = check_dataset(plain, progress=False).class_weights[:num_classes]
        return median if weights == "auto" else [math.sqrt(w) for w in median]
    if len(weights) != num_classes:
        raise ConfigError(
            f"data.class_weights must have one weight per class ({num_classes}), got "
            f"{len(weights)}; try data.class_weights=auto"
        )
    return [float(w) for w in weights]


def match_target(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The centre of ``target (N, H, W)`` matching ``logits (N, K, H', W')``.

    Only a model whose geometry has a border (the U-Net with ``padding="valid"``, U-Net §2,
    Fig. 2) predicts a smaller centre; for every other model the shapes already agree and the
    target is returned unchanged.
    """
    if target.shape[-2:] == logits.shape[-2:]:
        return target
    from pixelwise.models.layers import centre_crop

    return centre_crop(target, logits.shape[-2], logits.shape[-1])
