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


def test_onnx_module_states_the_geometry_of_its_model_spec(tmp_path):
    torch.manual_seed(0)
    options = {"in_channels": 1, "base_channels": 4, "depth": 2, "padding": "valid"}
    model = build("unet", 2, **options).eval()
    spec = {"name": "unet", "num_classes": 2, "options": options}
    assert export_onnx(model, tmp_path / "v.onnx", exporter="legacy", sizes=[(48, 52)],
                       metadata=spec).passed
    exported = OnnxModule(tmp_path / "v.onnx", threads=1)
    assert exported.geometry == model.geometry
    # so tiling plans both from the same geometry: a valid tile, the centre output, mirroring
    image = np.random.default_rng(0).normal(size=(1, 30, 37)).astype(np.float32)
    expected = predict_tiled(model, image, 52, 0, align=4, return_proba=True)[1]
    np.testing.assert_allclose(predict_tiled(exported, image, 52, 0, align=4, return_proba=True)[1],
                               expected, atol=1e-5)


def test_onnx_file_without_a_model_spec_is_taken_as_same_size(tmp_path):
    from pixelwise.models import SAME_SIZE

    model = torch.nn.Conv2d(1, 2, 1).eval()
    assert export_onnx(model, tmp_path / "c.onnx", exporter="legacy", sizes=[(9, 7)]).passed
    assert OnnxModule(tmp_path / "c.onnx", threads=1).geometry == SAME_SIZE


def test_onnx_module_threads_sleep_when_idle_instead_of_spinning(tmp_path):
    # a spinning pool keeps the cores busy after each run and slows the PyTorch work after it
    model = torch.nn.Conv2d(1, 2, 1).eval()
    assert export_onnx(model, tmp_path / "c.onnx", exporter="legacy", sizes=[(9, 7)]).passed
    options = OnnxModule(tmp_path / "c.onnx", threads=1).session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
