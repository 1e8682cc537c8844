"""OnnxModule runs an exported file wherever a PyTorch model runs."""

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from pixelwise.errors import CheckpointError  # noqa: E402
from pixelwise.export import export_onnx  # noqa: E402
from pixelwise.inference.onnx import OnnxModule  # noqa: E402
from pixelwise.inference.tiling import predict_tiled  # noqa: E402
from pixelwise.models import build  # noqa: E402


def test_tiled_inference_through_onnx_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    model = build("unet", 2, in_channels=1, base_channels=4, depth=2).eval()
    assert export_onnx(model, tmp_path / "u.onnx", exporter="legacy", sizes=[(32, 32)]).passed
    image = np.random.default_rng(0).normal(size=(1, 45, 70)).astype(np.float32)
    _, expected = predict_tiled(model, image, 32, 8, align=4, return_proba=True)
    label, proba = predict_tiled(OnnxModule(tmp_path / "u.onnx", threads=1), image, 32, 8,
                                 align=4, return_proba=True)
    np.testing.assert_allclose(proba, expected, atol=1e-5)
    np.testing.assert_array_equal(label, expected.argmax(0))


def test_missing_or_corrupt_file_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="existing .onnx file"):
        OnnxModule(tmp_path / "absent.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="must load in onnxruntime"):
        OnnxModule(tmp_path / "bad.onnx")
