"""Inference backends: one segmentation model run four ways, and a measured choice among them.

A backend is a module with the model's own contract, float `(N, C, H, W)` in, float32 logits
`(N, K, H', W')` out, so `Segmenter`, `predict_tiled` and test-time augmentation run it unchanged
(`Segmenter(..., backend=NAME)`, `pixelwise predict --backend NAME`):

* "torch": PyTorch eager, fp32: the reference the others are compared with.
* "torch-bf16": PyTorch eager under `torch.autocast(dtype=torch.bfloat16)`. Fast only where the
  device computes bf16 natively (`pixelwise.device.bf16_supported`: AVX512-BF16 or AMX CPUs, most
  CUDA GPUs); elsewhere it runs emulated, slower than fp32, and `auto` does not try it.
* "onnx": onnxruntime fp32 on the CPU. The model is exported once (`write_onnx`) into the cache.
* "onnx-int8": onnxruntime with static int8 quantisation (`onnxruntime.quantization`: QDQ
  format, per-channel int8 weights, uint8 activations, MinMax ranges) calibrated on a few images.
* "auto": `choose_backend` runs every backend available here on the calibration images, times
  them interleaved (each round runs every backend once; the median of the rounds counts) and
  takes the fastest whose label maps agree with fp32 on at least `MIN_AGREEMENT` of the pixels.
  The choice is decided by measuring on this machine, never by guessing from the CPU's name.

Exported and quantised files are cached under `cache_dir()` ($PIXELWISE_CACHE, else
~/.cache/pixelwise/backends), keyed by a hash of the model's weights (and, for int8, of the
calibration images), so a second run starts at once. onnxruntime runs with as many threads as
PyTorch (`torch.get_num_threads()`), so the timings compare like with like.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from pixelwise.choices import BACKENDS
from pixelwise.device import bf16_supported
from pixelwise.errors import ConfigError, MissingExtraError, import_extra
from pixelwise.inference.onnx import TOLERANCE, OnnxModule, onnx_difference, write_onnx
from pixelwise.labels import class_ids
from pixelwise.models.geometry import geometry_of

log = logging.getLogger(__name__)

CALIBRATED = ("onnx-int8", "auto")  # the names that need calibration images
MIN_AGREEMENT = 0.995  # argmax agreement with fp32 a backend needs for `auto` to choose it
ROUNDS = 3  # interleaved timing rounds of `choose_backend`


class Bf16Autocast(nn.Module):
    """Runs ``model`` under bfloat16 autocast on its input's device; logits come back float32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.geometry = geometry_of(model)

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.model(x).float()


@dataclass(frozen=True)
class BackendChoice:
    """What ``backend="auto"`` measured and chose; ``print(choice)`` shows a table.

    Attributes:
        name: the backend chosen.
        seconds: median seconds per calibration image of each backend measured.
        agreement: fraction of calibration pixels whose label equals fp32's, per backend.
        skipped: backends not measured, with the reason (no onnxruntime, no native bf16...).
        images: number of calibration images.
    """

    name: str
    seconds: dict[str, float]
    agreement: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)
    images: int = 0

    def __str__(self) -> str:
        reference = self.seconds[_reference(self.seconds)]
        lines = [f"backend auto: chose {self.name}, the fastest whose labels agree with fp32 on "
                 f">= {100 * MIN_AGREEMENT:g} % of pixels ({self.images} calibration images, "
                 f"median of {ROUNDS} interleaved rounds)",
                 f"  {'backend':<11} {'ms / image':>10} {'speed-up':>8} {'agreement':>10}"]
        for name, seconds in self.seconds.items():
            agreement = self.agreement[name]
            verdict = "" if agreement >= MIN_AGREEMENT else "  (rejected: agreement too low)"
            lines.append(f"  {name:<11} {1000 * seconds:10.1f} {reference / seconds:7.2f}x "
                         f"{100 * agreement:9.3f}%{verdict}")
        lines += [f"  {name:<11} not measured: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


def cache_dir() -> Path:
    """Where exported and quantised ONNX files are kept: $PIXELWISE_CACHE, else
    ``$XDG_CACHE_HOME/pixelwise/backends`` (``~/.cache/pixelwise/backends``)."""
    if os.environ.get("PIXELWISE_CACHE"):
        return Path(os.environ["PIXELWISE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "pixelwise" / "backends"


def build_backend(name: str, model: nn.Module, device: torch.device, in_channels: int,
                  calibration: Sequence[Tensor] = ()) -> nn.Module:
    """The module that runs ``model`` as backend ``name`` (one of ``BACKENDS``).

    Args:
        model: a PyTorch model on ``device`` in eval mode, or an :class:`OnnxModule` (then only
            "onnx", the module itself, and "onnx-int8" apply).
        device: where "torch" and "torch-bf16" run; the onnx backends need the CPU.
        in_channels: input channels, for the sample the ONNX export traces.
        calibration: normalised inputs ``(1, C, h, w)`` the int8 ranges are calibrated on.

    Raises:
        ConfigError: an unknown name, an onnx backend off the CPU, int8 without calibration.
        MissingExtraError: onnxruntime (or onnx) is not installed.
    """
    if name not in BACKENDS:
        raise ConfigError(f"backend must be one of {[*BACKENDS, 'auto']}, got {name!r}; "
                          "try 'auto' to measure them")
    if isinstance(model, OnnxModule):
        if name.startswith("torch"):
            raise ConfigError(f"backend {name!r} runs a PyTorch model, got the ONNX file "
                              f"{model.path}; try backend='onnx' or a .safetensors checkpoint")
    elif name == "torch":
        return model
    elif name == "torch-bf16":
        if not bf16_supported(device.type):
            log.warning("backend torch-bf16: this %s has no native bf16 (emulated, likely slower "
                        "than fp32); backend='auto' measures whether it pays", device.type)
        return Bf16Autocast(model)
    if device.type != "cpu":
        raise ConfigError(f"backend {name!r} runs on the CPU, got device {device}; "
                          "try device='cpu', or backend='torch' on the GPU")
    if name == "onnx-int8" and not calibration:
        raise ConfigError("backend 'onnx-int8' needs calibration images to set its int8 ranges, "
                          "got none; try calibration=DIR (or a list of images)")
    fp32 = model.path if isinstance(model, OnnxModule) else _exported(model, in_channels)
    path = _quantised(fp32, calibration) if name == "onnx-int8" else fp32
    if isinstance(model, OnnxModule) and path == model.path:
        return model
    module = OnnxModule(path, threads=torch.get_num_threads())
    module.geometry = geometry_of(model)
    return module


def available_backends(model: nn.Module, device: torch.device) -> tuple[list[str], dict[str, str]]:
    """The backends ``auto`` may try for ``model`` on ``device``, and why the others are not."""
    skipped: dict[str, str] = {}
    names = ["onnx", "onnx-int8"] if isinstance(model, OnnxModule) else ["torch", "torch-bf16"]
    if "torch-bf16" in names and not bf16_supported(device.type):
        names.remove("torch-bf16")
        skipped["torch-bf16"] = (
            "this CPU has no native bf16 (torch.ops.mkldnn._is_mkldnn_bf16_supported() is false)"
            if device.type == "cpu" else f"this {device.type} device does not support bf16")
    if isinstance(model, OnnxModule):
        return names, skipped
    if device.type != "cpu":
        skipped.update({"onnx": "onnxruntime runs on the CPU", "onnx-int8": "likewise"})
        return names, skipped
    try:
        import_extra("onnxruntime", "export")
        import_extra("onnx", "export")
    except MissingExtraError as error:
        skipped.update({"onnx": str(error), "onnx-int8": str(error)})
        return names, skipped
    return [*names, "onnx", "onnx-int8"], skipped


@torch.inference_mode()
def choose_backend(model: nn.Module, device: torch.device, in_channels: int,
                   calibration: Sequence[Tensor], min_agreement: float = MIN_AGREEMENT,
                   wrap: Callable[[nn.Module], nn.Module] | None = None,
                   ) -> tuple[nn.Module, BackendChoice]:
    """Measure the available backends on ``calibration`` and take the fastest that agrees.

    Each backend first runs every calibration input once (its warm-up, and its label maps,
    compared pixel by pixel with the reference: "torch", or "onnx" for an ONNX file); then
    ``ROUNDS`` rounds each time every backend once over all inputs, interleaved, so a busy
    machine slows all alike. The reference is always acceptable. The agreement is measured on
    the images int8 is calibrated on, so it is an optimistic estimate for int8.

    ``wrap`` (for example test-time augmentation, `pixelwise.inference.tta.with_tta`) is put
    round every backend before it is timed and compared, so the choice is made at the sizes and
    views prediction will run: which backend is fastest depends on the input size (on one CPU
    onnxruntime ran a MobileNetV3 FCN-8s 1.9x faster than PyTorch at 180x240 and 1.5x slower at
    360x480), so timing full-size images for a model run at half size chose the wrong one.

    Returns:
        The chosen backend's module (unwrapped) and the :class:`BackendChoice` (also logged at
        INFO).
    """
    if not calibration:
        raise ConfigError("backend 'auto' needs calibration images to measure the backends on, "
                          "got none; try calibration=DIR (or a list of images)")
    names, skipped = available_backends(model, device)
    modules = {name: build_backend(name, model, device, in_channels, calibration)
               for name in names}
    runners = {name: wrap(module) if wrap else module for name, module in modules.items()}
    labels = {name: [class_ids(run(x)) for x in calibration] for name, run in runners.items()}
    reference = labels[_reference(modules)]
    pixels = sum(label.numel() for label in reference)
    agreement = {name: sum((a == b).sum().item() for a, b in zip(maps, reference, strict=True))
                 / pixels for name, maps in labels.items()}
    rounds: dict[str, list[float]] = {name: [] for name in modules}
    for _ in range(ROUNDS):
        for name, run in runners.items():
            start = time.perf_counter()
            for x in calibration:
                # through to the label map as prediction makes it: `class_ids`, not argmax,
                # which took 3.4 ms instead of 0.5 over the classes of onnxruntime's NCHW
                # output at 180x240 and so made onnx look slower than it is
                class_ids(run(x)).cpu()
            rounds[name].append((time.perf_counter() - start) / len(calibration))
    seconds = {name: statistics.median(times) for name, times in rounds.items()}
    accepted = [name for name in modules
                if agreement[name] >= min_agreement or name == _reference(modules)]
    best = min(accepted, key=seconds.__getitem__)
    choice = BackendChoice(best, seconds, agreement, skipped, len(calibration))
    log.info("%s", choice)
    return modules[best], choice


def _reference(names: Sequence[str] | dict) -> str:
    return "torch" if "torch" in names else "onnx"


def _model_key(model: nn.Module) -> str:
    """A hash of the model's class, weights and the torch version (the exporter's)."""
    digest = hashlib.sha256(f"{type(model).__qualname__} {torch.__version__}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:20]


def _exported(model: nn.Module, in_channels: int) -> Path:
    """The model as an ONNX file in the cache, exported on first use.

    `write_onnx`'s "auto" rule: the legacy exporter (tracing, under a second where
    ``torch.export`` takes tens) unless its graph differs from PyTorch on a second, odd size
    (it can bake the traced size into Python-side size arithmetic), then "dynamo", whose
    file is checked on that size too.
    """
    path = cache_dir() / f"{_model_key(model)}.onnx"
    if path.is_file():
        return path
    import_extra("onnx", "export")
    path.parent.mkdir(parents=True, exist_ok=True)
    geometry = geometry_of(model)
    trace, check = (torch.randn(1, in_channels, geometry.input_size_at_least(h),
                                geometry.input_size_at_least(w)) for h, w in ((64, 64), (75, 97)))
    cpu_model = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).eval()
    partial = path.with_suffix(f".{os.getpid()}.part.onnx")
    exporter = write_onnx(cpu_model, partial, trace, check=check)  # legacy, checked; else dynamo
    difference = 0.0 if exporter == "legacy" else onnx_difference(partial, cpu_model, check)
    if difference >= TOLERANCE:
        partial.unlink()
        raise ConfigError(f"model must export to ONNX computing what PyTorch computes, got a "
                          f"largest logit difference of {difference:.2g}; try backend='torch'")
    os.replace(partial, path)  # whole files only, even with several processes at once
    log.info("exported the model to %s (%s exporter) for the onnx backends", path, exporter)
    return path


class _CalibrationReader:
    """onnxruntime's `CalibrationDataReader` protocol over a list of normalised inputs."""

    def __init__(self, input_name: str, inputs: Sequence[Tensor]) -> None:
        self._items = iter([{input_name: x.detach().to("cpu", torch.float32).contiguous().numpy()}
                            for x in inputs])

    def get_next(self) -> dict | None:
        return next(self._items, None)


def _quantised(fp32: Path, calibration: Sequence[Tensor]) -> Path:
    """The int8 (QDQ) version of the ONNX file ``fp32``, calibrated on ``calibration``."""
    digest = hashlib.sha256(fp32.read_bytes())
    for x in calibration:
        digest.update(str(tuple(x.shape)).encode())
        digest.update(x.detach().to("cpu", torch.float32).contiguous().numpy())
    path = cache_dir() / f"{fp32.stem}-int8-{digest.hexdigest()[:12]}.onnx"
    if path.is_file():
        return path
    quantization = import_extra("onnxruntime.quantization", "export")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path.parent.mkdir(parents=True, exist_ok=True)
    prepared = path.with_suffix(f".{os.getpid()}.pre.onnx")
    partial = path.with_suffix(f".{os.getpid()}.part.onnx")
    # graph fusions and ONNX shape inference first (the symbolic one gives up on free sizes)
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    input_name = OnnxModule(fp32, threads=1).input_name
    quantization.quantize_static(
        str(prepared), str(partial), _CalibrationReader(input_name, calibration),
        quant_format=quantization.QuantFormat.QDQ, per_channel=True,
        activation_type=quantization.QuantType.QUInt8, weight_type=quantization.QuantType.QInt8,
        calibrate_method=quantization.CalibrationMethod.MinMax)
    prepared.unlink()
    os.replace(partial, path)
    log.info("quantised %s to int8 on %d calibration images: %s", fp32.name, len(calibration),
             path)
    return path
