"""`predict`, `evaluate` and a failing rank as torchrun runs them: two CPU processes (gloo on
127.0.0.1), one thread each (issue 12). The ranks are forked with the environment torchrun
gives them (conftest.fork_ranks: a second or two instead of ten); test_distributed.py launches
the real torchrun."""

from __future__ import annotations

import json
import time
from pathlib import Path

from nan_on_one_rank import nan_on_rank_one

from pixelwise.cli import main

FORMATS = ["--format", "png", "overlay", "npy", "coco"]


def outputs_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("img*"))}


def test_two_processes_write_byte_for_byte_what_one_writes(tiny_checkpoint, images, tmp_path,
                                                          two_ranks):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["predict", str(tiny_checkpoint), str(images), "--out", str(one), *FORMATS]) == 0
    done = two_ranks("predict", tiny_checkpoint, images, "--out", two, *FORMATS)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "wrote png, overlay, npy, coco for 13 images" in done.stdout  # rank 0 alone reports
    assert len(outputs_of(one)) == 13 * 5  # png, overlay and its legend, npy, coco
    assert outputs_of(two) == outputs_of(one)
    shares = {path.name: [json.loads(line)["input"] for line in path.read_text().splitlines()
                          if "outputs" in line] for path in two.glob("manifest*.jsonl")}
    inputs = sorted(str(p) for p in images.iterdir())
    assert shares == {"manifest.jsonl": inputs[0::2], "manifest.rank1.jsonl": inputs[1::2]}


def test_two_process_evaluate_equals_one_process_exactly(tiny_checkpoint, tmp_path, two_ranks):
    args = ["evaluate", str(tiny_checkpoint), "--data", "synthetic", "--option", "n=7",
            "--option", "size=32", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    done = two_ranks(*args, "--out", tmp_path / "two")
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert one["num_images"] == two["num_images"] == 7  # shards of 4 and 3, none repeated
    assert {k: v for k, v in two.items() if k != "files"} == \
        {k: v for k, v in one.items() if k != "files"}


def test_an_unreadable_image_on_one_rank_stops_every_rank_with_its_error(
        tiny_checkpoint, images, tmp_path, two_ranks):
    (images / "img01.png").write_text("not an image")  # rank 1's first image
    started = time.monotonic()
    done = two_ranks("predict", tiny_checkpoint, images, "--out", tmp_path / "out", timeout=60)
    assert done.returncode != 0 and time.monotonic() - started < 60
    reason = f"{images / 'img01.png'}: the file must be a readable image"
    assert f"error: {reason}" in done.stderr  # rank 1
    assert f"error: rank 0 stopped because rank 1 failed: {reason}" in done.stderr


def test_a_nan_loss_on_one_rank_stops_every_rank_with_the_error(tiny_config, tmp_path, two_ranks):
    done = two_ranks("train", tiny_config, f"train.out_dir={tmp_path / 'run'}", "train.epochs=1",
                     "data.batch_size=2", before=nan_on_rank_one)
    assert done.returncode != 0
    assert done.stderr.count("error: training loss must be finite, got nan at epoch 1, "
                             "batch 2") == 2  # both ranks, at the same batch
