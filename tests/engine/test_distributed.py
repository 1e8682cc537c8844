"""torchrun with two CPU processes (gloo): one writer, validation over the whole set."""

from __future__ import annotations

import csv
import json

import pytest

from pixelwise.cli import main


@pytest.mark.heavy
def test_two_process_run_writes_once_and_scores_the_whole_validation_set(tiny_config, tmp_path,
                                                                        torchrun_train):
    run = tmp_path / "run"
    done = torchrun_train(tiny_config, f"train.out_dir={run}", "train.epochs=1", "data.options.n=7")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1"]  # rank 1 wrote nothing to the log
    # The all-reduced validation score equals a single-process evaluation of the same weights.
    assert main(["evaluate", str(run / "last.safetensors"), "--data", "synthetic",
                 "--option", "n=7", "--option", "size=32", "--out", str(tmp_path / "e")]) == 0
    single = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert single["num_images"] == 7  # odd: shards of 4 and 3, none repeated
    assert float(rows[-1]["pixel_accuracy"]) == single["pixel_accuracy"]
