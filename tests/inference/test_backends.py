"""Inference backends: each gives eager fp32's label map (int8 and bf16 up to a stated share of
pixels) on a small U-Net trained for a few steps, so its predictions are not degenerate; `auto`
takes the fastest backend that agrees and falls back cleanly without onnxruntime."""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from pixelwise.checkpoint import ModelMeta, save_weights
from pixelwise.engine.evaluate import evaluate
from pixelwise.errors import ConfigError, MissingExtraError
from pixelwise.inference import backends
from pixelwise.inference import predict as predict_module
from pixelwise.inference.backends import BackendChoice, build_backend, choose_backend
from pixelwise.inference.predict import Segmenter, calibration_images
from pixelwise.inference.tta import TestTimeAugmented, with_tta

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
LOW_PRECISION_AGREEMENT = 0.98  # int8 and bf16 against fp32, on the held-out images


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """One ONNX cache for the module: the export (seconds) happens once."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIXELWISE_CACHE", str(tmp_path_factory.mktemp("backends-cache")))
        yield


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, ModelMeta]:
    """A U-Net (base 8, depth 2) after 40 Adam steps on 64x64 synthetic shapes (92 % pixel
    accuracy on held-out images): confident on most pixels, as a real model is, unlike random
    weights. Against its fp32 labels, int8 agrees on 99.7 % and bf16 on 99.96 % of pixels here."""
    from pixelwise.data.synthetic import SyntheticShapes
    from pixelwise.models import build

    torch.manual_seed(0)
    options = {"in_channels": 3, "base_channels": 8, "depth": 2}
    model = build("unet", 5, **options)
    data = SyntheticShapes(n=32, size=64, seed=0)
    images = torch.stack([data[i][0] for i in range(len(data))])
    masks = torch.stack([data[i][1] for i in range(len(data))])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for step in range(40):
        batch = slice(8 * (step % 4), 8 * (step % 4) + 8)
        x = (images[batch] - MEAN[0]) / STD[0]
        loss = nn.functional.cross_entropy(model(x), masks[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    meta = ModelMeta(name="unet", num_classes=5, options=options, classes=list("abcde"),
                     palette=[(i, i, i) for i in range(5)], ignore_index=255, in_channels=3,
                     mean=MEAN, std=STD)
    return model.eval(), meta


def shapes(seed: int, n: int = 4, size: int = 64) -> list[torch.Tensor]:
    """Images `(3, size, size)` float in [0, 1] the model has not trained on."""
    from pixelwise.data.synthetic import SyntheticShapes

    data = SyntheticShapes(n=n, size=size, seed=seed)
    return [data[i][0] for i in range(n)]


def agreement(segmenter: Segmenter, reference: Segmenter, images) -> float:
    same = [(segmenter.predict(x) == reference.predict(x)).mean() for x in images]
    return float(np.mean(same))


def clear_pixels_equal(segmenter: Segmenter, reference: Segmenter, images) -> None:
    """Labels equal wherever fp32's top two probabilities differ by more than 1e-3."""
    for x in images:
        proba = reference.predict_proba(x)
        top2 = np.sort(proba, axis=0)[-2:]
        clear = top2[1] - top2[0] > 1e-3
        np.testing.assert_array_equal(segmenter.predict(x)[clear], reference.predict(x)[clear])


@pytest.fixture(scope="module")
def reference(trained) -> Segmenter:
    return Segmenter(*trained, device="cpu")


def test_the_model_is_not_degenerate(trained, reference):
    from pixelwise.data.synthetic import SyntheticShapes

    data = SyntheticShapes(n=4, size=64, seed=1)
    accuracy = np.mean([(reference.predict(data[i][0]) == data[i][1].numpy()).mean()
                        for i in range(4)])
    labels = np.unique(np.concatenate([reference.predict(x).ravel() for x in shapes(1)]))
    assert accuracy > 0.6 and len(labels) >= 3


def test_torch_backend_runs_the_model_itself(trained):
    model, meta = trained
    assert build_backend("torch", model, torch.device("cpu"), 3) is model
    assert Segmenter(model, meta, device="cpu").backend == "torch"


def test_onnx_gives_the_eager_fp32_label_map(trained, reference):
    pytest.importorskip("onnxruntime")
    onnx = Segmenter(*trained, device="cpu", backend="onnx")
    clear_pixels_equal(onnx, reference, shapes(1))
    np.testing.assert_allclose(onnx.predict_proba(shapes(1)[0]),
                               reference.predict_proba(shapes(1)[0]), atol=1e-4)


def test_onnx_int8_agrees_with_fp32_on_held_out_images(trained, reference):
    pytest.importorskip("onnxruntime")
    int8 = Segmenter(*trained, device="cpu", backend="onnx-int8", calibration=shapes(2))
    assert agreement(int8, reference, shapes(1)) >= LOW_PRECISION_AGREEMENT


def test_torch_bf16_agrees_with_fp32_even_where_emulated(trained, reference):
    bf16 = Segmenter(*trained, device="cpu", backend="torch-bf16")
    assert agreement(bf16, reference, shapes(1)) >= LOW_PRECISION_AGREEMENT
    assert bf16.predict_proba(shapes(1)[0]).dtype == np.float32


def test_tiled_prediction_through_onnx_equals_eager(trained):
    pytest.importorskip("onnxruntime")
    image = shapes(3, n=1, size=96)[0]
    options = {"device": "cpu", "tile_above": 48, "tile": 48, "overlap": 16, "tile_batch": 3}
    onnx = Segmenter(*trained, backend="onnx", **options)
    eager = Segmenter(*trained, **options)
    np.testing.assert_allclose(onnx.predict_proba(image), eager.predict_proba(image), atol=1e-4)


def test_auto_measures_the_available_backends_and_takes_an_agreeing_one(trained, reference):
    pytest.importorskip("onnxruntime")
    auto = Segmenter(*trained, device="cpu", backend="auto", calibration=shapes(2))
    choice = auto.backend_choice
    assert auto.backend == choice.name
    assert set(choice.seconds) | set(choice.skipped) == set(backends.BACKENDS)
    assert {"torch", "onnx", "onnx-int8"} <= set(choice.seconds)
    assert choice.agreement[choice.name] >= backends.MIN_AGREEMENT
    assert "ms / image" in str(choice) and choice.name in str(choice)


class _Timed(nn.Module):
    """A backend that takes `cost` seconds on the fake clock and maybe disagrees with fp32."""

    def __init__(self, clock: list[float], cost: float, flip: bool) -> None:
        super().__init__()
        self.clock, self.cost, self.flip = clock, cost, flip

    def forward(self, x):
        self.clock[0] += self.cost
        logits = torch.stack([x[:, 0], -x[:, 0]], 1)
        return logits.flip(1) if self.flip else logits


def test_auto_takes_the_fastest_backend_whose_labels_agree(monkeypatch):
    clock = [0.0]
    fakes = {"torch": (3.0, False), "onnx": (1.0, True), "onnx-int8": (2.0, False)}
    monkeypatch.setattr(backends.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(backends, "available_backends",
                        lambda model, device: (list(fakes), {"torch-bf16": "no bf16"}))
    monkeypatch.setattr(backends, "build_backend",
                        lambda name, *args: _Timed(clock, *fakes[name]))
    _, choice = choose_backend(nn.Identity(), torch.device("cpu"), 1, [torch.randn(1, 1, 8, 8)])
    # onnx is fastest but flips every label; onnx-int8 agrees and beats torch
    assert choice.name == "onnx-int8"
    assert choice.seconds == {"torch": 3.0, "onnx": 1.0, "onnx-int8": 2.0}
    assert choice.agreement == {"torch": 1.0, "onnx": 0.0, "onnx-int8": 1.0}
    assert "rejected" in str(choice).splitlines()[3]


class _SizeTimed(nn.Module):
    """A backend whose time on the fake clock is `fixed + per_pixel * pixels` of its input."""

    def __init__(self, clock: list[float], fixed: float, per_pixel: float) -> None:
        super().__init__()
        self.clock, self.fixed, self.per_pixel = clock, fixed, per_pixel

    def forward(self, x):
        self.clock[0] += self.fixed + self.per_pixel * x.shape[-2] * x.shape[-1]
        return torch.stack([x[:, 0], -x[:, 0]], 1)


def test_auto_times_the_backends_at_the_size_the_wrap_runs_them(monkeypatch):
    # "onnx" has a fixed cost and is cheap per pixel: fastest on a 16x16 image (100 + 25.6 < 256),
    # slowest on the 8x8 that half-size test-time scaling gives (100 + 6.4 > 64).
    clock = [0.0]
    fakes = {"torch": (0.0, 1.0), "onnx": (100.0, 0.1)}
    monkeypatch.setattr(backends.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(backends, "available_backends", lambda model, device: (list(fakes), {}))
    monkeypatch.setattr(backends, "build_backend",
                        lambda name, *args: _SizeTimed(clock, *fakes[name]))
    image = [torch.randn(1, 1, 16, 16)]
    _, whole = choose_backend(nn.Identity(), torch.device("cpu"), 1, image)
    assert whole.name == "onnx" and whole.seconds == pytest.approx({"torch": 256.0, "onnx": 125.6})
    half = lambda module: with_tta(module, scales=(0.5,))  # noqa: E731
    chosen, at_half = choose_backend(nn.Identity(), torch.device("cpu"), 1, image, wrap=half)
    assert at_half.name == "torch" and at_half.seconds == pytest.approx({"torch": 64.0,
                                                                         "onnx": 106.4})
    assert isinstance(chosen, _SizeTimed)  # the backend itself: the caller adds the views


def test_auto_times_the_label_map_as_prediction_makes_it(monkeypatch):
    # argmax over the class axis of an NCHW tensor is several times slower than `class_ids`
    # (a max) on the CPU; timing argmax made onnxruntime's NCHW output look slow.
    clock, made = [0.0], []
    monkeypatch.setattr(backends.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(backends, "available_backends", lambda model, device: (["torch"], {}))
    monkeypatch.setattr(backends, "build_backend", lambda name, *args: _Timed(clock, 1.0, False))
    monkeypatch.setattr(backends, "class_ids", lambda scores: made.append(1) or scores.max(1)[1])
    images = [torch.randn(1, 1, 8, 8)] * 2
    choose_backend(nn.Identity(), torch.device("cpu"), 1, images)
    assert len(made) == len(images) * (1 + backends.ROUNDS)  # the comparison and every round


def test_a_segmenter_and_evaluate_let_auto_time_their_tta(trained, monkeypatch, tmp_path):
    seen = []

    def fake_choose(model, device, in_channels, calibration, wrap=None):
        seen.append(wrap(model))
        return model, BackendChoice("torch", {"torch": 1.0}, {"torch": 1.0}, {}, len(calibration))

    monkeypatch.setattr(predict_module, "choose_backend", fake_choose)
    Segmenter(*trained, device="cpu", backend="auto", calibration=shapes(2, n=1),
              tta_flips=("h",), tta_scales=(0.5,))
    assert isinstance(seen[-1], TestTimeAugmented) and seen[-1].scales == (0.5,)
    monkeypatch.setattr(backends, "choose_backend", fake_choose)
    path = tmp_path / "model.safetensors"
    save_weights(path, *trained)
    evaluate(path, "synthetic", "", "val", out_dir=tmp_path / "eval", device="cpu",
             progress=False, backend="auto", tta_scales=(0.5, 1.0), n=2, size=64)
    assert isinstance(seen[-1], TestTimeAugmented) and seen[-1].scales == (0.5, 1.0)


def test_auto_without_onnxruntime_falls_back_to_pytorch(trained, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    auto = Segmenter(*trained, device="cpu", backend="auto", calibration=shapes(2, n=2))
    assert auto.backend in ("torch", "torch-bf16")
    assert "pip install 'pixelwise[export]'" in auto.backend_choice.skipped["onnx"]
    assert set(auto.backend_choice.seconds) <= {"torch", "torch-bf16"}


def test_onnx_without_onnxruntime_names_the_extra(trained, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError, match=r"pixelwise\[export\]"):
        Segmenter(*trained, device="cpu", backend="onnx")


def test_exported_file_is_reused(trained, monkeypatch):
    pytest.importorskip("onnxruntime")
    Segmenter(*trained, device="cpu", backend="onnx")

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(backends, "write_onnx", no_export)
    assert Segmenter(*trained, device="cpu", backend="onnx").backend == "onnx"


def test_int8_and_auto_without_calibration_are_config_errors(trained):
    for backend in ("onnx-int8", "auto"):
        with pytest.raises(ConfigError, match="calibration"):
            Segmenter(*trained, device="cpu", backend=backend)


def test_unknown_backend_lists_the_valid_names(trained):
    with pytest.raises(ConfigError, match=r"one of \['torch', 'torch-bf16', 'onnx', 'onnx-int8', "
                                          r"'auto'\], got 'tensorrt'"):
        Segmenter(*trained, device="cpu", backend="tensorrt")


def test_calibration_folder_gives_its_first_images_by_name(tmp_path):
    from PIL import Image

    for name in ("d.png", "a.png", "c.jpg", "b.png", "e.png", "notes.txt"):
        if name.endswith("txt"):
            (tmp_path / name).write_text("not an image")
        else:
            Image.new("RGB", (8, 8)).save(tmp_path / name)
    assert [p.name for p in calibration_images(tmp_path)] == ["a.png", "b.png", "c.jpg", "d.png"]


def test_an_image_prediction_would_tile_calibrates_on_its_centre_tile(trained):
    segmenter = Segmenter(*trained, device="cpu", tile_above=64, tile=48)
    image = torch.rand(3, 100, 80)
    x = segmenter.calibration_input(image)
    assert x.shape == (1, 3, 48, 48)
    expected = (image[:, 26:74, 16:64] - 0.5) / 0.25
    torch.testing.assert_close(x[0], expected)


def test_backend_choice_prints_rejections_and_skipped(trained):
    choice = BackendChoice("onnx", {"torch": 0.02, "onnx": 0.01}, {"torch": 1.0, "onnx": 1.0},
                           {"torch-bf16": "this cpu has no native bf16"}, images=4)
    text = str(choice)
    assert "chose onnx" in text and "2.00x" in text and "not measured: this cpu" in text


def fake_exporters(monkeypatch, traced: Callable[[nn.Module], nn.Module]) -> list[str]:
    """Make write_onnx's tracer export ``traced(model)`` (standing for a trace that went wrong)
    and its torch.export path trace the model itself (the real one takes seconds); returns the
    list of exporters used, in order."""
    from pixelwise.inference import onnx as onnx_module

    real, used = onnx_module._export_legacy, []

    def legacy(model, sample, path, opset):
        used.append("legacy")
        real(traced(model), sample, path, opset)

    def dynamo(model, sample, path, opset):
        used.append("dynamo")
        real(model, sample, path, opset)

    monkeypatch.setattr(onnx_module, "_export_legacy", legacy)
    monkeypatch.setattr(onnx_module, "_export_dynamo", dynamo)
    return used


class _BakedSize(nn.Module):
    """Adds a constant of the traced size: its ONNX file cannot run at another size, as an FCN-8s
    traced with a Python min in its crop could not (onnxruntime raised on a broadcast at 75x97)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) + torch.zeros(1, 1, 64, 64)


@pytest.mark.parametrize("traced", [
    lambda module: nn.Sequential(module, nn.ReLU()),  # differs from PyTorch at another size
    _BakedSize,  # onnxruntime cannot run it at another size
], ids=["differs", "cannot-run"])
def test_a_trace_wrong_at_another_size_is_redone_with_torch_export(monkeypatch, tmp_path, traced):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("PIXELWISE_CACHE", str(tmp_path))  # no file of another test reused
    torch.manual_seed(0)
    model = nn.Conv2d(3, 2, 3, padding=1).eval()
    used = fake_exporters(monkeypatch, traced)
    onnx = build_backend("onnx", model, torch.device("cpu"), 3)
    x = torch.randn(1, 3, 75, 97)
    assert used == ["legacy", "dynamo"]
    torch.testing.assert_close(onnx(x), model(x), atol=1e-4, rtol=1e-4)
    assert not list(backends.cache_dir().glob("*.part.onnx"))
