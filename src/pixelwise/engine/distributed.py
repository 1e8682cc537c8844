"""torchrun helpers: one process per device, rank 0 alone writes files and prints.

Start a run with ``torchrun --nproc-per-node N -m pixelwise train CONFIG``; torchrun sets
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``, which :func:`init_from_env` reads. Without them
everything here degrades to a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from pixelwise.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes checkpoints, logs and progress bars."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


SINGLE_PROCESS = DistInfo()


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


def pick_device(name: str | torch.device, dist_info: DistInfo = SINGLE_PROCESS) -> torch.device:
    """The device ``name`` names: "auto" is CUDA when available, else the CPU; under torchrun
    "cuda" is this process's own GPU (``cuda:LOCAL_RANK``)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and dist_info.enabled:
        name = f"cuda:{dist_info.local_rank}"
    return torch.device(name)


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
