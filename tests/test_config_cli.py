"""Swapping the model from the command line, seeing the resolved configuration, and which
backbones have ImageNet weights here (issue 15, item 16), through `pixelwise.cli.main`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from pixelwise.cli import main
from pixelwise.config import Config, load_config, to_yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = ["data.options.n=4", "data.options.size=32", "data.batch_size=2", "data.val_batch_size=4",
        "train.epochs=1", "train.progress=false", "train.device=cpu"]


def test_model_name_on_the_command_line_replaces_the_file_options(tmp_path):
    argv = ["train", str(CONFIGS / "synthetic_demo.yaml"), "model.name=fcn8s",
            "model.options={backbone: mobilenet_v3_large}", f"train.out_dir={tmp_path}", *TINY]
    assert main(argv) == 0
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())["model"]
    assert saved["name"] == "fcn8s" and saved["options"] == {"backbone": "mobilenet_v3_large"}


def test_a_new_model_name_drops_the_file_options_even_when_options_come_first():
    config = load_config(CONFIGS / "synthetic_demo.yaml",
                         ["model.options.backbone=resnet18", "model.name=fcn32s"])
    assert config.model.options == {"backbone": "resnet18"}


def test_the_same_model_name_keeps_and_merges_the_file_options():
    config = load_config(CONFIGS / "synthetic_demo.yaml", ["model.name=unet",
                                                           "model.options.depth=2"])
    assert config.model.options == {"base_channels": 16, "depth": 2}


def test_a_whole_options_value_replaces_the_mapping():
    config = load_config(CONFIGS / "synthetic_demo.yaml", ["model.options={depth: 2}"])
    assert config.model.options == {"depth": 2}


def test_another_dataset_kind_drops_the_file_dataset_options(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {dataset: synthetic, options: {n: 8}}\n")
    config = load_config(path, ["data.dataset=folder", "data.root=x", "data.options.classes=2"])
    assert config.data.options == {"classes": 2}


def test_config_show_prints_the_resolved_yaml_with_every_default(capsys):
    assert main(["config", "show", str(CONFIGS / "synthetic_demo.yaml"), "train.epochs=3"]) == 0
    shown = capsys.readouterr().out
    expected = load_config(CONFIGS / "synthetic_demo.yaml", ["train.epochs=3"])
    assert shown == to_yaml(expected)
    assert "precise_bn: auto" in shown and "workers: auto" in shown  # defaults the file omits


def test_config_show_without_a_file_prints_the_defaults(capsys, tmp_path):
    assert main(["config", "show"]) == 0
    (tmp_path / "shown.yaml").write_text(capsys.readouterr().out)
    assert load_config(tmp_path / "shown.yaml") == Config()


def test_config_show_checks_what_it_shows(capsys):
    assert main(["config", "show", "train.metric=miou"]) == 2
    assert "try 'mean_iou'" in capsys.readouterr().err


def test_models_points_to_the_encoder_list_which_says_which_weights_are_cached(
        monkeypatch, tmp_path, capsys):
    import pixelwise.models.summary as summary
    from pixelwise.models.weights import cached_weights_path

    monkeypatch.setattr(summary, "STANDARD_CONFIGURATIONS",
                        [("unet", 2, {"base_channels": 4, "depth": 2})])
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    cached = cached_weights_path("resnet18")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert main(["models"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("pixelwise models --encoders [--filter STR]")
    assert main(["models", "--encoders", "--filter", "resnet"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert " cached " in lines["resnet18"] and lines["resnet18"].endswith("resnet18-f37072fd.pth")
    for backbone in ("resnet34", "resnet50"):
        assert "not cached" in lines[backbone]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_ask_for_no_more_workers_than_a_two_core_machine_has(path, monkeypatch):
    # The CamVid configs asked for 4 workers, and torch warned on 2 cores (issue 15, item 14).
    from pixelwise.device import SINGLE_PROCESS
    from pixelwise.engine.data_setup import loader_workers

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert loader_workers(load_config(path).data.workers, SINGLE_PROCESS) <= 2


def test_another_loss_drops_the_file_loss_options():
    # configs/isbi2012_cpu.yaml gives {w0, sigma} for unet_weighted_ce; plain cross-entropy
    # takes none, so keeping them ended in "options of loss 'ce' must be among []".
    config = load_config(CONFIGS / "isbi2012_cpu.yaml", ["optim.loss=ce"])
    assert (config.optim.loss, config.optim.loss_options) == ("ce", {})


def test_the_same_loss_keeps_and_merges_the_file_loss_options():
    config = load_config(CONFIGS / "isbi2012_cpu.yaml", ["optim.loss_options.w0=3"])
    assert config.optim.loss_options == {"w0": 3, "sigma": 5.0}


def test_a_whole_loss_options_value_replaces_the_mapping():
    config = load_config(CONFIGS / "isbi2012_cpu.yaml", ["optim.loss_options={w0: 3}"])
    assert config.optim.loss_options == {"w0": 3}
