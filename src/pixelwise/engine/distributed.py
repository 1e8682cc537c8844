"""torchrun helpers: one process per device, rank 0 alone writes files and prints.

Start a run with ``torchrun --nproc-per-node N -m pixelwise train CONFIG``; torchrun sets
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``, which :func:`init_from_env` reads. Without them
everything here degrades to a single process. The device choice and ``DistInfo`` itself live in
:mod:`pixelwise.device`, which prediction shares.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from pixelwise.device import SINGLE_PROCESS, DistInfo
from pixelwise.errors import ConfigError


def init_from_env(cuda: bool) -> DistInfo:
    """Join the process group torchrun describes, if any: NCCL with one GPU per process when
    ``cuda``, else gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE_PROCESS
    info = DistInfo(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world_size)
    if cuda and info.local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"torchrun processes per node must not outnumber the GPUs "
            f"({torch.cuda.device_count()}), got local rank {info.local_rank}; try "
            "--nproc-per-node with the GPU count, or train.device=cpu"
        )
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return info


def shard_sampler(dataset: Dataset, info: DistInfo, shuffle: bool, seed: int) -> DistributedSampler:
    """Each rank's share of ``dataset`` for training; call ``set_epoch`` every epoch to reshuffle.

    (DistributedSampler pads the last shard with repeated items: fine for training, not for
    evaluation, which the loaders shard without padding.)"""
    return DistributedSampler(
        dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed
    )


def broadcast_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every rank.

    Each rank updates its running statistics with its own batches, so before validation all
    ranks take rank 0's, the ones rank 0 saves in the checkpoint.
    """
    if info.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
