"""`OnnxModule`: an exported ONNX model, callable like the PyTorch model it came from.

`OnnxModule(path)(x)` maps float `(N, C, H, W)` to logits `(N, K, H', W')` through onnxruntime on
the CPU, so `predict_tiled`, `tta_logits` and `Segmenter` run an exported file with the same code
as a PyTorch model. Files written by `pixelwise.export.export_checkpoint` carry the checkpoint's
metadata (model spec, classes, palette, mean/std) as JSON under the checkpoint format's
`METADATA_KEY`, available as `OnnxModule.metadata`; `load_onnx` reads both. The model spec gives
`OnnxModule.geometry`, the same `pixelwise.models.Geometry` the PyTorch model states, so tiling
treats both alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pixelwise.checkpoint import METADATA_KEY, ModelMeta
from pixelwise.errors import CheckpointError, import_extra
from pixelwise.models.geometry import SAME_SIZE, Geometry
from pixelwise.models.registry import model_geometry


class OnnxModule(nn.Module):
    """Runs an ONNX segmentation model with onnxruntime's CPU provider (see module docs).

    Args:
        path: the `.onnx` file.
        threads: onnxruntime intra-op threads (None: onnxruntime's default, all cores).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        ort = import_extra("onnxruntime", "export")
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"ONNX model must be an existing .onnx file, got {path}; "
                                  "try pixelwise export CKPT --format onnx --out FILE")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        state = ort.capi.onnxruntime_pybind11_state  # onnxruntime's own exception types
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except (state.InvalidProtobuf, state.InvalidGraph, state.Fail) as error:
            raise CheckpointError(f"ONNX model {path} must load in onnxruntime, got {error}; "
                                  "try exporting it again") from None
        self.path = path
        self.input_name = self.session.get_inputs()[0].name
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata: dict[str, Any] | None = (
            json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else None)
        self.geometry = _spec_geometry(self.metadata)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of a float batch `(N, C, H, W)`, on `x`'s device."""
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        logits = self.session.run(None, {self.input_name: array})[0]
        return torch.from_numpy(logits).to(x.device)


def load_onnx(path: str | Path) -> tuple[OnnxModule, ModelMeta]:
    """An exported ONNX file as a module plus the checkpoint metadata stored inside it."""
    module = OnnxModule(path)
    if module.metadata is None:
        raise CheckpointError(
            f"ONNX model {path} must carry pixelwise metadata (classes, mean/std), got none; "
            "try exporting it with pixelwise export CKPT --format onnx --out FILE"
        )
    return module, ModelMeta.from_json(json.dumps(module.metadata), Path(path))


def _spec_geometry(metadata: dict[str, Any] | None) -> Geometry:
    """The geometry of the model that metadata's spec (``name``, ``num_classes``, ``options``)
    describes, or :data:`~pixelwise.models.geometry.SAME_SIZE` for a file without a spec."""
    if metadata is None or not {"name", "num_classes", "options"} <= set(metadata):
        return SAME_SIZE
    return model_geometry(metadata["name"], metadata["num_classes"], **metadata["options"])
