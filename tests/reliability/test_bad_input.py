"""Bad input through `pixelwise train` / `predict` / `evaluate`: one line naming the file and
the problem, exit status 2, no traceback, and found before any training step (issue 7)."""

from __future__ import annotations

import multiprocessing
import shutil

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from sample_files import png_bomb, write_pair

from pixelwise.data import FolderDataset
from pixelwise.data.io import MAX_PIXELS, read_image
from pixelwise.errors import DataError


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.code == 2, result.err
    assert result.err.startswith("error: "), result.err
    assert "\n" not in result.err and "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in result.err, (fragment, result.err)


def test_truncated_image_is_named_before_training(folder_run, run_cli, no_training_step):
    image = folder_run.train / "images" / "img0.png"
    image.write_bytes(image.read_bytes()[:200])
    assert_one_line_error(run_cli("train", folder_run.config), str(image), "truncated")
    assert not (folder_run.out / "last.safetensors").exists()


def test_unreadable_image_is_named_before_training(folder_run, run_cli, no_training_step):
    image = folder_run.train / "images" / "img0.png"
    image.write_bytes(b"this is not a PNG")
    assert_one_line_error(run_cli("train", folder_run.config), str(image), "readable image")


def test_mask_of_another_size_is_named_with_both_sizes(folder_run, run_cli, no_training_step):
    mask = folder_run.train / "masks" / "img1.png"
    Image.fromarray(np.zeros((30, 32), np.uint8)).save(mask)
    assert_one_line_error(run_cli("train", folder_run.config), str(mask), "(32, 32)", "(30, 32)")


def test_mask_value_neither_class_nor_ignore_is_named(folder_run, run_cli, no_training_step):
    mask = folder_run.train / "masks" / "img1.png"
    values = np.zeros((32, 32), np.uint8)
    values[0, :3] = (1, 7, 255)  # 1 is a class and 255 the ignore index: only 7 is wrong
    Image.fromarray(values).save(mask)
    assert_one_line_error(run_cli("train", folder_run.config), str(mask), "got [7]")


def test_rgb_mask_without_colour_map_is_refused(folder_run, run_cli, no_training_step):
    mask = folder_run.train / "masks" / "img0.png"
    colours = np.zeros((32, 32, 3), np.uint8)
    colours[:16] = (255, 0, 0)
    Image.fromarray(colours).save(mask)
    assert_one_line_error(run_cli("train", folder_run.config), str(mask), "colour_map")


def test_rgb_mask_colour_missing_from_colour_map_is_listed(tmp_path):
    write_pair(tmp_path, "a", seed=0)
    mask = tmp_path / "masks" / "a.png"
    colours = np.zeros((32, 32, 3), np.uint8)
    colours[:4] = (255, 0, 0)
    colours[4:6] = (0, 9, 200)  # not in the map
    Image.fromarray(colours).save(mask)
    data = FolderDataset(tmp_path / "images", tmp_path / "masks", 2,
                         colour_map={(0, 0, 0): 0, (255, 0, 0): 1})
    with pytest.raises(DataError, match=r"a\.png: every mask colour must be in the colour_map, "
                                        r"got unknown colours \[\(0, 9, 200\)\]"):
        data[0]


def test_empty_folder_is_named(folder_run, run_cli, no_training_step):
    for name in ("images", "masks"):
        shutil.rmtree(folder_run.train / name)
        (folder_run.train / name).mkdir()
    assert_one_line_error(run_cli("train", folder_run.config),
                          str(folder_run.train / "images"), "got none")


def test_image_without_mask_is_named(folder_run, run_cli, no_training_step):
    (folder_run.train / "masks" / "img3.png").unlink()
    assert_one_line_error(run_cli("train", folder_run.config),
                          str(folder_run.train / "images" / "img3.png"), "without a partner")


def test_unknown_config_key_lists_the_valid_keys(folder_run, run_cli, no_training_step):
    result = run_cli("train", folder_run.config, "train.epoch=3")
    assert_one_line_error(result, "'train.epoch'", "valid keys:", "train.epochs",
                          "train.skip_nonfinite")


def test_unknown_key_in_the_yaml_file_names_the_file(folder_run, run_cli, no_training_step):
    folder_run.config.write_text(folder_run.config.read_text() + "  learning_rate: 0.1\n")
    assert_one_line_error(run_cli("train", folder_run.config), str(folder_run.config),
                          "'train.learning_rate'", "train.epochs")


def test_wrong_value_type_is_refused(folder_run, run_cli, no_training_step):
    assert_one_line_error(run_cli("train", folder_run.config, "data.batch_size=two"),
                          "'data.batch_size'", "'two'")


def test_num_classes_disagreeing_with_the_data_is_refused(folder_run, run_cli, no_training_step):
    assert_one_line_error(run_cli("train", folder_run.config, "model.num_classes=3"),
                          "model.num_classes", "class count 2", str(folder_run.root), "got 3")


def test_decompression_bomb_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(100_000, 100_000))  # 10 gigapixels claimed in 200 bytes
    with pytest.raises(DataError, match=rf"bomb\.png: images must have at most "
                                        rf"max_pixels={MAX_PIXELS} pixels .* got 10000000000"):
        read_image(bomb)


def test_pixel_limit_is_an_option_of_the_data(folder_run, run_cli, no_training_step):
    """32x32 = 1024 pixels: refused at max_pixels=1000, named in the message."""
    result = run_cli("train", folder_run.config, "data.options.max_pixels=1000")
    assert_one_line_error(result, "img0.png", "max_pixels=1000", "got 1024")


def test_raised_pixel_limit_lets_the_image_through(folder_run, run_cli):
    assert run_cli("train", folder_run.config, "data.options.max_pixels=1024").code == 0


def test_grey_image_in_an_rgb_folder_is_converted_and_trains(folder_run, run_cli):
    write_pair(folder_run.train, "img1", seed=1, grey=True)
    grey = np.asarray(Image.open(folder_run.train / "images" / "img1.png"))
    image, _ = FolderDataset(folder_run.train / "images", folder_run.train / "masks", 2)[1]
    for band in image:
        np.testing.assert_allclose(band.numpy(), grey / 255.0, rtol=1e-6)
    assert run_cli("train", folder_run.config).code == 0


def test_rgb_image_in_a_grey_folder_is_named(folder_run, run_cli, no_training_step):
    """The first image makes the folder grey (1 channel); an RGB one after it is refused."""
    for i in (0, 2, 3):
        write_pair(folder_run.train, f"img{i}", seed=i, grey=True)
    for i in range(2):
        write_pair(folder_run.root / "val", f"val{i}", seed=10 + i, grey=True)
    result = run_cli("train", folder_run.config, "data.mean=[0.5]", "data.std=[0.25]")
    assert_one_line_error(result, str(folder_run.train / "images" / "img1.png"),
                          "must have 1 channel(s), got 3")


def test_16_bit_tiff_is_scaled_by_its_1st_and_99th_percentiles(tmp_path):
    write_pair(tmp_path, "a", seed=0)
    values = np.random.default_rng(1).integers(0, 60_000, (32, 32), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "images" / "a.tif", values)
    (tmp_path / "images" / "a.png").unlink()
    image, _ = FolderDataset(tmp_path / "images", tmp_path / "masks", 2)[0]
    low, high = np.percentile(values.astype(np.float64), [1, 99])
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32  # contract: float32
    np.testing.assert_allclose(image[0].numpy(), (values - low) / (high - low), rtol=1e-4,
                               atol=1e-5)


def test_float_tiff_is_read_as_already_scaled(tmp_path):
    write_pair(tmp_path, "a", seed=0)
    values = np.random.default_rng(2).random((32, 32, 3)).astype(np.float32)
    tifffile.imwrite(tmp_path / "images" / "a.tif", values, photometric="rgb")
    (tmp_path / "images" / "a.png").unlink()
    image, _ = FolderDataset(tmp_path / "images", tmp_path / "masks", 2)[0]
    assert torch.equal(image, torch.from_numpy(values.transpose(2, 0, 1).copy()))


def test_damaged_file_read_in_a_loader_worker_still_gives_one_line(folder_run, run_cli):
    """Past the quick check's first samples a file is read by a DataLoader worker process,
    which re-raises our error with its own traceback inside the message."""
    for i in range(4, 8):
        write_pair(folder_run.train, f"img{i}", seed=i)
    image = folder_run.train / "images" / "img7.png"
    image.write_bytes(image.read_bytes()[:200])
    result = run_cli("train", folder_run.config, "data.workers=1")
    assert_one_line_error(result, str(image), "truncated")
    # the worker is stopped on the way out, not by a garbage collection that would wait 5 s
    assert multiprocessing.active_children() == []


def test_float_tiff_with_nan_is_refused_before_training(folder_run, run_cli, no_training_step):
    values = np.random.default_rng(3).random((32, 32, 3)).astype(np.float32)
    values[5, 7, 1], values[0, 0, 0] = np.nan, np.inf  # e.g. no-data pixels of a scene
    image = folder_run.train / "images" / "img0.tif"
    tifffile.imwrite(image, values, photometric="rgb")
    (folder_run.train / "images" / "img0.png").unlink()
    assert_one_line_error(run_cli("train", folder_run.config), str(image),
                          "must be finite, got 1 NaN and 1 infinite")


@pytest.mark.parametrize(("damage", "fragment"), [
    ("not an image", "readable image"),
    ("mask size", "got (30, 32)"),
    ("bomb", "got 10000000000"),
])
def test_header_problems_past_the_first_samples_are_found_at_start(
        folder_run, run_cli, no_training_step, damage, fragment):
    """The quick check decodes three pairs but reads every pair's headers."""
    for i in range(4, 8):
        write_pair(folder_run.train, f"img{i}", seed=i)
    image, mask = (folder_run.train / kind / "img7.png" for kind in ("images", "masks"))
    if damage == "not an image":
        image.write_bytes(b"\x89PNG but not really")
    elif damage == "mask size":
        Image.fromarray(np.zeros((30, 32), np.uint8)).save(mask)
    else:
        image.write_bytes(png_bomb(100_000, 100_000))
    named = mask if damage == "mask size" else image
    assert_one_line_error(run_cli("train", folder_run.config), str(named), fragment)


def test_yaml_syntax_error_is_one_line_naming_the_file(folder_run, run_cli, no_training_step):
    folder_run.config.write_text("train:\n  epochs: [1\n")
    assert_one_line_error(run_cli("train", folder_run.config), str(folder_run.config),
                          "must be valid YAML", "line 3, column 1")
