"""Parameter counts and output strides of the standard model configurations.

Models are built on the meta device (shapes only, no memory, no compute), so describing even the
134M-parameter FCN-8s is instant. Used by ``pixelwise models`` and ``python -m pixelwise.models``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pixelwise.models.backbones import BACKBONES
from pixelwise.models.registry import build

# (name, num_classes, options): the papers' networks (FCN on PASCAL VOC's 21 classes; U-Net on
# the 2-class ISBI cell tracking / EM data) and the CPU-sized variants.
STANDARD_CONFIGURATIONS: list[tuple[str, int, dict[str, Any]]] = [
    *(
        (name, 21, {"backbone": backbone})
        for backbone in BACKBONES
        for name in ("fcn32s", "fcn16s", "fcn8s")
    ),
    ("unet", 2, {"in_channels": 1, "padding": "valid", "batch_norm": False}),
    ("unet", 2, {"in_channels": 1}),
    ("unet", 2, {"in_channels": 1, "base_channels": 16}),
    ("unet", 2, {"encoder": "resnet34"}),
]


@dataclass(frozen=True)
class ModelInfo:
    """One row of the model table."""

    name: str
    num_classes: int
    options: dict[str, Any]
    backbone: str
    output_stride: int
    parameters: int


@dataclass(frozen=True)
class ModelTable:
    """``rows`` as data; ``str(table)`` is the aligned text table ``pixelwise models`` prints."""

    rows: list[ModelInfo] = field(default_factory=list)

    def __str__(self) -> str:
        header = ("model", "classes", "backbone", "stride", "parameters", "options")
        lines = [header] + [
            (
                r.name,
                str(r.num_classes),
                r.backbone,
                str(r.output_stride),
                f"{r.parameters / 1e6:.2f}M",
                " ".join(f"{k}={v}" for k, v in r.options.items() if k != "backbone"),
            )
            for r in self.rows
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in lines
        )


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (learnable or not) of ``model``."""
    return sum(param.numel() for param in model.parameters())


def describe_model(name: str, num_classes: int, **options: Any) -> ModelInfo:
    """Build ``name`` on the meta device and report its backbone, output stride and size."""
    with torch.device("meta"):
        model = build(name, num_classes, **options)
    return ModelInfo(
        name=name,
        num_classes=num_classes,
        options=options,
        backbone=options.get("backbone", "vgg16" if name.startswith("fcn") else None)
        or options.get("encoder")
        or "-",
        output_stride=model.output_stride,
        parameters=count_parameters(model),
    )


def describe_models(
    configurations: list[tuple[str, int, dict[str, Any]]] | None = None,
) -> ModelTable:
    """:func:`describe_model` for each configuration (default :data:`STANDARD_CONFIGURATIONS`)."""
    configurations = STANDARD_CONFIGURATIONS if configurations is None else configurations
    return ModelTable([describe_model(name, k, **options) for name, k, options in configurations])
