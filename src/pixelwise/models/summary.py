"""Parameter counts and output strides of the standard model configurations, and the encoders.

Models are built on the meta device (shapes only, no memory, no compute), so describing even the
134M-parameter FCN-8s is instant. Used by ``pixelwise models`` and ``python -m pixelwise.models``;
``pixelwise models --encoders`` prints :func:`describe_encoders`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pixelwise.models.backbones import BACKBONES, TIMM_PREFIX, encoder_families
from pixelwise.models.registry import build
from pixelwise.models.weights import (
    cached_weights_path,
    imagenet_weights,
    is_cached,
    timm_weights_files,
)

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
        return aligned(lines)


def aligned(lines: list[tuple[str, ...]]) -> str:
    """Rows of cells as text, each column padded to its widest cell."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


@dataclass(frozen=True)
class EncoderInfo:
    """One row of the encoder table: a name ``backbone=`` / ``encoder=`` accepts."""

    name: str
    family: str
    parameters: int | None  # of the ImageNet classifier; None where not known without building
    weights_file: str  # where the library's cache keeps its ImageNet weights ("-": it has none)
    cached: bool


@dataclass(frozen=True)
class EncoderTable:
    """``rows`` as data; ``str(table)`` is what ``pixelwise models --encoders`` prints."""

    rows: list[EncoderInfo] = field(default_factory=list)
    note: str = ""

    def __str__(self) -> str:
        header = ("encoder", "family", "classifier params", "ImageNet weights", "weights file")
        lines = [header] + [
            (
                r.name,
                r.family,
                "?" if r.parameters is None else f"{r.parameters / 1e6:.1f}M",
                "none" if r.weights_file == "-" else "cached" if r.cached else "not cached",
                r.weights_file,
            )
            for r in self.rows
        ]
        return aligned(lines) + (f"\n{self.note}" if self.note else "")


# Counting a timm model's parameters builds it (about 0.2 s on the meta device): a filter that
# matches more names than this lists them without counts, saying so.
TIMM_COUNT_LIMIT = 16


def describe_encoders(contains: str = "") -> EncoderTable:
    """The torchvision encoder families' members whose name (or family) contains ``contains``
    (case-insensitive), and, when it is given and timm is installed, timm's architectures too
    (a ``timm:`` prefix keeps only those). Parameters are those of the ImageNet classifier:
    torchvision's weights metadata states them; timm's are counted on the meta device."""
    query = contains.lower()
    rows = []
    if not query.startswith(TIMM_PREFIX):
        for family, names in encoder_families().items():
            for name in names:
                if query in name or query in family.lower():
                    path = cached_weights_path(name)
                    parameters = imagenet_weights(name).meta["num_params"]
                    rows.append(EncoderInfo(name, family, parameters, str(path), path.is_file()))
    try:
        import timm
    except ImportError:
        return EncoderTable(rows, "timm:NAME encoders need pip install 'pixelwise[timm]'")
    if not query:
        count = len(timm.list_models())
        return EncoderTable(rows, f"and {count} timm:NAME encoders: --filter timm:NAME lists them")
    names = timm.list_models(f"*{query.removeprefix(TIMM_PREFIX)}*")
    count = len(names) <= TIMM_COUNT_LIMIT
    for name in names:
        files = timm_weights_files(name)
        parameters = timm_parameters(timm, name) if count else None
        cached = any(is_cached(path) for path in files)
        file = str(files[0]) if files else "-"
        rows.append(EncoderInfo(TIMM_PREFIX + name, "timm", parameters, file, cached))
    note = "" if count else (f"timm parameters (?) are counted when at most {TIMM_COUNT_LIMIT} "
                             f"timm names match (building each takes a while); this matched "
                             f"{len(names)}: narrow --filter")
    return EncoderTable(rows, note)


def timm_parameters(timm: Any, name: str) -> int | None:
    """Parameters of timm's ``name``, counted on the meta device (about 0.2 s a model here);
    None for a constructor that reads tensor values."""
    try:
        with torch.device("meta"):
            return count_parameters(timm.create_model(name))
    except (RuntimeError, NotImplementedError):
        return None


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
