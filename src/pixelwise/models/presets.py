"""Named model choices for a purpose: each preset is a registered model name and its options.

A preset is not a model of its own: configs and checkpoints store the model name and options it
stands for, so a preset can be retuned later without changing what an old checkpoint rebuilds.
``pixelwise models --preset NAME`` prints one, with the config that trains it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pixelwise.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    """``build(name, num_classes, **options)`` is the preset's model; ``config`` trains it."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    purpose: str = ""
    config: str = ""


PRESETS: dict[str, Preset] = {
    # FCN-4s on MobileNetV3-Large with a non-linear stride-4 skip (refine=32, for thin things
    # such as poles): 3.0M parameters, 0.78x the FLOPs of torchvision's LR-ASPP MobileNetV3. Run
    # at half size through onnxruntime (tta_scales=(0.5,), backend "onnx") a 360x480 frame's
    # label map took 7.2 ms on 2 Zen 4 cores, 139 per second, 0.22-0.25x LR-ASPP's time;
    # trained by its config it scored 0.680 CamVid mean IoU against LR-ASPP's 0.488 in the same
    # 1200 s (bench/realtime_fps.py, bench/camvid.py; docs/benchmarks.md, session 14).
    "realtime": Preset(
        name="fcn4s",
        options={"backbone": "mobilenet_v3_large", "refine": 32},
        purpose=(">= 30 label maps per second of 360x480 frames on 2 CPU cores: run it at half "
                 "size through onnxruntime (predict --tta-scales 0.5 --backend onnx)"),
        config="configs/camvid_cpu.yaml",  # CamVid at 180x240 in 20 minutes on 2 CPU cores
    ),
}


def preset(name: str) -> tuple[str, dict[str, Any]]:
    """``(model name, options)`` of preset ``name``, for :func:`pixelwise.models.build`."""
    if name not in PRESETS:
        raise ConfigError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    chosen = PRESETS[name]
    return chosen.name, dict(chosen.options)


def describe_preset(name: str, num_classes: int = 11) -> str:
    """What ``pixelwise models --preset NAME`` prints: purpose, model, size, how to train it."""
    from pixelwise.models.summary import describe_model

    model_name, options = preset(name)
    info = describe_model(model_name, num_classes, **options)
    arguments = "".join(f", {key}={value!r}" for key, value in options.items())
    return "\n".join([
        f"preset {name}: {PRESETS[name].purpose}",
        f"model: {model_name}, options {options} ({info.parameters / 1e6:.2f}M parameters for "
        f"{num_classes} classes, output stride {info.output_stride})",
        f"Python: build({model_name!r}, num_classes{arguments})",
        f"train: pixelwise train {PRESETS[name].config}",
    ])
