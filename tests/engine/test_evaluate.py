"""`pixelwise evaluate` through `cli.main`: object recall for every dataset, and the ISBI 2012
measures (pixel error, adapted Rand error) for binary ones, checked against an independent
computation on the same predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from pixelwise.cli import main
from pixelwise.data import open_dataset
from pixelwise.inference.predict import Segmenter
from pixelwise.metrics import adapted_rand_error, rand_pair_counts, segment_rand_error
from pixelwise.postprocess import watershed_cells

TINY_ISBI = """\
model:
  name: unet
  options: {{base_channels: 4, depth: 2}}
data:
  dataset: isbi2012
  root: {root}
  crop_size: 32
  batch_size: 5
  val_batch_size: 5
train:
  epochs: 1
  device: cpu
  progress: false
  out_dir: {out}
"""


def write_isbi_layout(root: Path, size: int = 32) -> None:
    """30 slices in the ISBI 2012 PNG layout: cells of a jittered grid (label 255) split by
    one-pixel membranes (label 0), images the labels plus noise."""
    rng = np.random.default_rng(0)
    (root / "train" / "image").mkdir(parents=True)
    (root / "train" / "label").mkdir(parents=True)
    for i in range(30):
        label = np.full((size, size), 255, np.uint8)
        for line in range(int(rng.integers(2, 6)), size, 8):
            label[line, :] = 0
            label[:, (line + i) % size] = 0
        image = np.clip(label * 0.7 + rng.normal(40, 20, label.shape), 0, 255).astype(np.uint8)
        Image.fromarray(label).save(root / "train" / "label" / f"{i}.png")
        Image.fromarray(image).save(root / "train" / "image" / f"{i}.png")


@pytest.fixture(scope="module")
def isbi_run(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset root, checkpoint) of a one-epoch tiny U-Net on a fake ISBI 2012 layout."""
    folder = tmp_path_factory.mktemp("isbi")
    write_isbi_layout(folder / "data")
    config = folder / "tiny.yaml"
    config.write_text(TINY_ISBI.format(root=folder / "data", out=folder / "run"))
    assert main(["train", str(config)]) == 0
    return folder / "data", folder / "run" / "last.safetensors"


@pytest.fixture(scope="module")
def isbi_scores(isbi_run, tmp_path_factory) -> dict:
    root, checkpoint = isbi_run
    out = tmp_path_factory.mktemp("eval")
    assert main(["evaluate", str(checkpoint), "--data", "isbi2012", "--root", str(root),
                 "--device", "cpu", "--out", str(out)]) == 0
    return json.loads((out / "metrics.json").read_text())


def predictions(isbi_run) -> list[tuple[np.ndarray, np.ndarray]]:
    """(prediction, mask) of the val slices 25-29, through Segmenter (not evaluate's loop)."""
    root, checkpoint = isbi_run
    segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu")
    data = open_dataset("isbi2012", root, "val")
    return [(segmenter.predict(data.read_image(i)[..., 0]), data.read_mask(i))
            for i in range(len(data))]


def test_evaluate_of_a_binary_dataset_prints_pixel_and_rand_error(isbi_run, capsys):
    root, checkpoint = isbi_run
    capsys.readouterr()
    assert main(["evaluate", str(checkpoint), "--data", "isbi2012", "--root", str(root),
                 "--device", "cpu", "--out", str(root.parent / "printed")]) == 0
    out = capsys.readouterr().out
    assert "ISBI 2012 measures: pixel error" in out
    assert "segments are the 4-connected 'cell' regions, scored on the truth's 'cell' pixels" in out
    assert "of the watershed cells" in out
    assert "the challenge's pixel error" in out
    assert "Object recall" in out


def test_evaluate_pixel_error_is_the_fraction_of_wrong_pixels(isbi_run, isbi_scores):
    pairs = predictions(isbi_run)
    wrong = sum(int((pred != mask).sum()) for pred, mask in pairs)
    assert isbi_scores["pixel_error"] == pytest.approx(wrong / sum(m.size for _, m in pairs))


def test_evaluate_rand_error_is_the_mean_over_slices(isbi_run, isbi_scores):
    errors = [adapted_rand_error(pred, mask) for pred, mask in predictions(isbi_run)]
    assert isbi_scores["adapted_rand_error"] == pytest.approx(np.nanmean(errors))


def test_evaluate_watershed_rand_error_scores_the_cells_of_each_slice(isbi_run, isbi_scores):
    root, checkpoint = isbi_run
    segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu")
    data = open_dataset("isbi2012", root, "val")
    errors = [segment_rand_error(watershed_cells(segmenter.predict_proba(
        data.read_image(i)[..., 0])[1]), data.read_mask(i)) for i in range(len(data))]
    assert isbi_scores["watershed_rand_error"] == pytest.approx(np.nanmean(errors), abs=1e-6)


def test_evaluate_challenge_pixel_error_is_one_minus_the_best_f_score_of_cells(isbi_run,
                                                                               isbi_scores):
    root, checkpoint = isbi_run
    segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu")
    data = open_dataset("isbi2012", root, "val")
    cell = np.stack([segmenter.predict_proba(data.read_image(i)[..., 0])[1]
                     for i in range(len(data))])
    truth = np.stack([data.read_mask(i) for i in range(len(data))]) == 1
    best = 0.0
    for threshold in np.arange(11) / 10:  # the challenge's Fiji script: 0, 0.1, ..., 1
        guess = cell > threshold
        tp, fp, fn = np.sum(guess & truth), np.sum(guess & ~truth), np.sum(~guess & truth)
        best = max(best, 2 * tp / (2 * tp + fp + fn))
    assert isbi_scores["challenge_pixel_error"] == pytest.approx(1 - best, abs=1e-5)


def test_evaluate_challenge_rand_error_pools_the_pairs_of_every_slice(isbi_run, isbi_scores):
    root, checkpoint = isbi_run
    segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu")
    data = open_dataset("isbi2012", root, "val")
    cells = [segmenter.predict_proba(data.read_image(i)[..., 0])[1] for i in range(len(data))]
    best = 0.0
    for threshold in np.arange(11) / 10:
        both, truth, guess = np.sum([rand_pair_counts(ndimage.label(cell > threshold)[0],
                                                      data.read_mask(i))
                                     for i, cell in enumerate(cells)], axis=0)
        best = max(best, 2 * both / (truth + guess))
    assert isbi_scores["challenge_rand_error"] == pytest.approx(1 - best, abs=1e-6)


def test_evaluate_counts_every_cell_as_an_object(isbi_run, isbi_scores):
    cells = sum(ndimage.label(mask == 1)[1] for _, mask in predictions(isbi_run))
    objects = isbi_scores["object_recall"]["objects"]
    assert objects["small"][1] == objects["all"][1] == cells


def test_evaluate_of_a_multi_class_dataset_has_object_recall_but_no_isbi_measures(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text("model: {name: unet, options: {base_channels: 4, depth: 2}}\n"
                      "data: {dataset: synthetic, batch_size: 4, options: {n: 4, size: 32}}\n"
                      f"train: {{epochs: 1, device: cpu, progress: false, out_dir: {tmp_path}/run}}\n")
    assert main(["train", str(config)]) == 0
    assert main(["evaluate", str(tmp_path / "run" / "last.safetensors"), "--data", "synthetic",
                 "--option", "n=2", "--option", "size=32", "--device", "cpu",
                 "--out", str(tmp_path / "eval")]) == 0
    scores = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert len(scores["object_recall"]["recall"]["all"]) == 5
    assert not {"pixel_error", "adapted_rand_error", "watershed_rand_error",
                "challenge_pixel_error", "challenge_rand_error"} & set(scores)
