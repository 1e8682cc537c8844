from pathlib import Path

import pytest
import torch

from pixelwise.config import load_config
from pixelwise.errors import ConfigError
from pixelwise.models import PRESETS, build, preset

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_config_trains_the_presets_model(name):
    config = load_config(CONFIGS.parent / PRESETS[name].config)
    assert (config.model.name, config.model.options) == preset(name)


def test_realtime_preset_is_fcn4s_on_mobilenet_v3_with_a_refined_skip_and_keeps_the_input_size():
    name, options = preset("realtime")
    model = build(name, 11, **options).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 45, 61)).shape == (1, 11, 45, 61)
    assert (name, options) == ("fcn4s", {"backbone": "mobilenet_v3_large", "refine": 32})


def test_preset_returns_a_copy_of_its_options():
    preset("realtime")[1]["backbone"] = "vgg16"
    assert preset("realtime")[1]["backbone"] == "mobilenet_v3_large"


def test_unknown_preset_is_a_config_error_listing_the_presets():
    with pytest.raises(ConfigError, match=r"preset must be one of \['realtime'\], got 'fast'"):
        preset("fast")
