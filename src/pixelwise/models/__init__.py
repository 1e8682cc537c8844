"""Segmentation models: the FCN family and U-Net, built by name through one registry.

>>> model = build("unet", num_classes=2, in_channels=1, base_channels=8, depth=3)
>>> model = build("fcn8s", num_classes=21, backbone="resnet18", pretrained_backbone=True)
>>> build("unet", num_classes=2, padding="valid").geometry  # what tiling and export read
Geometry(align=16, border=92, smallest_input=188)
>>> model = build("unet", num_classes=2, encoder="efficientnet_b0")  # any torchvision classifier
>>> model = build("unet", num_classes=2, encoder="timm:convnext_nano")  # pixelwise[timm]
"""

from pixelwise.models import fcn as _fcn  # noqa: F401  (registers fcn32s ... fcn4s)
from pixelwise.models import unet as _unet  # noqa: F401  (registers unet)
from pixelwise.models.backbones import BACKBONES
from pixelwise.models.convolutionalize import convolutionalize
from pixelwise.models.fcn import init_from
from pixelwise.models.geometry import SAME_SIZE, Geometry, geometry_of
from pixelwise.models.layers import bilinear_upsample_weight
from pixelwise.models.presets import PRESETS, describe_preset, preset
from pixelwise.models.registry import available, build, model_geometry, model_options
from pixelwise.models.summary import (
    EncoderTable,
    ModelInfo,
    ModelTable,
    count_parameters,
    describe_encoders,
    describe_models,
)
from pixelwise.models.unet import (
    MirrorExtended,
    same_size_output,
    unet_nearest_valid_input_size,
    unet_valid_border,
    unet_valid_input_sizes,
    unet_valid_output_size,
)

__all__ = [
    "BACKBONES",
    "SAME_SIZE",
    "Geometry",
    "EncoderTable",
    "MirrorExtended",
    "ModelInfo",
    "ModelTable",
    "PRESETS",
    "available",
    "bilinear_upsample_weight",
    "build",
    "convolutionalize",
    "count_parameters",
    "describe_encoders",
    "describe_models",
    "describe_preset",
    "geometry_of",
    "init_from",
    "model_geometry",
    "model_options",
    "preset",
    "same_size_output",
    "unet_nearest_valid_input_size",
    "unet_valid_border",
    "unet_valid_input_sizes",
    "unet_valid_output_size",
]
