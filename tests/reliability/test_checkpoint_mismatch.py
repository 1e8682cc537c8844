"""Checkpoints that do not fit the configuration or the data: one line naming the checkpoint
and what differs, found before any training step (issue 7)."""

from __future__ import annotations

import numpy as np
from PIL import Image
from sample_files import write_pair
from test_bad_input import assert_one_line_error

from pixelwise.inference.predict import Segmenter


def test_resume_with_another_architecture_names_the_checkpoint(folder_run, run_cli,
                                                               monkeypatch):
    assert run_cli("train", folder_run.config).code == 0
    from pixelwise.engine import train as train_module

    monkeypatch.setattr(train_module, "train_one_epoch", _refuse)
    result = run_cli("train", folder_run.config, "train.epochs=2", "model.options.base_channels=8",
                     "--resume", folder_run.out)
    assert_one_line_error(result, str(folder_run.out / "last.safetensors"), "options",
                          "'base_channels': 4", "'base_channels': 8")


def test_resume_with_other_class_names_names_the_checkpoint(folder_run, run_cli, monkeypatch):
    assert run_cli("train", folder_run.config).code == 0
    from pixelwise.engine import train as train_module

    monkeypatch.setattr(train_module, "train_one_epoch", _refuse)
    result = run_cli("train", folder_run.config, "train.epochs=2",
                     "data.options.classes=[sky,road]", "--resume", folder_run.out)
    assert_one_line_error(result, str(folder_run.out / "last.safetensors"), "classes",
                          "['class_0', 'class_1']", "['sky', 'road']")


def test_init_from_a_checkpoint_with_other_classes_names_it(folder_run, synthetic_run, run_cli,
                                                            no_training_step):
    source = synthetic_run / "last.safetensors"  # 5 classes; the folder data has 2
    result = run_cli("train", folder_run.config, f"model.init_from={source}")
    assert_one_line_error(result, str(source), "must have shape (2,), got (5,)")


def test_evaluate_on_data_with_other_classes_names_the_checkpoint(folder_run, synthetic_run,
                                                                 run_cli, tmp_path):
    checkpoint = synthetic_run / "best.safetensors"
    result = run_cli("evaluate", checkpoint, "--data", "folder", "--root", folder_run.root,
                     "--option", "classes=2", "--out", tmp_path / "eval")
    assert_one_line_error(result, str(checkpoint), "2 classes", "got 5")


def test_rgb_image_to_a_grey_model_is_named(folder_run, run_cli, tmp_path):
    checkpoint = _grey_checkpoint(folder_run, run_cli)
    image = folder_run.train / "images" / "rgb.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    result = run_cli("predict", checkpoint, image, "--out", tmp_path / "out")
    assert_one_line_error(result, str(image), "1 channel(s)", "got 3")


def test_grey_image_to_an_rgb_model_is_converted(synthetic_run, tmp_path):
    segmenter = Segmenter.from_checkpoint(synthetic_run / "best.safetensors", device="cpu")
    grey = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    np.testing.assert_array_equal(segmenter.predict(grey),
                                  segmenter.predict(np.repeat(grey[..., None], 3, axis=2)))


def _grey_checkpoint(folder_run, run_cli):
    for split, count, offset in (("train", 4, 0), ("val", 2, 10)):
        for i in range(count):
            name = f"img{i}" if split == "train" else f"val{i}"
            write_pair(folder_run.root / split, name, seed=offset + i, grey=True)
    assert run_cli("train", folder_run.config, "data.mean=[0.5]", "data.std=[0.25]").code == 0
    return folder_run.out / "last.safetensors"


def _refuse(*args, **kwargs):
    raise AssertionError("training started although the checkpoint does not fit")
