"""Configuration: defaults, YAML files, key=value overrides and their errors."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from pixelwise.config import Config, load_config, to_yaml
from pixelwise.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_without_file():
    assert load_config() == Config()


def test_yaml_file_then_overrides_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.5\n  name: adamw\ntrain:\n  epochs: 3\n")
    config = load_config(path, ["optim.lr=0.01", "model.options.base_channels=8",
                                "data.mean=[0.1,0.2,0.3]", "data.std=[1,1,1]"])
    assert config.optim.lr == 0.01 and config.optim.name == "adamw"
    assert config.train.epochs == 3
    assert config.model.options == {"base_channels": 8}
    assert config.data.mean == [0.1, 0.2, 0.3]


def test_unknown_key_lists_the_valid_keys_of_its_section():
    with pytest.raises(ConfigError, match="optim.lrr") as err:
        load_config(None, ["optim.lrr=0.1"])
    assert "optim.lr," in str(err.value) and "optim.momentum" in str(err.value)


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(path)


@pytest.mark.parametrize("override", ["train.epochs=three", "optim.lr=fast", "train.amp=maybe",
                                      "data.mean=0.5"])
def test_wrong_type_is_a_config_error(override):
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        load_config(None, [override])


@pytest.mark.parametrize("override", ["optim.name=adam", "optim.schedule=step", "train.epochs=0",
                                      "data.class_weights=balanced", "data.mean=[0.5]"])
def test_out_of_range_values_are_config_errors(override):
    with pytest.raises(ConfigError):
        load_config(None, [override])


def test_class_weights_by_name_are_auto_or_sqrt():
    assert load_config(None, ["data.class_weights=sqrt"]).data.class_weights == "sqrt"
    with pytest.raises(ConfigError, match=r"one of \['auto', 'sqrt'\].*got 'balanced'"):
        load_config(None, ["data.class_weights=balanced"])


def test_override_without_equals_sign_is_rejected():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["optim.lr"])


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_saved_yaml_loads_back_to_the_same_config(tmp_path):
    config = load_config(None, ["optim.lr=0.123", "data.class_weights=auto",
                                "model.init_from=runs/a/best.safetensors"])
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(config))
    assert load_config(path) == config


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_config(path)
    assert config.model.name


def test_fcn_voc_stages_initialise_from_the_previous_stage():
    assert load_config(CONFIGS / "fcn16s_voc.yaml").model.init_from.endswith(".safetensors")
    assert "fcn16s" in load_config(CONFIGS / "fcn8s_voc.yaml").model.init_from


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_name_real_models_datasets_and_losses(path):
    from pixelwise.data import KINDS
    from pixelwise.data.transforms import train_preset
    from pixelwise.losses import LOSSES
    from pixelwise.models import model_options

    config = load_config(path)
    assert set(config.model.options) <= set(model_options(config.model.name))
    assert config.data.dataset in KINDS and config.optim.loss in LOSSES
    assert set(config.data.augment) <= set(inspect.signature(train_preset).parameters)
