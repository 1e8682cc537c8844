"""Export a model to ONNX or TorchScript, then prove the file computes what PyTorch computes.

Every export ends with a parity check: the exported file and the PyTorch model (eager, CPU) run
on random inputs of several sizes, odd ones and ones not divisible by 32 among them, and the
`ParityReport` gives per size the largest absolute logit difference (must be < 1e-3) and the
fraction of pixels whose argmax agrees. A file whose graph silently fixed the sizes it was traced
with fails here instead of in production.

ONNX exporters (`exporter=`): torch 2.14 offers two, and neither handles all our models.
* "legacy" (TorchScript tracing with `dynamic_axes`, deprecated): under a second; traces the
  valid and same U-Nets and the FCNs correctly, but bakes Python-side shape decisions into the
  graph (a Python `min` of two sizes; FCN's crop uses `models.layers.smaller` for that reason).
* "dynamo" (`torch.export`, the supported path, needs onnxscript): sizes are symbolic, so Python
  arithmetic on shapes (FCN's crops, `min` of two sizes) stays dynamic; 5 to 20 s on a 2-core
  CPU. It refuses models that branch on sizes it cannot decide symbolically: the valid U-Net
  checks its input size.
* "auto" (default): "legacy", kept when onnxruntime matches PyTorch on the second parity size,
  else "dynamo" (also when tracing fails). The parity check runs either way and the report
  names the exporter used.
Opset 18 is the default: the dynamo exporter's lowest native opset (17 or newer is required).

TorchScript uses `torch.jit.trace` (`torch.jit.script` rejects the U-Net's size arithmetic), so
it has the legacy exporter's limits; the parity check tells.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pixelwise.checkpoint import METADATA_KEY, load_model
from pixelwise.errors import ConfigError, import_extra
from pixelwise.inference.onnx import TOLERANCE, OnnxModule, write_onnx
from pixelwise.models.geometry import geometry_of

# odd, not multiples of 32, tall and wide: the sizes most likely to expose a fixed shape
PARITY_SIZES = ((64, 64), (37, 91), (50, 33), (97, 130))


@dataclass(frozen=True)
class SizeParity:
    """Exported file vs PyTorch on one input size."""

    height: int
    width: int
    max_abs_diff: float
    argmax_agreement: float


@dataclass(frozen=True)
class ParityReport:
    """Parity of an exported file with the PyTorch model; `print(report)` shows a table."""

    path: Path
    format: str
    exporter: str
    tolerance: float
    sizes: tuple[SizeParity, ...]

    @property
    def max_abs_diff(self) -> float:
        return max(s.max_abs_diff for s in self.sizes)

    @property
    def passed(self) -> bool:
        """True when every size's largest logit difference is below the tolerance."""
        return self.max_abs_diff < self.tolerance

    def __str__(self) -> str:
        lines = [f"{self.format} export {self.path} ({self.exporter}) vs PyTorch eager, CPU",
                 f"  {'input':>10}  {'max |diff|':>10}  {'argmax agree':>12}"]
        for s in self.sizes:
            lines.append(f"  {f'{s.height}x{s.width}':>10}  {s.max_abs_diff:10.2e}  "
                         f"{100 * s.argmax_agreement:11.3f}%")
        verdict = "PASSED" if self.passed else "FAILED"
        lines.append(f"  {verdict}: max |diff| {self.max_abs_diff:.2e} "
                     f"{'<' if self.passed else '>='} {self.tolerance:g}")
        return "\n".join(lines)


def input_channels(model: nn.Module) -> int:
    """Input channels of a model: those of its first convolution."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    raise ConfigError(f"model must contain a Conv2d to infer its input channels, got "
                      f"{type(model).__name__}; try passing in_channels")


def parity_sizes(model: nn.Module) -> list[tuple[int, int]]:
    """Input sizes for the parity check: `PARITY_SIZES`, or for a valid model (a valid U-Net)
    four distinct sizes its geometry accepts (all even there)."""
    geometry = geometry_of(model)
    if geometry.same_size:
        return list(PARITY_SIZES)
    # accepted sizes are smallest_input + k * align: take k = 0..4, mixing tall and wide
    size = [geometry.smallest_input + k * geometry.align for k in range(5)]
    return [(size[1], size[1]), (size[0], size[3]), (size[2], size[0]), (size[4], size[2])]


def check_parity(
    reference: Callable[[Tensor], Tensor],
    candidate: Callable[[Tensor], Tensor],
    in_channels: int,
    sizes: Sequence[tuple[int, int]],
    batch_size: int = 2,
    seed: int = 0,
) -> tuple[SizeParity, ...]:
    """Run both on the same random `(batch_size, in_channels, h, w)` inputs for each size."""
    generator = torch.Generator().manual_seed(seed)
    results = []
    for height, width in sizes:
        x = torch.randn(batch_size, in_channels, height, width, generator=generator)
        with torch.inference_mode():
            expected, actual = reference(x), candidate(x)
        if expected.shape != actual.shape:
            results.append(SizeParity(height, width, float("inf"), 0.0))
            continue
        diff = (expected - actual).abs().max().item()
        agreement = (expected.argmax(1) == actual.argmax(1)).float().mean().item()
        results.append(SizeParity(height, width, diff, agreement))
    return tuple(results)


def _cpu_eval_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to("cpu").eval()


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    opset: int = 18,
    exporter: str = "auto",
    in_channels: int | None = None,
    sizes: Sequence[tuple[int, int]] | None = None,
    metadata: dict[str, Any] | None = None,
    tolerance: float = TOLERANCE,
) -> ParityReport:
    """Write `model` as ONNX with dynamic batch, height and width, then check it.

    Args:
        model: maps `(N, C, H, W)` to logits; exported from a CPU copy in eval mode.
        path: the `.onnx` file to write.
        opset: ONNX opset, >= 17.
        exporter: "auto", "dynamo" or "legacy" (see module docs).
        in_channels: input channels (default: the first convolution's).
        sizes: parity-check input sizes (default `parity_sizes(model)`).
        metadata: JSON-able dict stored in the file under "pixelwise" (`OnnxModule.metadata`).
        tolerance: the largest logit difference the check accepts.

    Returns:
        The parity report of onnxruntime (CPU) against PyTorch; `report.passed` says whether the
        file can be trusted.
    """
    if opset < 17:
        raise ConfigError(f"opset must be >= 17, got {opset}; try 18")
    onnx = import_extra("onnx", "export")
    model = _cpu_eval_copy(model)
    in_channels = in_channels or input_channels(model)
    sizes = list(sizes or parity_sizes(model))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample, *others = (torch.randn(1, in_channels, *size) for size in sizes)
    used = write_onnx(model, path, sample, opset=opset, exporter=exporter,
                      check=others[0] if others else None)
    if metadata is not None:
        graph = onnx.load(str(path))
        onnx.helper.set_model_props(graph, {METADATA_KEY: json.dumps(metadata)})
        onnx.save(graph, str(path))
    exported = OnnxModule(path)
    report = check_parity(model, exported, in_channels, sizes)
    return ParityReport(path, "onnx", used, tolerance, report)


def export_torchscript(
    model: nn.Module,
    path: str | Path,
    *,
    in_channels: int | None = None,
    sizes: Sequence[tuple[int, int]] | None = None,
    metadata: dict[str, Any] | None = None,
    tolerance: float = TOLERANCE,
) -> ParityReport:
    """Write `model` as TorchScript (`torch.jit.trace`, CPU) and check it as `export_onnx` does.

    `metadata` is stored as the extra file "pixelwise.json" (read it with
    `torch.jit.load(path, _extra_files={"pixelwise.json": ""})`).
    """
    model = _cpu_eval_copy(model)
    in_channels = in_channels or input_channels(model)
    sizes = list(sizes or parity_sizes(model))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # see write_onnx: the parity check speaks for the tracer
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(model, torch.randn(1, in_channels, *sizes[0]))
    extra = {f"{METADATA_KEY}.json": json.dumps(metadata)} if metadata is not None else {}
    torch.jit.save(traced, str(path), _extra_files=extra)
    loaded = torch.jit.load(str(path), map_location="cpu")
    report = check_parity(model, loaded, in_channels, sizes)
    return ParityReport(path, "torchscript", "trace", tolerance, report)


def export_checkpoint(
    checkpoint: str | Path, out: str | Path, format: str = "onnx", **options: Any
) -> ParityReport:
    """Export a `.safetensors` checkpoint (`pixelwise export CKPT --format F --out FILE`).

    The checkpoint's metadata (model spec, classes, palette, mean/std) goes into the exported
    file, so `OnnxModule(out).metadata` rebuilds a `Segmenter` without the checkpoint.
    `options` go to `export_onnx` / `export_torchscript`.
    """
    if format not in ("onnx", "torchscript"):
        raise ConfigError(f"format must be 'onnx' or 'torchscript', got {format!r}; try 'onnx'")
    model, meta = load_model(checkpoint)
    metadata = asdict(meta)
    if format == "onnx":
        return export_onnx(model, out, in_channels=meta.in_channels, metadata=metadata, **options)
    return export_torchscript(model, out, in_channels=meta.in_channels, metadata=metadata,
                              **options)

