"""Segmentation models: the FCN family and U-Net, built by name through one registry.

>>> model = build("unet", num_classes=2, in_channels=1, base_channels=8, depth=3)
"""

from pixelwise.models import unet as _unet  # noqa: F401  (registers "unet")
from pixelwise.models.registry import available, build, model_options
from pixelwise.models.unet import (
    unet_nearest_valid_input_size,
    unet_valid_input_sizes,
    unet_valid_output_size,
)

__all__ = [
    "available",
    "build",
    "model_options",
    "unet_nearest_valid_input_size",
    "unet_valid_input_sizes",
    "unet_valid_output_size",
]
