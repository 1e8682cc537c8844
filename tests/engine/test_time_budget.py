"""Training for a time budget (`train.time_budget`) or a number of steps (`train.max_steps`)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from pixelwise.config import budget_seconds, load_config
from pixelwise.engine import train as train_module
from pixelwise.engine.checkpoint import read_state
from pixelwise.errors import ConfigError


@pytest.mark.parametrize(("text", "seconds"), [
    ("600s", 600), ("20m", 1200), ("2h", 7200), ("1h30m", 5400), ("1.5h", 5400), ("90", 90),
])
def test_time_budget_is_parsed_into_seconds(text, seconds):
    assert budget_seconds(text) == seconds


def test_no_time_budget_is_none():
    assert budget_seconds(None) is None
    assert load_config().train.time_budget is None and load_config().train.max_steps == 0


@pytest.mark.parametrize("text", ["0s", "ten minutes", "10x", "-5m"])
def test_malformed_time_budget_is_refused_before_training(text):
    with pytest.raises(ConfigError, match="train.time_budget must be a positive duration"):
        load_config(None, [f"train.time_budget={text}"])


def test_negative_max_steps_is_refused():
    with pytest.raises(ConfigError, match="train.max_steps must be 0"):
        load_config(None, ["train.max_steps=-1"])


# ---- the loop under a budget, timed by a fake clock: each optimiser step takes 10 s ----------


class StepClock:
    """A clock that moves only when an optimiser step is taken, by `seconds_per_step`."""

    def __init__(self, start: float = 0.0, seconds_per_step: float = 10.0) -> None:
        self.now, self.seconds_per_step = start, seconds_per_step

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def step_clock(monkeypatch):
    """A StepClock advanced by every optimiser step; `lrs` records the lr after each step."""
    clock = StepClock()
    clock.lrs = []
    real_step = train_module.optimizer_step

    def timed_step(run):
        clock.now += clock.seconds_per_step
        real_step(run)
        clock.lrs.append(run.optimizer.param_groups[0]["lr"])

    monkeypatch.setattr(train_module, "optimizer_step", timed_step)
    return clock


def run_tiny(tiny_config, out: Path, clock, *overrides: str) -> dict:
    config = load_config(tiny_config, [f"train.out_dir={out}", *overrides])
    return train_module.train(config, clock=clock)


def killed_run(kill_in_epoch, tiny_config, out: Path, clock, epoch: int, *overrides: str) -> None:
    """Run the tiny config in ``out`` from clock 0 until epoch ``epoch`` (0-based) starts, then
    kill it there (the ``kill_in_epoch`` fixture)."""
    clock.now = 0.0
    kill_in_epoch(epoch, lambda: run_tiny(tiny_config, out, clock, *overrides))


def test_training_stops_at_the_first_step_past_the_time_budget(tiny_config, tmp_path, step_clock):
    # 2 steps per epoch; after step 3 30 s are used, after step 4 40 s >= 35 s.
    result = run_tiny(tiny_config, tmp_path / "run", step_clock, "train.time_budget=35s")
    assert (result["step"], result["epochs"], result["stopped_by"]) == (4, 2, "time_budget")
    assert result["seconds"] == 40


def test_the_budget_is_no_epoch_limit_and_a_stop_mid_epoch_validates_and_saves(
        tiny_config, tmp_path, step_clock):
    run = tmp_path / "run"
    result = run_tiny(tiny_config, run, step_clock, "train.time_budget=55s", "train.epochs=1",
                      "train.val_every=100")
    assert (result["step"], result["epochs"]) == (6, 3)  # step 6 ends epoch 3, not epoch 1
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [row["mean_iou"] != "" for row in rows] == [False, False, True]  # only at the end
    assert read_state(run / "last.state.pt")["step"] == 6


def test_linear_schedule_decays_to_zero_over_the_time_budget(tiny_config, tmp_path, step_clock):
    run_tiny(tiny_config, tmp_path / "run", step_clock, "train.time_budget=35s",
             "optim.schedule=linear")  # the tiny config's lr is 0.05
    assert step_clock.lrs == pytest.approx([0.05 * (1 - 10 / 35), 0.05 * (1 - 20 / 35),
                                            0.05 * (1 - 30 / 35), 0.0])


def test_max_steps_stops_and_decays_the_schedule_over_the_steps(tiny_config, tmp_path,
                                                                step_clock):
    result = run_tiny(tiny_config, tmp_path / "run", step_clock, "train.max_steps=3",
                      "optim.schedule=linear")
    assert (result["step"], result["stopped_by"]) == (3, "max_steps")
    assert step_clock.lrs == pytest.approx([0.05 * 2 / 3, 0.05 / 3, 0.0])


def test_final_validation_time_is_kept_back_from_the_budget(tiny_config, tmp_path, step_clock,
                                                            monkeypatch):
    real_validate = train_module.validate

    def slow_validate(*args, **kwargs):  # 8 validation images, one batch: 12 s
        step_clock.now += 12
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(train_module, "validate", slow_validate)
    result = run_tiny(tiny_config, tmp_path / "run", step_clock, "train.time_budget=65s",
                      "train.val_every=100")
    # Timing the validation first takes 12 s and keeps 12 s back: steps stop once
    # 12 + 10 k >= 65 - 12, at step 5 (without the reserve: at step 6, 72 s, + 12 s after).
    assert result["step"] == 5
    assert result["seconds"] == 12 + 50 + 12


def test_run_json_records_how_far_the_run_got(tiny_config, tmp_path, step_clock):
    run_tiny(tiny_config, tmp_path / "run", step_clock, "train.time_budget=35s")
    record = json.loads((tmp_path / "run" / "run.json").read_text())["result"]
    assert record == {"step": 4, "epochs": 2, "seconds": 40.0, "stopped_by": "time_budget",
                      "time_budget": "35s", "time_budget_seconds": 35.0, "max_steps": 0}


def test_resume_keeps_the_budget_accounting(tiny_config, tmp_path, step_clock, kill_in_epoch,
                                            weights_equal):
    budget = "train.time_budget=55s"
    whole = run_tiny(tiny_config, tmp_path / "whole", step_clock, budget)
    # killed in the third epoch: two epochs (4 steps, 40 s) saved
    killed_run(kill_in_epoch, tiny_config, tmp_path / "killed", step_clock, 2, budget)
    step_clock.now = 5000.0  # the resumed process's clock reads anything: only spans count
    config = load_config(tmp_path / "killed" / "config.yaml")
    resumed = train_module.train(config, resume=tmp_path / "killed", clock=step_clock)
    assert (whole["step"], resumed["step"]) == (6, 6)
    assert resumed["seconds"] == whole["seconds"] == 60
    assert weights_equal(tmp_path / "whole" / "last.safetensors",
                         tmp_path / "killed" / "last.safetensors")


def test_resuming_a_spent_budget_trains_no_further(tiny_config, tmp_path, step_clock, caplog):
    run_tiny(tiny_config, tmp_path / "run", step_clock, "train.time_budget=35s")
    config = load_config(tmp_path / "run" / "config.yaml")
    with caplog.at_level("INFO", logger="pixelwise"):
        result = train_module.train(config, resume=tmp_path / "run", clock=step_clock)
    assert result["step"] == 4
    assert "budget is already spent" in caplog.text and "train.time_budget" in caplog.text


def test_two_torchrun_processes_stop_together_on_rank_0s_clock(tiny_config, tmp_path, two_ranks):
    # Each rank reads its own clock; had they decided alone, one would wait in a collective for
    # the other and the run would hang until the timeout.
    run = tmp_path / "run"
    done = two_ranks("train", tiny_config, f"train.out_dir={run}", "train.time_budget=1s",
                     "data.options.n=7")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((run / "run.json").read_text())["result"]
    assert result["stopped_by"] == "time_budget" and result["step"] >= 1
    assert read_state(run / "last.state.pt")["step"] == result["step"]


# ---- train.checkpoint_interval: `last` at most every so often, the final epoch always --------


@pytest.fixture
def saved_steps(monkeypatch):
    """The step of every `last` checkpoint written."""
    steps = []
    real_save = train_module.ckpt.save_last

    def recording_save(run_dir, model, meta, state):
        steps.append(state["step"])
        real_save(run_dir, model, meta, state)

    monkeypatch.setattr(train_module.ckpt, "save_last", recording_save)
    return steps


def test_checkpoint_interval_skips_saves_until_it_has_passed(tiny_config, tmp_path, step_clock,
                                                            saved_steps):
    # 2 steps (20 s) an epoch; epochs end at 20, 40, 60, 80 s; the budget stops at step 8.
    result = run_tiny(tiny_config, tmp_path / "run", step_clock, "train.time_budget=75s",
                      "train.checkpoint_interval=35s")
    assert result["step"] == 8
    assert saved_steps == [4, 8]  # 40 - 0 >= 35, 60 - 40 < 35, and the final epoch
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [int(row["step"]) for row in rows] == [2, 4, 6, 8]  # every epoch is still logged


def test_the_last_of_train_epochs_is_saved_whatever_the_interval(tiny_config, tmp_path,
                                                                 step_clock, saved_steps):
    result = run_tiny(tiny_config, tmp_path / "run", step_clock, "train.epochs=3",
                      "train.checkpoint_interval=1h")
    assert (result["step"], saved_steps) == (6, [6])
    assert read_state(tmp_path / "run" / "last.state.pt")["step"] == 6


def test_without_an_interval_every_epoch_is_saved(tiny_config, tmp_path, step_clock, saved_steps):
    run_tiny(tiny_config, tmp_path / "run", step_clock, "train.time_budget=75s")
    assert saved_steps == [2, 4, 6, 8]


def test_resume_after_a_kill_between_interval_saves_is_exact(tiny_config, tmp_path, step_clock,
                                                             kill_in_epoch, weights_equal):
    settings = ("train.time_budget=75s", "train.checkpoint_interval=35s")
    whole = run_tiny(tiny_config, tmp_path / "whole", step_clock, *settings)
    # killed in the fourth epoch: epoch 3 (steps 5-6) ended unsaved, `last` holds step 4
    killed_run(kill_in_epoch, tiny_config, tmp_path / "killed", step_clock, 3, *settings)
    assert read_state(tmp_path / "killed" / "last.state.pt")["step"] == 4
    config = load_config(tmp_path / "killed" / "config.yaml")
    resumed = train_module.train(config, resume=tmp_path / "killed", clock=step_clock)
    assert (whole["step"], resumed["step"]) == (8, 8)
    assert weights_equal(tmp_path / "whole" / "last.safetensors",
                         tmp_path / "killed" / "last.safetensors")


@pytest.mark.parametrize("text", ["0s", "often", "-1m"])
def test_malformed_checkpoint_interval_is_refused_before_training(text):
    with pytest.raises(ConfigError, match="train.checkpoint_interval must be a positive duration"):
        load_config(None, [f"train.checkpoint_interval={text}"])


def test_a_slow_checkpoint_every_epoch_is_reported_once(tiny_config, tmp_path, monkeypatch,
                                                        caplog):
    real_save = train_module.ckpt.save_last

    def slow_save(*args):  # half a second and more: over a tenth of the tiny epochs
        time.sleep(0.6)
        real_save(*args)

    monkeypatch.setattr(train_module.ckpt, "save_last", slow_save)
    with caplog.at_level("WARNING", logger="pixelwise"):
        run_tiny(tiny_config, tmp_path / "run", time.perf_counter, "train.epochs=2")
    advice = [r.getMessage() for r in caplog.records if "checkpoint_interval" in r.getMessage()]
    assert len(advice) == 1 and "writing the last checkpoint took" in advice[0]
