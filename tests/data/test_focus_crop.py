"""Rare-class-aware crop sampling (`FocusCrop`, `data.augment.focus_classes`): crops hold the
listed classes as often as asked, placed uniformly otherwise."""

import pytest
import torch
from torchvision import tv_tensors

from pixelwise.config import DataConfig
from pixelwise.data import open_dataset
from pixelwise.data.info import class_ids_of
from pixelwise.data.transforms import FocusCrop, train_preset
from pixelwise.engine.data_setup import open_split
from pixelwise.errors import ConfigError

FILL = {tv_tensors.Image: 0.0, tv_tensors.Mask: 255}


def one_rare_pixel(size: int = 64, at: tuple[int, int] = (5, 50)) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.int64)
    mask[at] = 3
    return mask


def crops_holding(crop: FocusCrop, mask: torch.Tensor, value: int, draws: int = 200) -> float:
    torch.manual_seed(0)
    held = 0
    for _ in range(draws):
        out = crop(tv_tensors.Mask(mask))
        assert out.shape == crop.size
        held += int((out == value).any())
    return held / draws


def test_every_crop_holds_the_rare_pixel_at_focus_one():
    assert crops_holding(FocusCrop((16, 16), [3], 1.0, FILL), one_rare_pixel(), 3) == 1.0


def test_without_focus_a_16_px_crop_of_64_px_holds_it_at_the_uniform_rate():
    # A uniform crop start 0..48 holds row 5 for starts 0..5 (6 of 49) and column 50 for 35..48
    # (14 of 49): 6 * 14 / 49^2 = 3.5 % of crops.
    share = crops_holding(FocusCrop((16, 16), [3], 0.0, FILL), one_rare_pixel(), 3, draws=2000)
    assert share == pytest.approx(6 * 14 / 49**2, abs=0.015)


def test_the_rare_pixel_lands_anywhere_in_the_crop_not_only_at_its_centre():
    torch.manual_seed(0)
    places = set()
    crop = FocusCrop((16, 16), [3], 1.0, FILL)
    for _ in range(300):
        rows, cols = (crop(tv_tensors.Mask(one_rare_pixel(at=(30, 30)))) == 3).nonzero(
            as_tuple=True)
        places.add((int(rows[0]), int(cols[0])))
    assert len(places) > 100  # of the 256 places, far from a fixed one


def test_present_classes_are_drawn_uniformly_so_a_tiny_one_gets_its_share():
    mask = one_rare_pixel()
    mask[32:, :] = 1  # class 1 fills half the image, class 3 one pixel
    share = crops_holding(FocusCrop((16, 16), [1, 3], 1.0, FILL), mask, 3, draws=400)
    assert share == pytest.approx(0.5, abs=0.1)


def test_images_smaller_than_the_crop_are_padded_with_ignore():
    out = FocusCrop((16, 16), [3], 1.0, FILL)(tv_tensors.Mask(one_rare_pixel(size=8, at=(2, 2))))
    assert out.shape == (16, 16) and int((out == 3).sum()) == 1 and int((out == 255).sum()) > 0


def test_a_mask_without_the_classes_is_cropped_as_random_crop_does():
    out = FocusCrop((16, 16), [4], 1.0, FILL)(tv_tensors.Mask(one_rare_pixel()))
    assert out.shape == (16, 16)


def test_focus_must_be_a_probability_and_focus_classes_needs_a_crop():
    with pytest.raises(ConfigError, match=r"focus must be a probability in \[0, 1\], got 1.5"):
        FocusCrop(16, [3], 1.5, FILL)
    with pytest.raises(ConfigError, match=r"focus must be a probability in \[0, 1\], got 2"):
        train_preset(16, mean=(0.5,), std=(0.5,), focus=2)  # refused, not ignored
    with pytest.raises(ConfigError, match="focus_classes places crops, so it needs a crop size"):
        train_preset(None, mean=(0.5,), std=(0.5,), focus_classes=[3])


def test_class_ids_of_takes_names_in_any_case_and_ids_and_suggests_the_closest_name():
    classes = ["Sky", "Building", "Pole"]
    assert class_ids_of("focus", ["pole", 1, "SKY"], classes) == (2, 1, 0)
    with pytest.raises(ConfigError, match=r"focus must hold class names \['Sky', 'Building', "
                                          r"'Pole'\] or ids 0..2, got 'Poles'; try 'Pole'"):
        class_ids_of("focus", ["Poles"], classes)
    with pytest.raises(ConfigError, match="got 3"):
        class_ids_of("focus", [3], classes)


def test_the_config_names_classes_and_the_training_split_focuses_on_them():
    config = DataConfig(dataset="synthetic", crop_size=8, options={"n": 4, "size": 32},
                        augment={"focus_classes": ["line"], "focus": 1.0, "hflip": 0.0})
    train, plain = open_split(config, "train", train=True), open_dataset("synthetic", "",
                                                                         "train", n=4, size=32)
    torch.manual_seed(0)
    with_lines = [i for i in range(4) if (plain[i][1] == 4).any()]  # "line" is class 4
    assert len(with_lines) >= 2 and all((train[i][1] == 4).any() for i in with_lines)
    config.augment["focus_classes"] = ["lines"]
    with pytest.raises(ConfigError, match="data.augment.focus_classes .* got 'lines'; try 'line'"):
        open_split(config, "train", train=True)
