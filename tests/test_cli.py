"""The `pixelwise` command line: evaluate, predict, demo, through `cli.main` (mistakes:
`test_cli_errors.py`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelwise.cli import main
from pixelwise.data import SyntheticShapes
from pixelwise.engine.demo import demo_config
from pixelwise.inference.predict import Segmenter

TINY = ["model.options.base_channels=4", "model.options.depth=2", "data.options.n=8",
        "data.options.size=32", "data.batch_size=4", "data.val_batch_size=8", "train.epochs=1",
        "train.progress=false", "train.device=cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A demo run with tiny settings; returns its output folder."""
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), *TINY]) == 0
    return out


def test_demo_writes_plots_predictions_and_metrics(trained, capsys):
    for name in ("training_curves.png", "predictions.png", "eval/metrics.json", "eval/confusion_matrix.png",
                 "eval/per_class_iou.png", "predictions/sample_00.png",
                 "predictions/sample_00_overlay.png", "run/best.safetensors"):
        assert (trained / name).is_file(), name
    label = np.asarray(Image.open(trained / "predictions" / "sample_00.png"))
    assert label.shape == (32, 32) and label.max() < 5


def test_evaluate_matches_an_independent_confusion_matrix(trained, tmp_path, capsys):
    best = trained / "run" / "best.safetensors"
    assert main(["evaluate", str(best), "--data", "synthetic", "--split", "val", "--device", "cpu",
                 "--option", "n=4", "--option", "size=32", "--out", str(tmp_path)]) == 0
    assert "mean IoU" in capsys.readouterr().out
    written = json.loads((tmp_path / "metrics.json").read_text())
    # The same images through Segmenter, counted with numpy.
    segmenter = Segmenter.from_checkpoint(best, device="cpu")
    data = SyntheticShapes(n=4, size=32, seed=_val_seed())
    matrix = np.zeros((5, 5), np.int64)
    for image, mask in data:
        pred = segmenter.predict(image)
        matrix += np.bincount(mask.numpy().ravel() * 5 + pred.ravel(), minlength=25).reshape(5, 5)
    assert written["matrix"] == matrix.tolist()
    assert (tmp_path / "confusion_matrix.png").is_file() and (tmp_path / "per_class_iou.png").is_file()


def _val_seed() -> int:
    from pixelwise.data import open_dataset

    val = open_dataset("synthetic", "", "val", n=1, size=32)
    return val.seed


def test_predict_writes_label_png_and_overlay_per_image(trained, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("a", (40, 52)), ("b", (32, 32))):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(images / f"{name}.png")
    best = trained / "run" / "best.safetensors"
    assert main(["predict", str(best), str(images), "--out", str(tmp_path / "out")]) == 0
    segmenter = Segmenter.from_checkpoint(best)
    for name, size in (("a", (40, 52)), ("b", (32, 32))):
        label = np.asarray(Image.open(tmp_path / "out" / f"{name}.png"))
        assert label.shape == size
        np.testing.assert_array_equal(label, segmenter.predict(images / f"{name}.png"))
        overlay = np.asarray(Image.open(tmp_path / "out" / f"{name}_overlay.png"))
        assert overlay.shape == (*size, 3)


def test_predict_backend_auto_logs_its_choice_calibrated_on_the_inputs(trained, tmp_path,
                                                                        monkeypatch, caplog):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("PIXELWISE_CACHE", str(tmp_path / "cache"))
    images = tmp_path / "images"
    images.mkdir()
    for i, (image, _) in enumerate(SyntheticShapes(n=2, size=48, seed=5)):
        Image.fromarray((image.permute(1, 2, 0) * 255).byte().numpy()).save(images / f"{i}.png")
    best = trained / "run" / "best.safetensors"
    with caplog.at_level("INFO", logger="pixelwise.inference.backends"):
        assert main(["predict", str(best), str(images), "--out", str(tmp_path / "out"),
                     "--backend", "auto", "--device", "cpu"]) == 0
    assert "backend auto: chose" in caplog.text and "2 calibration images" in caplog.text
    fp32 = Segmenter.from_checkpoint(best, device="cpu")
    label = np.asarray(Image.open(tmp_path / "out" / "0.png"))
    assert (label == fp32.predict(images / "0.png")).mean() >= 0.995


def test_evaluate_shows_its_progress_bar_on_a_terminal_or_when_asked(trained, tmp_path, capsys):
    best = trained / "run" / "best.safetensors"
    common = ["evaluate", str(best), "--data", "synthetic", "--device", "cpu", "--option", "n=4",
              "--option", "size=32"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0  # stderr is not a terminal here
    assert "validate" not in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "b"), "--progress"]) == 0
    assert "validate" in capsys.readouterr().err  # tqdm writes to stderr


def test_evaluate_through_onnx_gives_the_fp32_scores(trained, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("PIXELWISE_CACHE", str(tmp_path / "cache"))
    best = trained / "run" / "best.safetensors"
    scores = {}
    for backend in ("torch", "onnx"):
        assert main(["evaluate", str(best), "--data", "synthetic", "--device", "cpu",
                     "--option", "n=4", "--option", "size=32", "--backend", backend,
                     "--out", str(tmp_path / backend)]) == 0
        scores[backend] = json.loads((tmp_path / backend / "metrics.json").read_text())
    assert scores["onnx"]["pixel_accuracy"] == pytest.approx(scores["torch"]["pixel_accuracy"],
                                                             abs=1e-3)


def test_demo_config_file_matches_the_demo():
    from pixelwise.config import load_config

    shipped = Path(__file__).resolve().parents[1] / "configs" / "synthetic_demo.yaml"
    assert load_config(shipped) == demo_config("pixelwise-demo")


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    from pixelwise import __version__

    assert capsys.readouterr().out.strip() == f"pixelwise {__version__}"


def test_predict_formats_option_writes_the_chosen_files(trained, tmp_path):
    image = tmp_path / "x.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image)
    best = trained / "run" / "best.safetensors"
    assert main(["predict", str(best), str(image), "--out", str(tmp_path / "o"),
                 "--format", "npy", "png"]) == 0
    written = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert written == ["job.json", "manifest.jsonl", "x.npy", "x.png"]  # and the job's record
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "x.npy"),
                                  np.asarray(Image.open(tmp_path / "o" / "x.png")))


def test_models_prints_the_model_table(monkeypatch, capsys):
    import pixelwise.models.summary as summary
    from pixelwise.models import build

    small = ("unet", 3, {"base_channels": 4, "depth": 2})
    monkeypatch.setattr(summary, "STANDARD_CONFIGURATIONS", [small])
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    parameters = sum(p.numel() for p in build(small[0], small[1], **small[2]).parameters())
    assert "unet" in out and f"{parameters / 1e6:.2f}M" in out


def test_models_encoders_lists_the_filtered_encoders_and_their_cache_state(capsys):
    assert main(["models", "--encoders", "--filter", "mobilenet_v3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["encoder", "family"]
    assert [line.split()[0] for line in lines[1:3]] == ["mobilenet_v3_small", "mobilenet_v3_large"]
    assert lines[1].endswith("mobilenet_v3_small-047dcff4.pth")


def test_models_filter_without_encoders_is_an_error(capsys):
    assert main(["models", "--filter", "resnet"]) != 0
    assert "--filter needs --encoders" in capsys.readouterr().err


def test_evaluate_tta_averages_the_mirrored_prediction(trained, tmp_path):
    import torch

    from pixelwise.checkpoint import load_model

    best = trained / "run" / "best.safetensors"
    assert main(["evaluate", str(best), "--data", "synthetic", "--tta", "--device", "cpu",
                 "--option", "n=3", "--option", "size=32", "--out", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "metrics.json").read_text())
    model, meta = load_model(best)
    mean, std = torch.tensor(meta.mean).view(3, 1, 1), torch.tensor(meta.std).view(3, 1, 1)
    matrix = np.zeros((5, 5), np.int64)
    with torch.no_grad():
        for image, mask in SyntheticShapes(n=3, size=32, seed=_val_seed()):
            x = ((image - mean) / std)[None]
            proba = model(x).softmax(1) + model(x.flip(-1)).softmax(1).flip(-1)
            pred = proba[0].argmax(0).numpy()
            matrix += np.bincount(mask.numpy().ravel() * 5 + pred.ravel(), minlength=25).reshape(5, 5)
    assert written["matrix"] == matrix.tolist()


def test_evaluate_and_predict_tta_views_d4_use_the_eight_rotations_and_mirrors(trained, tmp_path):
    from pixelwise.inference.tta import DIHEDRAL

    best = trained / "run" / "best.safetensors"
    assert main(["evaluate", str(best), "--data", "synthetic", "--tta-views", "d4", "--option",
                 "n=2", "--option", "size=32", "--out", str(tmp_path / "e")]) == 0
    written = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert written["evaluated"]["tta"]["flips"] == list(DIHEDRAL)
    image = tmp_path / "x.png"
    pixels = np.random.default_rng(4).integers(0, 256, (32, 40, 3), np.uint8)
    Image.fromarray(pixels).save(image)
    assert main(["predict", str(best), str(image), "--out", str(tmp_path / "o"), "--tta-views",
                 "d4", "--format", "npy"]) == 0
    plain = Segmenter.from_checkpoint(best, device="cpu")
    proba = sum(
        np.rot90(plain.predict_proba(np.rot90(view, k).copy()), -k, axes=(1, 2))[..., ::step]
        for step, view in ((1, pixels), (-1, pixels[:, ::-1])) for k in range(4))
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "x.npy"), proba.argmax(0))


def test_export_onnx_then_predict_with_the_onnx_file_matches_pytorch(trained, tmp_path, capsys):
    best = trained / "run" / "best.safetensors"
    onnx_file = tmp_path / "model.onnx"
    assert main(["export", str(best), "--format", "onnx", "--out", str(onnx_file)]) == 0
    report = capsys.readouterr().out.lower()  # a U-Net: the traced graph is kept
    assert "passed: max |diff|" in report and "(legacy)" in report
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (37, 45, 3), np.uint8)).save(image)
    assert main(["predict", str(onnx_file), str(image), "--out", str(tmp_path / "o"),
                 "--format", "png"]) == 0
    from_onnx = np.asarray(Image.open(tmp_path / "o" / "x.png"))
    from_torch = Segmenter.from_checkpoint(best, device="cpu").predict(image)
    assert from_onnx.shape == (37, 45)
    assert (from_onnx == from_torch).mean() > 0.999


def test_predict_tta_averages_the_mirrored_probabilities(trained, tmp_path):
    best = trained / "run" / "best.safetensors"
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (32, 40, 3), np.uint8)).save(image)
    assert main(["predict", str(best), str(image), "--out", str(tmp_path / "o"), "--tta",
                 "--format", "npy"]) == 0
    plain = Segmenter.from_checkpoint(best, device="cpu")
    pixels = np.asarray(Image.open(image))
    mirrored = plain.predict_proba(pixels[:, ::-1].copy())[:, :, ::-1]
    expected = (plain.predict_proba(pixels) + mirrored).argmax(0)
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "x.npy"), expected)


def test_predict_geotiff_input_keeps_its_crs_in_geotiff_and_geojson(trained, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    image = tmp_path / "scene.tif"
    pixels = np.random.default_rng(3).integers(0, 256, (3, 32, 32), np.uint8)
    transform = from_origin(500000.0, 4600000.0, 10.0, 10.0)
    with rasterio.open(image, "w", driver="GTiff", height=32, width=32, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=transform) as dst:
        dst.write(pixels)
    best = trained / "run" / "best.safetensors"
    assert main(["predict", str(best), str(image), "--out", str(tmp_path / "o"),
                 "--format", "geotiff", "geojson", "coco"]) == 0
    with rasterio.open(tmp_path / "o" / "scene.tif") as written:
        assert written.crs.to_epsg() == 32633 and written.transform == transform
        label = written.read(1)
    geojson = json.loads((tmp_path / "o" / "scene.geojson").read_text())
    assert "32633" in json.dumps(geojson.get("crs", {}))
    for feature in geojson["features"]:  # every vertex lies inside the scene's map extent
        ring = np.asarray(feature["geometry"]["coordinates"][0])
        assert (500000.0 <= ring[:, 0]).all() and (ring[:, 0] <= 500320.0).all()
        assert (4599680.0 <= ring[:, 1]).all() and (ring[:, 1] <= 4600000.0).all()
    coco = json.loads((tmp_path / "o" / "scene.coco.json").read_text())
    assert sum(a["area"] for a in coco["annotations"]) == int((label != 0).sum())


def test_data_check_passes_dataset_options(tmp_path, capsys):
    for sub in ("images", "masks"):
        (tmp_path / "train" / sub).mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "train" / "images" / "a.png")
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(tmp_path / "train" / "masks" / "a.png")
    argv = ["data", "check", str(tmp_path), "--dataset", "folder", "--option", "classes=3"]
    assert main(argv) == 2
    out = capsys.readouterr().out
    assert "1 problem(s)" in out and "a.png" in out and "got [7]" in out


def test_predict_shows_a_progress_bar_over_the_tiles_of_a_large_image(trained, tmp_path,
                                                                      capsys):
    image = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (1100, 40, 3), np.uint8)).save(image)
    best = trained / "run" / "best.safetensors"
    assert main(["predict", str(best), str(image), "--out", str(tmp_path / "o"),
                 "--format", "npy", "--progress"]) == 0
    assert "tiles of a 1100x40 image" in capsys.readouterr().err  # tqdm writes to stderr
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "big.npy"),
                                  Segmenter.from_checkpoint(best, device="cpu").predict(image))


def test_help_imports_neither_torch_nor_the_commands():
    # `pixelwise --help` and argument errors answer at once: the choices the parser offers come
    # from pixelwise.choices, and each command imports what it needs when it runs
    code = ("import sys; from pixelwise.cli import build_parser; build_parser(); "
            "heavy = sorted(m for m in ('torch', 'torchvision', 'numpy') if m in sys.modules); "
            "print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
