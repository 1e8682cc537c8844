"""Every documented mistake through `pixelwise.cli.main`: one line `error: ...` on stderr that
names the problem, exit status 2, no traceback (docs/cli.md). Mistakes in the files themselves
(damaged images, bad masks, planted checkpoints: docs/reliability.md) go through the same
`main` in tests/reliability with the same assertion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reliability.sample_files import SYNTHETIC_CONFIG, train_synthetic_run

from pixelwise.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished one-epoch tiny run; its folder holds `best.safetensors`."""
    return train_synthetic_run(tmp_path_factory.mktemp("tiny") / "run")


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of `main(argv)`; argparse's own mistakes raise SystemExit."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(code: int, err: str, fragment: str) -> None:
    """Status 2, and stderr ends with its one `error:` line (a progress bar may come before)."""
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.endswith(errors[0] + "\n"), err
    assert "Traceback" not in err and fragment in errors[0], (fragment, err)


SYNTHETIC_CHECK = ["data", "check", "{tmp}", "--dataset", "synthetic"]

MISTAKES = [
    # data check: dataset kind, options, folders
    (SYNTHETIC_CHECK + ["--option", "n=-1"], "n must be an integer >= 0, got -1"),
    (SYNTHETIC_CHECK + ["--option", "n=many"], "n must be an integer >= 0, got 'many'"),
    (SYNTHETIC_CHECK + ["--option", "size=8"], "size must be H = W or (H, W)"),
    (SYNTHETIC_CHECK + ["--option", "nn=3"], "options of dataset 'synthetic' must be among"),
    (SYNTHETIC_CHECK + ["--option", "n"], "options must look like key=value"),
    (SYNTHETIC_CHECK + ["--option", "n=[1"], "must be valid YAML"),
    (SYNTHETIC_CHECK + ["--split", "nope"], "split must be one of train, val, test"),
    (["data", "check", "{tmp}", "--dataset", "nope"], "dataset must be one of"),
    (["data", "check", "{tmp}/nowhere", "--dataset", "camvid"], "the folder must exist"),
    (["data", "check", "{tmp}", "--dataset", "folder"], "'folder' needs the option(s) classes"),
    (["data", "check", "{tmp}", "--dataset", "folder", "--option", "classes=0"],
     "classes must be an integer >= 1, got 0"),
    (["data", "check", "{tmp}", "--dataset", "folder", "--option", "classes=2", "--option",
      "strict=true"], "must not include strict"),
    # train: config file, overrides, model, dataset (docs/training.md)
    (["train", "{config}", "optim.lrr=0.1"], "got 'optim.lrr' in override 'optim.lrr=0.1'"),
    (["train", "{config}", "train.epochs=many"], "config value for 'train.epochs'"),
    (["train", "{config}", "train.epochs=${nothing}"], "must resolve to a value"),
    (["train", "{config}", "model.name=nope"], "model name must be one of"),
    (["train", "{config}", "model.options.depthh=3"], "options of model 'unet' must be among"),
    (["train", "{config}", "data.dataset=nope"], "dataset must be one of"),
    (["train", "{config}", "data.options.n=-1"], "n must be an integer >= 0, got -1"),
    (["train", "{config}", "optim.lr=0"], "optim.lr must be positive"),
    (["train", "{config}", "optim.loss=nope"], "loss must be one of"),
    (["train", "missing.yaml"], "config file must exist, got 'missing.yaml'"),
    (["train", "{tmp}/list.yaml"], "must hold a mapping of sections"),
    (["train", "{tmp}/broken.yaml"], "must be valid YAML"),
    (["train"], "train needs a CONFIG file"),
    (["train", "{config}", "--resume", "no-such-run"], "no-such-run"),
    (["train", "{config}", "train.out_dir={run}"], "must be empty for a new run"),
    # evaluate, predict, export: checkpoints and inputs
    (["evaluate", "missing.safetensors", "--data", "synthetic"], "missing.safetensors"),
    (["evaluate", "{run}/best.safetensors", "--data", "nope"], "dataset must be one of"),
    (["evaluate", "{run}/best.safetensors", "--data", "synthetic", "--option", "n=-1"],
     "n must be an integer >= 0, got -1"),
    (["predict", "missing.safetensors", "x.png", "--out", "{tmp}/o"], "missing.safetensors"),
    (["predict", "{run}/best.safetensors", "{tmp}/missing.png", "--out", "{tmp}/o"],
     "missing.png"),
    (["predict", "{run}/best.safetensors", "{tmp}/list.yaml", "--out", "{tmp}/o"], "list.yaml"),
    (["evaluate", "{run}/best.safetensors", "--data", "synthetic", "--batch-size", "0"],
     "argument --batch-size: must be at least 1, got 0"),
    (["export", "missing.safetensors", "--out", "{tmp}/m.onnx"], "missing.safetensors"),
    (["demo", "--out", "{tmp}/list.yaml"], "File exists"),
    # the command line itself (argparse)
    (["nope"], "invalid choice: 'nope'"),
    (["data", "check", "{tmp}"], "the following arguments are required: --dataset"),
    (["predict", "{run}/best.safetensors", "x.png", "--out", "o", "--format", "jpeg"],
     "invalid choice: 'jpeg'"),
    (["train", "{config}", "optim.loss=unet_weighted_ce", "optim.loss_options.w=3"],
     "options of loss 'unet_weighted_ce' must be among ['cldice', 'sigma', 'w0']"),
]


@pytest.mark.parametrize(("argv", "fragment"), MISTAKES, ids=[" ".join(a) for a, _ in MISTAKES])
def test_mistake_prints_one_error_line_and_exits_2(argv, fragment, tmp_path, request, capsys):
    places = {"tmp": str(tmp_path), "config": str(tmp_path / "tiny.yaml")}
    if any("{run}" in arg for arg in argv):
        places["run"] = str(request.getfixturevalue("run_dir"))
    (tmp_path / "tiny.yaml").write_text(SYNTHETIC_CONFIG.format(out=tmp_path / "run"))
    (tmp_path / "list.yaml").write_text("- train\n- epochs\n")
    (tmp_path / "broken.yaml").write_text("train: {epochs: 1\n")
    for name, value in places.items():
        argv = [arg.replace(f"{{{name}}}", value) for arg in argv]
    code, _, err = run_cli(argv, capsys)
    assert_one_error_line(code, err, fragment)


def test_data_check_that_finds_problems_reports_them_then_one_error_line(tmp_path, capsys):
    for folder in ("images", "masks"):
        (tmp_path / "train" / folder).mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "train" / "images" / "a.png")
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(tmp_path / "train" / "masks" / "a.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "train" / "images" / "b.png")
    argv = ["data", "check", str(tmp_path), "--dataset", "folder", "--option", "classes=3"]
    code, out, err = run_cli(argv, capsys)
    assert "2 problem(s):" in out and "a.png" in out and "b.png" in out
    assert_one_error_line(code, err, "must find no problem, got 2")
