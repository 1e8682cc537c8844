"""`OnnxModule`: an exported ONNX model, callable like the PyTorch model it came from.

`OnnxModule(path)(x)` maps float `(N, C, H, W)` to logits `(N, K, H', W')` through onnxruntime on
the CPU, so `predict_tiled`, `tta_logits` and `Segmenter` run an exported file with the same code
as a PyTorch model. Files written by `pixelwise.export.export_checkpoint` carry the checkpoint's
metadata (model spec, classes, palette, mean/std) as JSON under the checkpoint format's
`METADATA_KEY`, available as `OnnxModule.metadata`; `load_onnx` reads both. The model spec gives
`OnnxModule.geometry`, the same `pixelwise.models.Geometry` the PyTorch model states, so tiling
treats both alike.

`write_onnx` writes a PyTorch model as ONNX with dynamic batch, height and width: the one writer
behind `pixelwise.export.export_onnx` (which adds metadata and a parity check) and the "onnx"
inference backends (:mod:`pixelwise.inference.backends`).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pixelwise.checkpoint import METADATA_KEY, ModelMeta
from pixelwise.errors import CheckpointError, ConfigError, import_extra
from pixelwise.models.geometry import SAME_SIZE, Geometry, geometry_of
from pixelwise.models.registry import model_geometry

log = logging.getLogger(__name__)

EXPORTERS = ("auto", "dynamo", "legacy")
TOLERANCE = 1e-3  # the largest logit difference from PyTorch an exported file may have


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
        options.log_severity_level = 4  # its errors reach the caller as CheckpointError instead
        if threads is not None:
            options.intra_op_num_threads = threads
        # idle threads sleep instead of spinning: a spinning pool kept the 2 cores busy after
        # each run, slowing the PyTorch work that followed (bench/realtime_fps.py: a 43 ms
        # half-size frame measured 84 ms right after an onnxruntime run)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        state = ort.capi.onnxruntime_pybind11_state  # onnxruntime's own exception types
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except (state.InvalidProtobuf, state.InvalidGraph, state.Fail) as error:
            raise CheckpointError(f"ONNX model {path} must load in onnxruntime, got {error}; "
                                  "try exporting it again") from None
        self.path = path
        self._run_errors = (state.Fail, state.InvalidArgument)  # what session.run raises
        self.input_name = self.session.get_inputs()[0].name
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata: dict[str, Any] | None = (
            json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else None)
        self.geometry = _spec_geometry(self.metadata)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of a float batch `(N, C, H, W)`, on `x`'s device."""
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        try:
            logits = self.session.run(None, {self.input_name: array})[0]
        except self._run_errors as error:  # e.g. a graph traced at one size
            raise CheckpointError(
                f"ONNX model {self.path} must run on a {tuple(x.shape)} input, got "
                f"{str(error).splitlines()[0]}; try exporting it again with torch.export "
                "(exporter='dynamo'), which keeps the input size free") from None
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


def write_onnx(model: nn.Module, path: str | Path, sample: Tensor, *, opset: int = 18,
               exporter: str = "auto", check: Tensor | None = None) -> str:
    """Write ``model`` (on the CPU, in eval mode) to ``path`` as ONNX with dynamic batch, height
    and width, traced on ``sample`` ``(1, C, H, W)``; return the exporter used.

    ``exporter`` (see :mod:`pixelwise.export`): "legacy" (TorchScript tracing; under a second,
    handles models that branch on sizes, such as the valid U-Net's input check, but bakes
    Python-side shape decisions in), "dynamo" (``torch.export``; keeps size arithmetic symbolic,
    but takes 5 to 20 s on a 2-core CPU even for a tiny U-Net), or "auto": "legacy", kept when
    onnxruntime matches PyTorch within `TOLERANCE` on ``check`` (an input of another size;
    default: the next valid size above ``sample``'s plus 11 x 17 pixels), else "dynamo".
    """
    if exporter not in EXPORTERS:
        raise ConfigError(f"exporter must be one of {list(EXPORTERS)}, got {exporter!r}; "
                          "try 'auto'")
    if exporter != "auto":
        (_export_dynamo if exporter == "dynamo" else _export_legacy)(model, sample, Path(path),
                                                                      opset)
        return exporter
    check = _check_input(model, sample) if check is None else check
    try:
        _export_legacy(model, sample, Path(path), opset)
        difference = onnx_difference(path, model, check)
        if difference < TOLERANCE:
            return "legacy"
        log.info("the traced ONNX graph differs from PyTorch at %s (%.2g); exporting with "
                 "torch.export", tuple(check.shape[-2:]), difference)
    except (torch.onnx.OnnxExporterError, RuntimeError) as error:
        log.info("the tracing ONNX exporter failed (%s); exporting with torch.export",
                 str(error).splitlines()[0] if str(error) else type(error).__name__)
    _export_dynamo(model, sample, Path(path), opset)
    return "dynamo"


def onnx_difference(path: str | Path, model: nn.Module, x: Tensor) -> float:
    """Largest logit difference between the ONNX file and ``model`` on ``x``; infinite when
    onnxruntime cannot run the file at that size (a traced graph that baked the trace's sizes
    into a crop fails to broadcast there: FCN-8s on MobileNetV3 did at 75x97 after a 64x64
    trace, until its crop used ``models.layers.smaller``)."""
    try:
        with torch.inference_mode():
            return float((OnnxModule(path, threads=1)(x) - model(x)).abs().max())
    except CheckpointError:
        return math.inf


def _check_input(model: nn.Module, sample: Tensor) -> Tensor:
    """An input of another size than ``sample``, odd in both directions, that ``model`` takes."""
    geometry = geometry_of(model)
    height, width = (geometry.input_size_at_least(size + extra)
                     for size, extra in zip(sample.shape[-2:], (11, 17), strict=True))
    return torch.randn(1, sample.shape[1], height, width)


def _export_dynamo(model: nn.Module, sample: Tensor, path: Path, opset: int) -> None:
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"),
            3: torch.export.Dim("width")}
    name = next(iter(inspect.signature(model.forward).parameters))  # dynamic_shapes keys
    # torch.export prints its progress and, when it refuses a model, the whole graph; the
    # exception carries the same, so keep the console for the parity report. One file, weights
    # inside (every model here is far below protobuf's 2 GB), so it can be moved and renamed.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            _quiet("onnxscript", "onnx_ir"):
        torch.onnx.export(model, (sample,), str(path), input_names=["image"],
                          output_names=["logits"], opset_version=opset, dynamo=True,
                          dynamic_shapes={name: dims}, verbose=False, external_data=False)


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Hold these loggers at WARNING: the exporter's optimiser logs every rewrite at INFO, which
    the CLI's INFO logging would print."""
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _export_legacy(model: nn.Module, sample: Tensor, path: Path, opset: int) -> None:
    axes = {0: "batch", 2: "height", 3: "width"}
    # the tracer's warnings about shape-dependent Python code are what the parity check tests
    # on several sizes, so the report speaks for them
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        torch.onnx.export(model, (sample,), str(path), input_names=["image"],
                          output_names=["logits"], opset_version=opset, dynamo=False,
                          dynamic_axes={"image": axes, "logits": axes})
