"""The device a name stands for, alone and as one process of a torchrun job."""

from __future__ import annotations

import torch

from pixelwise.device import SINGLE_PROCESS, DistInfo, pick_device


def test_auto_is_cuda_when_available_else_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == expected


def test_under_torchrun_cuda_is_this_process_own_gpu():
    second_of_four = DistInfo(rank=3, local_rank=1, world_size=4)
    assert pick_device("cuda", second_of_four) == torch.device("cuda:1")


def test_an_explicit_device_is_kept():
    second_of_two = DistInfo(rank=1, local_rank=1, world_size=2)
    assert pick_device("cuda:2", second_of_two) == torch.device("cuda:2")
    assert pick_device("cpu", second_of_two) == torch.device("cpu")


def test_one_process_is_rank_zero_of_one_and_writes_files():
    assert (SINGLE_PROCESS.is_main, SINGLE_PROCESS.enabled) == (True, False)
    assert (DistInfo(rank=1, world_size=2).is_main, DistInfo(world_size=2).enabled) == (False, True)
