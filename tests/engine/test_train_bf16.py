"""Training under bf16 autocast on the CPU (`train.amp`): chosen only where it pays, forced with
"bf16", and a bf16 run tracks fp32's loss and metrics."""

from __future__ import annotations

import csv
import time

import pytest
import torch
from torch import nn

from pixelwise.config import load_config
from pixelwise.engine import precision
from pixelwise.engine import train as train_module
from pixelwise.engine.checkpoint import read_state
from pixelwise.engine.precision import autocast_dtype, bf16_training_pays
from pixelwise.engine.train import train
from pixelwise.errors import ConfigError

CPU = torch.device("cpu")
# 16 images of 32x32 in batches of 4 for 3 epochs: 12 SGD steps, about 2 s each way here
SMALL_RUN = ["data.options.n=16", "train.epochs=3"]
FORWARD_LOSS = train_module.forward_loss


def run(tiny_config, out, amp: str, monkeypatch,
        extra: list[str] = ()) -> tuple[list[float], dict, set]:
    """Train the small run with ``train.amp=amp``; the epochs' train losses, the last
    validation scores, and the autocast dtypes the training steps ran under."""
    dtypes = set()

    def recording(run, image, target):
        dtypes.add(run.amp_dtype)
        return FORWARD_LOSS(run, image, target)

    monkeypatch.setattr(train_module, "forward_loss", recording)
    config = load_config(tiny_config, [*SMALL_RUN, f"train.amp={amp}", f"train.out_dir={out}", *extra])
    result = train(config)
    losses = [float(row["train_loss"]) for row in csv.DictReader((out / "metrics.csv").open())]
    return losses, result["scores"], dtypes


@pytest.mark.heavy
def test_bf16_training_on_cpu_tracks_fp32(tiny_config, tmp_path, monkeypatch):
    fp32_losses, fp32, fp32_dtypes = run(tiny_config, tmp_path / "fp32", "false", monkeypatch)
    bf16_losses, bf16, bf16_dtypes = run(tiny_config, tmp_path / "bf16", "bf16", monkeypatch)
    assert fp32_dtypes == {None} and bf16_dtypes == {torch.bfloat16}
    # bf16 keeps 8 bits of mantissa: the losses agree to a few per cent, epoch by epoch
    for low, full in zip(bf16_losses, fp32_losses, strict=True):
        assert low == pytest.approx(full, rel=0.05)
    assert bf16["pixel_accuracy"] == pytest.approx(fp32["pixel_accuracy"], abs=0.03)
    assert bf16["mean_iou"] == pytest.approx(fp32["mean_iou"], abs=0.03)


def never(*_args) -> bool:
    raise AssertionError("measured although the answer was known")


def test_amp_on_a_cpu_without_bf16_units_stays_fp32_unmeasured(monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda device_type: False)
    assert autocast_dtype(CPU, True, measure=never) is None


@pytest.mark.parametrize("faster", [True, False])
def test_amp_on_a_cpu_with_bf16_units_follows_the_measurement(monkeypatch, faster):
    monkeypatch.setattr(precision, "bf16_supported", lambda device_type: True)
    assert autocast_dtype(CPU, True, measure=lambda: faster) == (
        torch.bfloat16 if faster else None)


def test_a_resumed_run_keeps_its_recorded_precision_unmeasured(monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda device_type: True)
    assert autocast_dtype(CPU, True, measure=never, recorded="bfloat16") == torch.bfloat16
    assert autocast_dtype(CPU, True, measure=never, recorded="float32") is None


def test_amp_bf16_forces_bf16_and_false_turns_autocast_off():
    assert autocast_dtype(CPU, "bf16", measure=never) == torch.bfloat16
    assert autocast_dtype(CPU, False, measure=never) is None


class Sleeper(nn.Module):
    """A batch-norm model whose step takes 30 ms longer in one precision than the other."""

    def __init__(self, slow_in_bf16: bool):
        super().__init__()
        self.conv, self.norm, self.slow_in_bf16 = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), slow_in_bf16

    def forward(self, x):
        if torch.is_autocast_enabled("cpu") == self.slow_in_bf16:
            time.sleep(0.03)
        return nn.functional.dropout(self.norm(self.conv(x)), 0.5)


@pytest.mark.parametrize("slow_in_bf16", [True, False])
def test_bf16_training_pays_times_the_model_itself_and_leaves_it_and_the_rng_alone(slow_in_bf16):
    model = Sleeper(slow_in_bf16).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    pays = bf16_training_pays(model, torch.zeros(2, 3, 16, 16))
    assert pays is (not slow_in_bf16)
    assert torch.equal(torch.rand(3), expected)  # the dropout draws were undone
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # BN stats too
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_a_run_records_its_precision_and_resumes_in_it_without_measuring(tiny_config, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda device_type: True)
    shapes = []

    def measured_faster(model, example):
        shapes.append(tuple(example.shape))
        return True

    monkeypatch.setattr(precision, "bf16_training_pays", measured_faster)
    out = tmp_path / "run"
    _, _, dtypes = run(tiny_config, out, "true", monkeypatch, ["train.epochs=1"])
    assert dtypes == {torch.bfloat16} and shapes == [(4, 3, 32, 32)]  # a training batch's shape
    assert read_state(out / "last.state.pt")["precision"] == "bfloat16"
    monkeypatch.setattr(precision, "bf16_training_pays", never)
    dtypes.clear()
    config = load_config(out / "config.yaml", ["train.epochs=2"])
    train(config, resume=out)
    assert read_state(out / "last.state.pt")["epoch"] == 2 and dtypes == {torch.bfloat16}


def test_amp_accepts_true_false_and_bf16_only(tiny_config):
    assert load_config(tiny_config, ["train.amp=bf16"]).train.amp == "bf16"
    assert load_config(tiny_config, ["train.amp=false"]).train.amp is False
    with pytest.raises(ConfigError, match="train.amp must be true, false or 'bf16', got 'fp16'"):
        load_config(tiny_config, ["train.amp=fp16"])
