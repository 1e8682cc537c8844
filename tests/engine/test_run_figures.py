"""What a run and an evaluation leave to look at (issue 15, item 8): `training_curves.png`
beside `metrics.csv`, redrawn at each validation, with whole-epoch ticks; `evaluate` records the
checkpoint, split and TTA settings in `metrics.json` and the figures' titles, and writes TTA
runs to their own folder."""

from __future__ import annotations

import json

import pytest

import pixelwise.plots
from pixelwise.cli import main
from pixelwise.plots import epoch_ticks

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def drawn(monkeypatch) -> list:
    """Record (function name, arguments) of each figure written, then draw it as usual."""
    calls = []
    for name in ("training_curves_png", "confusion_matrix_png", "per_class_iou_png"):
        original = getattr(pixelwise.plots, name)

        def record(*args, _name=name, _original=original, **kwargs):
            calls.append((_name, args))
            return _original(*args, **kwargs)

        monkeypatch.setattr(pixelwise.plots, name, record)
    return calls


def test_train_redraws_training_curves_beside_metrics_csv_at_each_validation(
        tiny_config, tmp_path, drawn):
    run = tmp_path / "run"
    assert main(["train", str(tiny_config), f"train.out_dir={run}", "train.epochs=3",
                 "train.val_every=2", "train.figures=true"]) == 0
    curves = [args for name, args in drawn if name == "training_curves_png"]
    assert curves == [(run / "metrics.csv", run / "training_curves.png")] * 2  # epochs 2 and 3
    assert (run / "training_curves.png").read_bytes().startswith(PNG)
    assert not list(run.glob(".training_curves.png*"))  # written atomically: no temporary left


@pytest.mark.parametrize(("epochs", "ticks"), [
    ([1], [1]), ([1, 2, 3], [1, 2, 3]), ([5, 10, 15], [5, 7, 9, 11, 13, 15]),
    (list(range(1, 31)), [1, 4, 7, 10, 13, 16, 19, 22, 25, 28]),
])
def test_epoch_axis_ticks_are_whole_epochs(epochs, ticks):
    assert epoch_ticks(epochs) == ticks


@pytest.fixture
def best(tiny_config, tmp_path):
    assert main(["train", str(tiny_config), f"train.out_dir={tmp_path / 'run'}",
                 "train.epochs=1"]) == 0
    return tmp_path / "run" / "best.safetensors"


def test_evaluate_records_checkpoint_split_and_tta_in_metrics_json_and_titles(best, drawn):
    argv = ["evaluate", str(best), "--data", "synthetic", "--split", "test", "--option", "n=2",
            "--option", "size=32", "--device", "cpu", "--tta", "--tta-scales", "0.75", "1"]
    assert main(argv) == 0
    out = best.parent / "eval-test-tta"  # TTA runs get their own default folder
    evaluated = json.loads((out / "metrics.json").read_text())["evaluated"]
    assert evaluated == {"checkpoint": str(best), "dataset": "synthetic", "root": "",
                         "split": "test", "tta": {"flips": ["h"], "scales": [0.75, 1.0]}}
    titles = {name: args[-1] for name, args in drawn if name != "training_curves_png"}
    expected = "best.safetensors on synthetic/test, TTA flip h, scales 0.75 1"
    assert titles == {"confusion_matrix_png": expected, "per_class_iou_png": expected}


def test_evaluate_without_tta_keeps_the_plain_folder(best, drawn):
    assert main(["evaluate", str(best), "--data", "synthetic", "--option", "n=2",
                 "--option", "size=32", "--device", "cpu"]) == 0
    metrics = json.loads((best.parent / "eval-val" / "metrics.json").read_text())
    assert metrics["evaluated"]["tta"] == {"flips": [], "scales": [1.0]}
    assert drawn[-1][1][-1] == "best.safetensors on synthetic/val, no TTA"


def test_train_figures_false_draws_no_curves(tiny_config, tmp_path, drawn):
    run = tmp_path / "run"
    assert main(["train", str(tiny_config), f"train.out_dir={run}", "train.figures=false"]) == 0
    assert not drawn and not (run / "training_curves.png").exists()
    assert (run / "metrics.csv").exists()
