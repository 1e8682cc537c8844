"""Settings, devices, checkpoints and commands that point the wrong way (issue 15, items 3 and
9-12): one line `error: ...` that says what was asked, what exists and what to try, before any
training step or scored image. The messages are the rows of docs/reliability.md, "Settings
checked before training"."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from sample_files import write_pair
from test_bad_input import assert_one_line_error


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine without a CUDA GPU, also where the tests run on one."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


# ---- item 3: every name a config gives is checked before the first step ----------------------

SETTING_MISTAKES = [
    ("train.metric=miou", "train.metric must be one of ['pixel_accuracy', 'mean_accuracy', "
                          "'mean_iou', 'fw_iou', 'mean_dice'], got 'miou'; try 'mean_iou'"),
    ("optim.loss=focall", "optim.loss must be one of ['ce', 'dice', 'ce_dice', 'focal', "
                           "'lovasz', 'ce_lovasz', 'unet_weighted_ce'], got 'focall'; try 'focal'"),
    ("data.augment.flip=0.5", "options of data.augment must be among ['colour_jitter', "
                              "'elastic', 'focus', 'focus_classes', 'hflip', 'paste', "
                              "'paste_classes', 'rotation', "
                              "'scale', 'vflip'], got unknown ['flip']; try 'vflip'"),
    ("data.options.clases=2", "options of dataset 'folder' must be among ['band_range', "
                              "'binary_masks', 'classes', 'colour_map', 'ignore_index', "
                              "'max_pixels', 'palette', 'strict'], got unknown ['clases']; try "
                              "'classes'"),
    ("model.options.dept=3", "options of model 'unet' must be among ['base_channels', "
                             "'batch_norm', 'decoder_channels', 'depth', 'encoder', 'in_channels', 'padding', "
                             "'pretrained_backbone', 'up_mode'], got unknown ['dept']; try "
                             "'depth'"),
    ("model.name=unte", "model name must be one of ['fcn16s', 'fcn32s', 'fcn4s', 'fcn8s', 'unet'], got "
                        "'unte'; try 'unet'"),
    ("data.dataset=camvidd", "dataset must be one of synthetic, folder, voc, camvid, isbi2012, "
                             "cityscapes, got 'camvidd'; try 'camvid'"),
    ("train.device=gpu", "device must be one of auto, cpu, cuda, cuda:N, mps, got 'gpu'; try "
                         "train.device=cuda"),
    ("data.workers=many", "data.workers must be 'auto' or an integer >= 0, got 'many'"),
]


@pytest.mark.parametrize(("override", "message"), SETTING_MISTAKES,
                         ids=[override for override, _ in SETTING_MISTAKES])
def test_a_misspelt_setting_is_refused_before_the_first_step(override, message, folder_run,
                                                             run_cli, no_training_step):
    assert_one_line_error(run_cli("train", folder_run.config, override), message)
    assert not folder_run.out.exists()


def test_a_misspelt_metric_in_a_python_config_is_refused_too(folder_run, no_training_step):
    from pixelwise.config import load_config
    from pixelwise.engine.train import train
    from pixelwise.errors import ConfigError

    config = load_config(folder_run.config)
    config.train.metric = "miou"  # set after loading: train() checks again
    with pytest.raises(ConfigError, match="try 'mean_iou'"):
        train(config)


# ---- item 9: a device this machine does not have ---------------------------------------------

@pytest.mark.parametrize("device", ["cuda", "cuda:3"])
def test_train_on_a_gpu_the_machine_lacks_says_what_exists(device, folder_run, run_cli, no_gpu,
                                                          no_training_step):
    assert_one_line_error(run_cli("train", folder_run.config, f"train.device={device}"),
                          f"device {device!r} must be a GPU of this machine, got none",
                          "devices here: cpu; try train.device=cpu (or auto)")


@pytest.mark.parametrize("command", ["evaluate", "predict"])
@pytest.mark.parametrize(("device", "message"), [
    ("cuda", "device 'cuda' must be a GPU of this machine, got none"),
    ("cuda:3", "device 'cuda:3' must be a GPU of this machine, got none"),
    ("gpu", "device must be one of auto, cpu, cuda, cuda:N, mps, got 'gpu'; try --device cuda"),
    ("bogus", "got 'bogus'; try --device auto"),
])
def test_device_flag_naming_no_device_here_is_one_line(command, device, message, synthetic_run,
                                                       tmp_path, run_cli, no_gpu):
    best = synthetic_run / "best.safetensors"
    if command == "evaluate":
        argv = ["evaluate", best, "--data", "synthetic", "--option", "n=2"]
    else:
        write_pair(tmp_path, "a", seed=0)
        argv = ["predict", best, tmp_path / "images", "--out", tmp_path / "out"]
    assert_one_line_error(run_cli(*argv, "--device", device), message)


# ---- item 10: evaluate checks channels and class names up front ------------------------------

def test_evaluate_of_a_grey_checkpoint_on_rgb_data_names_both_channel_counts(
        folder_run, run_cli, tmp_path):
    grey = tmp_path / "grey"
    for i in range(2):
        write_pair(grey / "train", f"g{i}", seed=i, grey=True)
        write_pair(grey / "val", f"g{i}", seed=i, grey=True)
    grey_stats = ["data.mean=[0.5]", "data.std=[0.25]"]
    assert run_cli("train", folder_run.config, f"data.root={grey}", *grey_stats).code == 0
    best = folder_run.out / "best.safetensors"
    result = run_cli("evaluate", best, "--data", "folder", "--root", folder_run.root,
                     "--option", "classes=2")
    assert_one_line_error(result, f"checkpoint {best} must take 3-channel images like the folder "
                                  "data's, got a model of 1-channel images")


@pytest.fixture
def cell_run(folder_run, run_cli) -> Path:
    """A run trained with the classes `background, cell`; returns its best checkpoint."""
    assert run_cli("train", folder_run.config, "data.options.classes=[background, cell]").code == 0
    return folder_run.out / "best.safetensors"


def test_evaluate_with_other_class_names_warns_naming_both(cell_run, folder_run, run_cli, caplog):
    with caplog.at_level(logging.WARNING, logger="pixelwise"):
        result = run_cli("evaluate", cell_run, "--data", "folder", "--root", folder_run.root,
                         "--option", "classes=[membrane, cell]")
    assert result.code == 0
    assert (f"checkpoint {cell_run} names its classes ['background', 'cell'], the folder data "
            "['membrane', 'cell']: scoring class i of one as class i of the other") in caplog.text


def test_evaluate_strict_refuses_other_class_names(cell_run, folder_run, run_cli):
    result = run_cli("evaluate", cell_run, "--data", "folder", "--root", folder_run.root,
                     "--option", "classes=[membrane, cell]", "--strict")
    assert_one_line_error(result, f"checkpoint {cell_run} must name the folder data's classes "
                                  "['membrane', 'cell'], got ['background', 'cell']")
    assert not (cell_run.parent / "eval-val").exists()


# ---- item 11: messages that pointed the wrong way --------------------------------------------

def _torchscript(path: Path) -> Path:
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 2, 1)), str(path))
    return path


@pytest.mark.parametrize(("make", "kind"), [
    (lambda run, tmp: tmp.joinpath("model.onnx").write_bytes(b"\x08\x07") and tmp / "model.onnx",
     "got an ONNX model (from pixelwise export)"),
    (lambda run, tmp: _torchscript(tmp / "model.pt"), "got a TorchScript module"),
    (lambda run, tmp: run / "last.state.pt", "got a training state file"),
])
def test_evaluate_of_another_format_says_which_formats_it_takes(make, kind, synthetic_run,
                                                                tmp_path, run_cli):
    path = make(synthetic_run, tmp_path)
    result = run_cli("evaluate", path, "--data", "synthetic")
    assert_one_line_error(result, f"checkpoint {path} must be a .safetensors weights file written "
                                  "by pixelwise train", kind,
                          "try the best.safetensors or last.safetensors of its run")


def test_resume_of_a_folder_that_does_not_exist_says_so(run_cli, tmp_path):
    result = run_cli("train", "--resume", tmp_path / "nope")
    assert_one_line_error(result, f"--resume must name an existing run folder, got "
                                  f"'{tmp_path / 'nope'}' (no such folder)")


def test_evaluate_without_root_says_root_is_missing(synthetic_run, run_cli):
    result = run_cli("evaluate", synthetic_run / "best.safetensors", "--data", "isbi2012")
    assert_one_line_error(result, "dataset 'isbi2012' needs its folder, got no root; try --root "
                                  "PATH")


def test_missing_classes_hint_is_spelt_for_the_config(folder_run, run_cli, no_training_step):
    config = folder_run.config.read_text().replace("options: {classes: 2}", "options: {}")
    folder_run.config.write_text(config)
    assert_one_line_error(run_cli("train", folder_run.config),
                          "dataset 'folder' needs the option(s) classes, got none; try "
                          "data.options.classes=3")


def test_missing_classes_hint_is_spelt_for_the_command_line(folder_run, run_cli):
    assert_one_line_error(run_cli("data", "check", folder_run.root, "--dataset", "folder"),
                          "dataset 'folder' needs the option(s) classes, got none; try "
                          "--option classes=3")


@pytest.mark.parametrize("command", ["data check", "evaluate"])
def test_a_misspelt_dataset_kind_suggests_the_closest(command, synthetic_run, run_cli, tmp_path):
    argv = (["data", "check", tmp_path, "--dataset", "camvidd"] if command == "data check" else
            ["evaluate", synthetic_run / "best.safetensors", "--data", "camvidd", "--root",
             tmp_path])
    assert_one_line_error(run_cli(*argv), "got 'camvidd'; try 'camvid'")


# ---- item 12: resuming a finished run --------------------------------------------------------

def test_resuming_a_finished_run_says_it_is_complete_and_how_to_extend_it(
        folder_run, run_cli, caplog, monkeypatch):
    assert run_cli("train", folder_run.config).code == 0
    from pixelwise.engine import train as train_module

    monkeypatch.setattr(train_module, "train_one_epoch", _refuse)
    with caplog.at_level(logging.INFO, logger="pixelwise"):
        result = run_cli("train", "--resume", folder_run.out)
    assert result.code == 0
    assert (f"run {folder_run.out} is complete: it has trained 1 of train.epochs=1 epochs, "
            "nothing is left to train; to train longer, resume with more epochs: pixelwise train "
            f"--resume {folder_run.out} train.epochs=2") in caplog.text
    assert "resuming from epoch" not in caplog.text


def _refuse(*args, **kwargs):
    raise AssertionError("a finished run trained again")
