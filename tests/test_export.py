"""ONNX and TorchScript export round trips for every model family, on tiny widths; the parity
check compares with PyTorch eager on odd sizes and sizes not divisible by 32."""

from importlib.util import find_spec

import pytest
import torch
from torch import nn

from pixelwise.checkpoint import ModelMeta, save_weights
from pixelwise.errors import ConfigError
from pixelwise.export import (
    export_checkpoint,
    export_onnx,
    export_torchscript,
    parity_sizes,
)
from pixelwise.inference.onnx import OnnxModule
from pixelwise.models import build, unet_valid_output_size

# found, not imported: onnxscript and onnx cost two seconds to import, which only the worker
# that runs these tests should pay
pytestmark = pytest.mark.skipif(find_spec("onnxruntime") is None or find_spec("onnxscript") is None,
                                reason="pixelwise[export] (onnxruntime, onnxscript) is not installed")


def tiny(name: str, **options) -> nn.Module:
    torch.manual_seed(0)
    model = build(name, 3, **options)
    with torch.no_grad():  # FCN score layers start at zero: give them values worth comparing
        for key, parameter in model.named_parameters():
            if "score" in key:
                parameter.normal_(0, 0.01)
    return model.eval()


UNET = {"in_channels": 1, "base_channels": 4, "depth": 2}


def test_same_unet_onnx_round_trip_on_odd_sizes(tmp_path):
    # "auto" tries the same legacy exporter first, then checks one more size
    report = export_onnx(tiny("unet", **UNET, padding="same"), tmp_path / "model.onnx",
                         exporter="legacy")
    print(report)
    assert report.passed
    assert [(s.height, s.width) for s in report.sizes] == [(64, 64), (37, 91), (50, 33), (97, 130)]
    assert all(s.argmax_agreement == 1.0 for s in report.sizes)


def test_valid_unet_onnx_round_trip(tmp_path):
    # the legacy exporter is the one "auto" keeps for the valid U-Net, whose input-size check
    # torch.export refuses
    report = export_onnx(tiny("unet", **UNET, padding="valid"), tmp_path / "valid.onnx",
                         exporter="legacy")
    assert report.passed, str(report)
    x = torch.randn(1, 1, 60, 44)
    assert OnnxModule(tmp_path / "valid.onnx")(x).shape == (1, 3, 20, 4)


class DataDependent(nn.Module):
    """Branches on a tensor value, which torch.export refuses; both branches compute the same."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)

    def forward(self, x):
        if x.sum() > 0:
            return self.conv(x)
        return self.conv(x)


def test_auto_keeps_the_traced_graph_when_it_matches_at_the_second_size(tmp_path):
    # torch.export would refuse this model; tracing, tried first, serves it
    report = export_onnx(DataDependent(), tmp_path / "m.onnx", in_channels=1,
                         sizes=[(9, 13), (16, 7)])
    assert report.exporter == "legacy" and report.passed


def test_traced_fcn8s_keeps_its_crop_arithmetic_at_other_sizes(tmp_path):
    # the skip crop takes the smaller of two sizes: a Python min would freeze the trace's
    # choice (onnxruntime then failed at 50x33 after a 37x45 trace); models.layers.smaller keeps
    # it in the graph, so "auto" keeps the traced file, about 1 s against 17 s for torch.export
    model = tiny("fcn8s", backbone="resnet18")
    report = export_onnx(model, tmp_path / "fcn.onnx", sizes=[(37, 45), (50, 33)])
    assert report.passed and report.exporter == "legacy", str(report)
    x = torch.randn(1, 3, 41, 29)
    torch.testing.assert_close(OnnxModule(tmp_path / "fcn.onnx")(x), model(x), atol=1e-4, rtol=0)


class SquareCrop(nn.Module):
    """Crops to a square with the smaller side, found by a Python comparison where the sizes are
    traced tensors (so a trace keeps the traced input's answer) and by ``torch.sym_min`` where
    they are ints or torch.export's symbols (so the exported graph keeps the comparison)."""

    def forward(self, x):
        height, width = x.shape[-2:]
        if isinstance(height, torch.Tensor):
            side = height if height < width else width
        else:
            side = torch.sym_min(height, width)
        return nn.functional.conv2d(x, torch.ones(2, x.shape[1], 1, 1))[..., :side, :side]


def test_auto_exports_with_torch_export_when_the_trace_is_wrong_at_the_second_size(tmp_path):
    report = export_onnx(SquareCrop(), tmp_path / "square.onnx", in_channels=1,
                         sizes=[(20, 24), (31, 15)])
    assert report.passed and report.exporter == "dynamo", str(report)
    x = torch.randn(1, 1, 17, 40)
    assert OnnxModule(tmp_path / "square.onnx")(x).shape == (1, 2, 17, 17)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_unet_torchscript_round_trip(tmp_path, padding):
    report = export_torchscript(tiny("unet", **UNET, padding=padding), tmp_path / "m.pt")
    assert report.passed, str(report)


class FixedCrop(nn.Module):
    """Crops to a square with Python's min: tracing records which side was the smaller."""

    def forward(self, x):
        side = min(x.shape[-2], x.shape[-1])
        return nn.functional.conv2d(x, torch.ones(2, x.shape[1], 1, 1))[..., :side, :side]


def test_parity_check_fails_a_graph_that_fixed_its_sizes(tmp_path):
    report = export_torchscript(FixedCrop(), tmp_path / "fixed.pt", in_channels=1,
                                sizes=[(20, 20), (31, 15)])
    assert not report.passed
    assert "FAILED" in str(report)


def test_valid_unet_parity_sizes_are_valid_inputs():
    model = tiny("unet", **UNET, padding="valid")
    for height, width in parity_sizes(model):
        unet_valid_output_size(height, 2), unet_valid_output_size(width, 2)  # raise if invalid


def test_checkpoint_export_carries_metadata(tmp_path):
    model = tiny("unet", **UNET, padding="same")
    meta = ModelMeta(name="unet", num_classes=3, options={**UNET, "padding": "same"},
                     classes=["bg", "cell", "edge"], palette=[(0, 0, 0), (255, 0, 0), (0, 255, 0)],
                     ignore_index=255, in_channels=1, mean=[0.5], std=[0.25])
    save_weights(tmp_path / "best.safetensors", model, meta)
    report = export_checkpoint(tmp_path / "best.safetensors", tmp_path / "best.onnx",
                               sizes=[(33, 47)], exporter="legacy")
    assert report.passed
    exported = OnnxModule(tmp_path / "best.onnx")
    assert exported.metadata["classes"] == ["bg", "cell", "edge"]
    assert exported.metadata["mean"] == [0.5]
    x = torch.randn(1, 1, 29, 35)
    torch.testing.assert_close(exported(x), model(x), atol=1e-4, rtol=0)


def test_rejects_old_opset_and_unknown_format(tmp_path):
    with pytest.raises(ConfigError, match="opset must be >= 17"):
        export_onnx(tiny("unet", **UNET), tmp_path / "m.onnx", opset=13)
    with pytest.raises(ConfigError, match="format must be"):
        export_checkpoint(tmp_path / "x.safetensors", tmp_path / "m.tflite", format="tflite")
