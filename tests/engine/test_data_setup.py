"""From the data config to datasets: normalisation, class weights, target cropping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelwise.config import DataConfig
from pixelwise.data import SyntheticShapes, open_dataset
from pixelwise.engine.data_setup import class_weights_for, match_target, normalisation, open_split
from pixelwise.errors import ConfigError


def test_auto_class_weights_are_segnet_median_frequency_of_the_training_masks():
    # SegNet: freq(c) = pixels of c / pixels of the images that contain c; w = median(freq) / freq.
    config = DataConfig(dataset="synthetic", class_weights="auto", options={"n": 6, "size": 32})
    train = open_dataset("synthetic", "", "train", n=6, size=32)
    counts, image_pixels = np.zeros(5), np.zeros(5)
    for _, mask in train:
        per_class = np.bincount(mask.numpy().ravel(), minlength=5)
        counts += per_class
        image_pixels += (per_class > 0) * mask.numel()
    frequency = counts / image_pixels
    np.testing.assert_allclose(class_weights_for(config, 5, train),
                               np.median(frequency) / frequency)
    config.class_weights = "sqrt"  # the softer balance: their square roots
    np.testing.assert_allclose(class_weights_for(config, 5, train),
                               np.sqrt(np.median(frequency) / frequency))


def test_auto_class_weights_of_an_opened_training_set_ignore_its_augmentation():
    config = DataConfig(dataset="synthetic", class_weights="auto", crop_size=16,
                        options={"n": 6, "size": 32})
    train_set = open_split(config, "train", train=True)
    plain = open_dataset("synthetic", "", "train", n=6, size=32)
    assert class_weights_for(config, 5, train_set) == class_weights_for(config, 5, plain)
    assert train_set.transforms is not None and train_set[0][1].shape == (16, 16)


def test_explicit_class_weights_must_have_one_per_class():
    train = SyntheticShapes(n=1, size=32)
    assert class_weights_for(DataConfig(class_weights=[1, 2, 3]), 3, train) == [1.0, 2.0, 3.0]
    with pytest.raises(ConfigError, match="one weight per class"):
        class_weights_for(DataConfig(class_weights=[1, 2]), 3, train)


def test_normalisation_must_match_the_channel_count():
    info = SyntheticShapes(n=1, size=32).info
    assert normalisation(DataConfig(mean=[0.1, 0.2, 0.3], std=[1, 1, 1]), info)[0] == [0.1, 0.2, 0.3]
    with pytest.raises(ConfigError, match="one value per image channel"):
        normalisation(DataConfig(mean=[0.5], std=[0.2]), info)


def test_validation_split_is_only_normalised():
    config = DataConfig(dataset="synthetic", mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25],
                        options={"n": 2, "size": 32})
    image, mask = open_split(config, "val", train=False)[0]
    raw_image, raw_mask = open_dataset("synthetic", "", "val", n=2, size=32)[0]
    torch.testing.assert_close(image, (raw_image - 0.5) / 0.25)
    assert torch.equal(mask, raw_mask)


def test_training_crop_size_comes_from_the_config():
    config = DataConfig(dataset="synthetic", crop_size=[16, 24], options={"n": 2, "size": 32})
    image, mask = open_split(config, "train", train=True)[0]
    assert image.shape == (3, 16, 24) and mask.shape == (16, 24)


def test_match_target_takes_the_centre_for_a_smaller_output():
    target = torch.arange(36).view(1, 6, 6)
    assert torch.equal(match_target(target, torch.zeros(1, 3, 2, 2)), target[:, 2:4, 2:4])
    assert match_target(target, torch.zeros(1, 3, 6, 6)) is target


@pytest.mark.parametrize(("cores", "world_size", "workers"), [(1, 1, 0), (2, 1, 1), (16, 2, 7),
                                                              (64, 1, 8)])
def test_auto_workers_are_the_cores_this_process_may_use_less_one(cores, world_size, workers,
                                                                  monkeypatch):
    from pixelwise.device import DistInfo
    from pixelwise.engine.data_setup import loader_workers

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert loader_workers("auto", DistInfo(world_size=world_size)) == workers
    assert loader_workers(3, DistInfo(world_size=world_size)) == 3  # as asked


def test_workers_default_to_auto():
    assert DataConfig().workers == "auto"
