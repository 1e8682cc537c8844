import numpy as np
import pytest
from torch import nn

from pixelwise.errors import ConfigError
from pixelwise.models import available, build, model_options
from pixelwise.models.registry import register


def test_available_lists_the_paper_models():
    assert "unet" in available()


def test_unknown_name_raises_config_error_listing_the_names():
    with pytest.raises(ConfigError, match=r"model name must be one of .*'unet'.*got 'unte'"):
        build("unte", num_classes=2)


def test_unknown_option_raises_config_error_listing_the_valid_ones():
    with pytest.raises(
        ConfigError, match=r"must be among .*'base_channels'.*got unknown \['base_chanels'\]"
    ):
        build("unet", num_classes=2, base_chanels=8)


@pytest.mark.parametrize("num_classes", [0, -1, 2.0, True, "2"])
def test_bad_num_classes_raises_config_error(num_classes):
    with pytest.raises(ConfigError, match="num_classes must be an integer >= 1"):
        build("unet", num_classes=num_classes, base_channels=4, depth=1)


def test_bad_option_value_raises_config_error():
    with pytest.raises(ConfigError, match="up_mode must be one of"):
        build("unet", num_classes=2, up_mode="nearest")


def test_duplicate_registration_raises():
    with pytest.raises(ConfigError, match="'unet' twice"):
        register("unet")(lambda *, num_classes: nn.Identity())


@pytest.mark.parametrize("name", available())
def test_every_model_accepts_in_channels(name):
    assert "in_channels" in model_options(name)


def test_numpy_integer_num_classes_is_accepted():
    model = build("unet", num_classes=np.int64(4), base_channels=4, depth=1)
    assert model.head.out_channels == 4 and type(model.head.out_channels) is int


def test_model_geometry_of_a_spec_is_the_built_models_without_reading_weights():
    from pixelwise.models import Geometry, model_geometry

    valid = {"in_channels": 1, "base_channels": 4, "depth": 2, "padding": "valid"}
    assert model_geometry("unet", 2, **valid) == build("unet", 2, **valid).geometry
    assert model_geometry("unet", 2, **valid) == Geometry(align=4, border=20, smallest_input=44)
    # no ImageNet file is read (nor downloaded): weights change no shape
    assert model_geometry("fcn8s", 21, backbone="resnet18", pretrained_backbone=True) == Geometry(
        align=32)
