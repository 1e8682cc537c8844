"""torchrun helpers: one process per device, rank 0 alone writes files and prints.

Start a job with ``torchrun --nproc-per-node N -m pixelwise train|evaluate|predict ...``;
torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``, which :func:`init_from_env` reads.
Without them everything here degrades to a single process. The device choice and ``DistInfo``
itself live in :mod:`pixelwise.device`, which prediction shares.

A rank that fails alone must not leave the others waiting in a collective until its timeout:
:func:`fail_together` and :func:`mean_over_ranks` let every rank see a failure at the same step.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, Subset

from pixelwise.device import SINGLE_PROCESS, DistInfo
from pixelwise.errors import ConfigError, PixelwiseError


class RankFailedError(PixelwiseError):
    """Another torchrun process failed; this one stops with it (the message quotes why)."""


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


@contextmanager
def process_group(cuda: bool) -> Iterator[DistInfo]:
    """:func:`init_from_env` for the length of one job (evaluate, predict); a process group the
    caller had already joined is left as it was."""
    joined_before = dist.is_available() and dist.is_initialized()
    info = init_from_env(cuda)
    try:
        yield info
    finally:
        if not joined_before:
            shutdown(info)


def shard_sampler(dataset: Dataset, info: DistInfo, shuffle: bool, seed: int) -> DistributedSampler:
    """Each rank's share of ``dataset`` for training; call ``set_epoch`` every epoch to reshuffle.

    (DistributedSampler pads the last shard with repeated items: fine for training, not for
    evaluation, which the loaders shard without padding.)"""
    return DistributedSampler(
        dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed
    )


def shard_without_padding(dataset: Dataset, info: DistInfo) -> Dataset:
    """Rank ``r``'s share for evaluation: items ``r, r + world, r + 2 world, ...``, nothing
    repeated, so that counts summed over ranks count every item exactly once."""
    if not info.enabled:
        return dataset
    return Subset(dataset, range(info.rank, len(dataset), info.world_size))


def broadcast_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every rank.

    Each rank updates its running statistics with its own batches, so before validation all
    ranks take rank 0's, the ones rank 0 saves in the checkpoint.
    """
    if info.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def broadcast_from_main(value: float, info: DistInfo) -> float:
    """Rank 0's ``value`` on every rank (``value`` itself without torchrun)."""
    if not info.enabled:
        return value
    device = (torch.device("cuda", torch.cuda.current_device())
              if dist.get_backend() == "nccl" else torch.device("cpu"))
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def _collective(values: list[float]) -> torch.Tensor:
    """A float64 tensor on the device the process group's backend reduces on."""
    device = torch.device("cuda", torch.cuda.current_device()) \
        if dist.get_backend() == "nccl" else torch.device("cpu")
    return torch.tensor(values, dtype=torch.float64, device=device)


def reduce_over_ranks(value: float, info: DistInfo, op: str = "sum") -> float:
    """``value`` summed (``op="sum"``) or maximised (``"max"``) over all ranks; ``value`` itself
    in one process."""
    if not info.enabled:
        return value
    tensor = _collective([value])
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor.item()


def same_on_every_rank(value: int, info: DistInfo) -> bool:
    """Whether every rank has the same ``value`` (an integer below 2**52, e.g. a digest's first
    12 hex digits)."""
    return reduce_over_ranks(value, info, op="max") == -reduce_over_ranks(-value, info, op="max")


def mean_over_ranks(value: torch.Tensor, info: DistInfo) -> float:
    """The mean of a scalar tensor over all ranks: NaN or inf as soon as one rank's is, so that a
    training loss diverging on one rank stops (or skips the batch on) every rank at the same
    step, instead of the others waiting in DDP's next gradient all-reduce."""
    if not info.enabled:
        return value.item()
    total = value.detach().to(torch.float64).reshape(1).clone()
    dist.all_reduce(total)
    return total.item() / info.world_size


def fail_together(error: PixelwiseError | None, info: DistInfo) -> None:
    """Raise on every rank when any rank has an ``error``; every rank calls this at the same
    point of its loop (one small all-reduce when nothing failed).

    The failing rank raises its own error; the others raise :class:`RankFailedError` quoting the
    first failing rank's message, so that each rank's one-line error says what went wrong."""
    if not info.enabled:
        if error is not None:
            raise error
        return
    flag = _collective([0.0 if error is None else 1.0])
    dist.all_reduce(flag)
    if flag.item() == 0:
        return
    messages: list[str | None] = [None] * info.world_size
    dist.all_gather_object(messages, None if error is None else str(error))
    if error is not None:
        raise error
    rank, message = next((r, m) for r, m in enumerate(messages) if m is not None)
    raise RankFailedError(f"rank {info.rank} stopped because rank {rank} failed: {message}")
