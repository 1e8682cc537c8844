"""The moving average of the weights (`train.ema`, pixelwise.engine.ema)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pixelwise.checkpoint import read_weights
from pixelwise.cli import main
from pixelwise.config import load_config
from pixelwise.engine import ema as averaging
from pixelwise.engine import train as train_module
from pixelwise.engine.checkpoint import read_state
from pixelwise.errors import CheckpointError, ConfigError


def numpy_ema(snapshots: list[np.ndarray], decay: float) -> np.ndarray:
    """The reference average, written out: the first snapshot, then after k earlier updates
    `e = d e + (1 - d) w` with `d = min(decay, (1 + k) / (10 + k))`."""
    average = snapshots[0].astype(np.float64)
    for k, weights in enumerate(snapshots[1:], start=1):
        d = min(decay, (1 + k) / (10 + k))
        average = d * average + (1 - d) * weights
    return average


def test_decay_warms_up_then_holds_the_configured_value():
    assert averaging.decay_after(0, 0.999) == pytest.approx(0.1)
    assert averaging.decay_after(1, 0.999) == pytest.approx(2 / 11)
    assert averaging.decay_after(90, 0.999) == pytest.approx(91 / 100)
    assert averaging.decay_after(10**6, 0.999) == 0.999


def test_average_follows_the_written_out_formula_and_copies_counters():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = averaging.build_ema(model, 0.5)
    snapshots, means = [], []
    for _ in range(6):
        with torch.no_grad():
            model[0].weight.normal_()
        model.train()(torch.randn(8, 3))  # moves the running mean, counts a batch
        snapshots.append(model[0].weight.detach().numpy().copy())
        means.append(model[1].running_mean.numpy().copy())
        averaging.update(ema, model)
    np.testing.assert_allclose(ema.module[0].weight.detach().numpy(), numpy_ema(snapshots, 0.5),
                               rtol=1e-5)
    np.testing.assert_allclose(ema.module[1].running_mean.numpy(), numpy_ema(means, 0.5),
                               rtol=1e-5)
    assert int(ema.module[1].num_batches_tracked) == 6 and averaging.updates(ema) == 6


def test_no_decay_means_no_average():
    assert averaging.build_ema(nn.Linear(2, 2), None) is None
    averaging.update(None, nn.Linear(2, 2))  # a no-op, not an error


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.1"])
def test_decay_outside_zero_one_is_refused(value):
    with pytest.raises(ConfigError, match="train.ema must be null .* got"):
        load_config(None, [f"train.ema={value}"])


def trained_and_recorded(tiny_config, out, monkeypatch, *overrides: str) -> list[dict]:
    """Train the tiny config with ``overrides``, returning the trained weights after each step."""
    real_step, snapshots = train_module.optimizer_step, []

    def recording_step(run):
        real_step(run)
        snapshots.append({k: v.detach().clone() for k, v in run.model.state_dict().items()})

    monkeypatch.setattr(train_module, "optimizer_step", recording_step)
    assert main(["train", str(tiny_config), f"train.out_dir={out}", *overrides]) == 0
    monkeypatch.setattr(train_module, "optimizer_step", real_step)
    return snapshots


def test_run_publishes_the_average_of_its_steps(tiny_config, tmp_path, monkeypatch):
    snapshots = trained_and_recorded(tiny_config, tmp_path / "run", monkeypatch,
                                     "train.ema=0.6", "train.precise_bn=never")
    published, _ = read_weights(tmp_path / "run" / "last.safetensors")
    state = read_state(tmp_path / "run" / "last.state.pt")
    assert len(snapshots) == 4 and state["ema_updates"] == 4
    for name, tensor in published.items():
        if tensor.is_floating_point():
            expected = numpy_ema([s[name].numpy() for s in snapshots], 0.6)
            np.testing.assert_allclose(tensor.numpy(), expected, rtol=1e-5, atol=1e-7)
        assert torch.equal(state["trained"][name], snapshots[-1][name]), name
    assert not torch.equal(published["head.weight"], snapshots[-1]["head.weight"])
    best, _ = read_weights(tmp_path / "run" / "best.safetensors")
    assert best.keys() == published.keys()


def test_killed_averaging_run_resumes_exactly(tiny_config, tmp_path, kill_in_epoch, weights_equal):
    assert main(["train", str(tiny_config), f"train.out_dir={tmp_path / 'whole'}",
                 "train.ema=0.9"]) == 0
    kill_in_epoch(1, lambda: main(["train", str(tiny_config), f"train.out_dir={tmp_path / 'killed'}",
                                   "train.ema=0.9"]))
    assert main(["train", "--resume", str(tmp_path / "killed")]) == 0  # the run's own config
    assert weights_equal(tmp_path / "whole" / "last.safetensors",
                         tmp_path / "killed" / "last.safetensors")
    whole = read_state(tmp_path / "whole" / "last.state.pt")
    resumed = read_state(tmp_path / "killed" / "last.state.pt")
    assert whole["ema_updates"] == resumed["ema_updates"] == 4
    assert all(torch.equal(whole["trained"][k], resumed["trained"][k]) for k in whole["trained"])


@pytest.mark.parametrize(("first", "then", "said"), [
    ("train.ema=0.9", "train.ema=null", "got train.ema off for a run that averaged"),
    ("train.ema=null", "train.ema=0.9", "got train.ema on for a run that did not average"),
])
def test_resume_with_the_average_switched_is_refused(tiny_config, tmp_path, first, then, said):
    run = tmp_path / "run"
    assert main(["train", str(tiny_config), f"train.out_dir={run}", "train.epochs=1", first]) == 0
    config = load_config(run / "config.yaml", ["train.epochs=2", then])
    with pytest.raises(CheckpointError, match=said):
        train_module.train(config, resume=run)
