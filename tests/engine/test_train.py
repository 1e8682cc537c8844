"""Training end to end through the CLI entry point on tiny synthetic data."""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
import os
import platform
from pathlib import Path

import pytest
import torch

from pixelwise.checkpoint import read_weights
from pixelwise.cli import main
from pixelwise.config import load_config
from pixelwise.engine import train as train_module
from pixelwise.engine.checkpoint import read_state
from pixelwise.metrics import ConfusionMatrix

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_train_writes_checkpoints_config_and_run_record(tiny_config, tmp_path):
    run = tmp_path / "run"
    assert main(["train", str(tiny_config), f"train.out_dir={run}", "train.seed=7"]) == 0
    for name in ("last.safetensors", "last.state.pt", "best.safetensors", "config.yaml",
                 "run.json", "metrics.csv"):
        assert (run / name).is_file(), name
    assert load_config(run / "config.yaml") == load_config(
        tiny_config, [f"train.out_dir={run}", "train.seed=7"])
    record = json.loads((run / "run.json").read_text())
    assert record["seed"] == 7
    assert record["python"] == platform.python_version()
    assert record["torch"] == torch.__version__
    assert "train" in record["command"]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert read_state(run / "last.state.pt")["epoch"] == 2
    if importlib.util.find_spec("tensorboard"):
        assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    _, meta = read_weights(run / "last.safetensors")
    assert (meta.name, meta.num_classes, meta.options["base_channels"]) == ("unet", 5, 4)
    assert meta.classes[0] == "background" and len(meta.palette) == 5


def test_killed_run_resumes_to_the_uninterrupted_weights(
        tiny_config, tmp_path, kill_in_epoch, uninterrupted_run, weights_equal):
    # one epoch done and saved: killed in the second
    kill_in_epoch(1, lambda: main(["train", str(tiny_config), f"train.out_dir={tmp_path / 'killed'}"]))
    assert read_state(tmp_path / "killed" / "last.state.pt")["epoch"] == 1

    assert main(["train", str(tiny_config), "--resume", str(tmp_path / "killed")]) == 0
    assert weights_equal(uninterrupted_run / "last.safetensors",
                         tmp_path / "killed" / "last.safetensors")


def test_resume_can_extend_the_number_of_epochs(tiny_config, tmp_path, weights_equal):
    constant = ["optim.schedule=constant"]
    assert main(["train", str(tiny_config), f"train.out_dir={tmp_path / 'a'}", *constant]) == 0
    short = [f"train.out_dir={tmp_path / 'b'}", "train.epochs=1", *constant]
    assert main(["train", str(tiny_config), *short]) == 0
    assert main(["train", str(tiny_config), "train.epochs=2", *constant,
                 "--resume", str(tmp_path / "b")]) == 0
    assert read_state(tmp_path / "b" / "last.state.pt")["epoch"] == 2
    assert weights_equal(tmp_path / "a" / "last.safetensors", tmp_path / "b" / "last.safetensors")


def test_resume_uses_the_previous_checkpoint_when_the_newest_is_truncated(
        tiny_config, tmp_path, uninterrupted_run, weights_equal):
    assert main(["train", str(tiny_config), f"train.out_dir={tmp_path / 'b'}"]) == 0
    last = tmp_path / "b" / "last.safetensors"
    last.write_bytes(last.read_bytes()[:1000])
    # Epoch 2 is lost; the run restarts from epoch 1 and repeats epoch 2 exactly.
    assert main(["train", str(tiny_config), "--resume", str(tmp_path / "b")]) == 0
    assert weights_equal(uninterrupted_run / "last.safetensors", last)


def test_deterministic_cpu_runs_repeat_bit_for_bit(tiny_config, tmp_path, weights_equal):
    for name in ("a", "b"):
        args = [f"train.out_dir={tmp_path / name}", "train.deterministic=true", "train.epochs=1"]
        assert main(["train", str(tiny_config), *args]) == 0
    assert weights_equal(tmp_path / "a" / "last.safetensors", tmp_path / "b" / "last.safetensors")


class _NaNFromSecondEpoch(torch.nn.Module):
    """Cross-entropy that turns NaN once the first epoch (2 batches of 4) is over."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, logits, target):
        self.calls += 1
        loss = torch.nn.functional.cross_entropy(logits, target)
        return loss * float("nan") if self.calls > 2 else loss


def test_nan_loss_stops_with_an_error_and_keeps_the_last_good_checkpoint(
        tiny_config, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("pixelwise.losses.build_loss", lambda *a, **k: _NaNFromSecondEpoch())
    run = tmp_path / "run"
    assert main(["train", str(tiny_config), f"train.out_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert "error: training loss must be finite" in err and "Traceback" not in err
    assert read_weights(run / "last.safetensors")[1].epoch == 1
    assert read_state(run / "last.state.pt")["epoch"] == 1


def test_nan_batches_are_skipped_when_configured(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setattr("pixelwise.losses.build_loss", lambda *a, **k: _NaNFromSecondEpoch())
    run = tmp_path / "run"
    assert main(["train", str(tiny_config), f"train.out_dir={run}",
                 "train.skip_nonfinite=true"]) == 0
    state = read_state(run / "last.state.pt")
    assert state["epoch"] == 2 and state["step"] == 2  # only the first epoch's 2 steps were taken


def _scores(pred, target) -> dict:
    matrix = ConfusionMatrix(5, 255)
    matrix.update(torch.tensor(pred), torch.tensor(target))
    return matrix.compute()


def test_early_stopping_ends_training_after_patience(tiny_config, tmp_path, monkeypatch):
    flat = _scores(pred=[[0, 1, 2, 3, 4]], target=[[0, 1, 2, 3, 4]])
    monkeypatch.setattr(train_module, "validate", lambda *args, **kwargs: flat)
    run = tmp_path / "run"
    assert main(["train", str(tiny_config), f"train.out_dir={run}", "train.epochs=10",
                 "train.early_stop_patience=1"]) == 0
    # Epoch 1 sets the best; epoch 2 does not beat it: stop after epoch 2.
    assert read_state(run / "last.state.pt")["epoch"] == 2


def test_zero_recall_warning_after_repeated_validations(tiny_config, tmp_path, monkeypatch,
                                                        caplog):
    # Class 1 is always predicted as 0 (recall 0); class 3 never occurs (recall NaN).
    collapsed = _scores(pred=[[0, 0, 2, 4]], target=[[0, 1, 2, 4]])
    monkeypatch.setattr(train_module, "validate", lambda *args, **kwargs: collapsed)
    run = tmp_path / "run"
    assert main(["train", str(tiny_config), f"train.out_dir={run}",
                 "train.zero_recall_warn_after=2"]) == 0
    warnings = [r.getMessage() for r in caplog.records if "zero recall" in r.getMessage()]
    assert len(warnings) == 1 and "'circle'" in warnings[0]  # class 1 only


SHARED_DATA = Path(
    os.environ.get("PIXELWISE_SHARED_DATA",
                   Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))


@pytest.mark.shared_data
@pytest.mark.skipif(not (SHARED_DATA / "isbi2012").is_dir(),
                    reason="needs ../shared/data/isbi2012 (or PIXELWISE_SHARED_DATA)")
def test_one_epoch_on_isbi2012_slices(tmp_path):
    run = tmp_path / "run"
    assert main(["train", str(CONFIGS / "unet_isbi2012.yaml"), f"data.root={SHARED_DATA / 'isbi2012'}",
                 f"train.out_dir={run}", "train.epochs=1", "train.progress=false",
                 "model.options.base_channels=4", "model.options.depth=2", "data.crop_size=92",
                 "data.options.slices=[0]", "data.workers=0"]) == 0
    _, meta = read_weights(run / "last.safetensors")
    assert meta.in_channels == 1 and meta.num_classes == 2


def test_init_from_copies_the_weights_of_another_run(tiny_config, tmp_path, monkeypatch,
                                                     uninterrupted_run, weights_equal):
    # With the epoch itself skipped (and batch-norm statistics kept), the saved weights are
    # exactly the initial ones.
    monkeypatch.setattr(train_module, "train_one_epoch", lambda *args, **kwargs: (0.0, 1))
    source = uninterrupted_run / "last.safetensors"
    assert main(["train", str(tiny_config), f"train.out_dir={tmp_path / 'b'}", "train.epochs=1",
                 f"model.init_from={source}", "train.precise_bn=never"]) == 0
    assert weights_equal(source, tmp_path / "b" / "last.safetensors")


def test_gradient_accumulation_matches_the_larger_batch(tiny_config, tmp_path):
    # Without batch norm, two accumulated batches of 2 give the gradient of one batch of 4; in
    # fp32 only (train.amp=true picks bf16 on a CPU where it measures faster, and bf16 rounds the
    # two half-batch sums differently from the one sum).
    plain = ["model.options.batch_norm=false", "train.epochs=1", "train.amp=false"]
    assert main(["train", str(tiny_config), f"train.out_dir={tmp_path / 'a'}", *plain]) == 0
    assert main(["train", str(tiny_config), f"train.out_dir={tmp_path / 'b'}", *plain,
                 "data.batch_size=2", "train.accumulate=2"]) == 0
    a = read_weights(tmp_path / "a" / "last.safetensors")[0]
    b = read_weights(tmp_path / "b" / "last.safetensors")[0]
    assert read_state(tmp_path / "b" / "last.state.pt")["step"] == 2
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)


def test_python_api_returns_the_scores_and_table_the_cli_prints(tiny_config, tmp_path, capsys):
    import pixelwise

    result = pixelwise.train(load_config(tiny_config, [f"train.out_dir={tmp_path / 'a'}"]))
    assert result["epochs"] == 2 and result["best"] == max(
        float(r["mean_iou"]) for r in csv.DictReader((tmp_path / "a" / "metrics.csv").open()))
    assert main(["train", str(tiny_config), f"train.out_dir={tmp_path / 'b'}"]) == 0
    assert result["table"] in capsys.readouterr().out  # same seed: the same table


def test_valid_unet_trains_on_valid_crops_and_validates_whole_images_of_any_size(tiny_config,
                                                                                  tmp_path):
    # depth 2: 60 is a valid input (-> 20 px centre); the 64 px validation images are not, so
    # validation must mirror-extend them (U-Net §2) and score all 64 x 64 pixels.
    run = tmp_path / "run"
    assert main(["train", str(tiny_config), f"train.out_dir={run}", "train.epochs=1",
                 "model.options.padding=valid", "model.options.batch_norm=false",
                 "data.options.size=64", "data.crop_size=60"]) == 0
    assert read_state(run / "last.state.pt")["epoch"] == 1
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert 0.0 <= float(rows[-1]["mean_iou"]) <= 1.0  # validation ran on the 64 px images
    from pixelwise.engine.evaluate import evaluate

    result = evaluate(run / "best.safetensors", "synthetic", split="val", out_dir=tmp_path / "e",
                      progress=False, device="cpu", n=2, size=64)
    assert sum(map(sum, result["matrix"])) == 2 * 64 * 64


def test_resume_without_a_config_uses_the_runs_own_and_takes_overrides(uninterrupted_run,
                                                                       tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(uninterrupted_run, run)
    assert main(["train", "--resume", str(run), "train.epochs=3"]) == 0
    assert read_state(run / "last.state.pt")["epoch"] == 3
    assert load_config(run / "config.yaml").train.epochs == 3


def test_resume_leaves_the_callers_config_unchanged(tiny_config, uninterrupted_run, tmp_path):
    import shutil

    import pixelwise

    run = tmp_path / "run"
    shutil.copytree(uninterrupted_run, run)
    config = load_config(tiny_config)
    before = copy.deepcopy(config)
    result = pixelwise.train(config, resume=run)  # no epoch left: restores and returns
    assert result["run_dir"] == str(run) and result["epochs"] == 2
    assert config == before and config.train.out_dir == "runs/exp"


def test_train_without_config_or_resume_is_a_one_line_error(capsys):
    assert main(["train"]) == 2
    assert "CONFIG" in capsys.readouterr().err


def test_a_new_run_into_a_used_folder_is_refused_unless_overwrite(tiny_config, tmp_path, capsys):
    from pixelwise.engine.checkpoint import newest_whole

    run = tmp_path / "run"
    assert main(["train", str(tiny_config), f"train.out_dir={run}", "train.epochs=3"]) == 0
    before = (run / "last.safetensors").read_bytes()
    assert main(["train", str(tiny_config), f"train.out_dir={run}", "train.epochs=1"]) == 2
    err = capsys.readouterr().err
    assert str(run) in err and "--resume" in err and "train.overwrite=true" in err
    assert (run / "last.safetensors").read_bytes() == before  # nothing of the old run lost
    # With overwrite the new run replaces the old one: a new log, and resume continues the new
    # run (before the fix the old run's higher-step `last` became `previous` and won).
    assert main(["train", str(tiny_config), f"train.out_dir={run}", "train.epochs=1",
                 "train.overwrite=true"]) == 0
    assert [r["epoch"] for r in csv.DictReader((run / "metrics.csv").open())] == ["1"]
    assert newest_whole(run).state["epoch"] == 1
    assert not (run / "previous.safetensors").exists()
