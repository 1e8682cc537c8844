"""The device a name stands for, alone and as one process of a torchrun job."""

from __future__ import annotations

import pytest
import torch

from pixelwise.device import SINGLE_PROCESS, DistInfo, check_device_name, pick_device
from pixelwise.errors import ConfigError


@pytest.fixture
def four_gpus(monkeypatch):
    """Pretend this machine has four CUDA GPUs (pick_device only asks torch.cuda)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_auto_is_cuda_when_available_else_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == expected


def test_under_torchrun_cuda_is_this_process_own_gpu(four_gpus):
    second_of_four = DistInfo(rank=3, local_rank=1, world_size=4)
    assert pick_device("cuda", second_of_four) == torch.device("cuda:1")


def test_an_explicit_device_is_kept(four_gpus):
    second_of_two = DistInfo(rank=1, local_rank=1, world_size=2)
    assert pick_device("cuda:2", second_of_two) == torch.device("cuda:2")
    assert pick_device("cpu", second_of_two) == torch.device("cpu")


def test_one_process_is_rank_zero_of_one_and_writes_files():
    assert (SINGLE_PROCESS.is_main, SINGLE_PROCESS.enabled) == (True, False)
    assert (DistInfo(rank=1, world_size=2).is_main, DistInfo(world_size=2).enabled) == (False, True)


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_says_what_exists_and_what_to_try(name, no_gpu):
    with pytest.raises(ConfigError) as err:
        pick_device(name, spelling="--device {value}")
    message = str(err.value)
    assert f"device {name!r} must be a GPU of this machine, got none" in message
    assert "devices here: cpu" in message and "try --device cpu" in message


def test_a_gpu_index_beyond_the_machine_names_the_gpus_there(four_gpus):
    with pytest.raises(ConfigError, match=r"'cuda:7' .* got 4 GPU\(s\); devices here: cpu, "
                                          r"cuda:0, cuda:1, cuda:2, cuda:3; try train.device=cuda:0"):
        pick_device("cuda:7", spelling="train.device={value}")


@pytest.mark.parametrize(("name", "hint"), [("gpu", "try train.device=cuda"),
                                            ("bogus", "try train.device=auto")])
def test_a_name_that_is_no_device_lists_the_names(name, hint):
    with pytest.raises(ConfigError, match=f"device must be one of auto, cpu, cuda, cuda:N, mps, "
                                          f"got {name!r}; {hint}"):
        check_device_name(name, "train.device={value}")
