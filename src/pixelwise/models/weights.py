"""ImageNet weights for the backbones, through torchvision's own weights API.

torchvision downloads each file once into the torch hub cache (``torch.hub.get_dir()/checkpoints``,
moved by ``TORCH_HOME``) and reads it from there afterwards, so a machine without internet works
once the file is in place. When it is not, we raise :class:`WeightsNotFoundError` naming the file
and the folder to put it in.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from torchvision.models import (
    MobileNet_V3_Large_Weights,
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    VGG16_Weights,
    WeightsEnum,
)

from pixelwise.errors import WeightsNotFoundError

IMAGENET_WEIGHTS: dict[str, WeightsEnum] = {
    "vgg16": VGG16_Weights.IMAGENET1K_V1,  # the only VGG16 weights with the fc6/fc7 classifier
    "resnet18": ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": ResNet50_Weights.IMAGENET1K_V2,
    "mobilenet_v3_large": MobileNet_V3_Large_Weights.IMAGENET1K_V2,
}


def cached_weights_path(backbone: str) -> Path:
    """Where torchvision looks for ``backbone``'s ImageNet weights file before downloading it."""
    filename = os.path.basename(urlparse(IMAGENET_WEIGHTS[backbone].url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def load_imagenet_state_dict(backbone: str) -> dict[str, torch.Tensor]:
    """The torchvision ImageNet classifier's state dict for ``backbone`` (cache, else download).

    Raises:
        WeightsNotFoundError: the file is not cached and cannot be downloaded.
    """
    weights = IMAGENET_WEIGHTS[backbone]
    try:
        return weights.get_state_dict(progress=False, weights_only=True)
    except (URLError, ConnectionError, TimeoutError) as error:
        path = cached_weights_path(backbone)
        raise WeightsNotFoundError(
            f"ImageNet weights for backbone {backbone!r} must be in the torch hub cache, got no "
            f"file {path} and the download of {weights.url} failed ({error}); try downloading "
            f"that URL elsewhere and copying it to {path} (TORCH_HOME moves the cache), or "
            "pretrained_backbone=False"
        ) from error


def describe_imagenet_weights() -> str:
    """Which backbones have ImageNet weights and whether each file is in the local torch hub
    cache (``pretrained_backbone=True`` reads it from there, or downloads it once)."""
    lines = [f"ImageNet weights (pretrained_backbone=true), torch hub cache "
             f"{Path(torch.hub.get_dir()) / 'checkpoints'}:"]
    for backbone in IMAGENET_WEIGHTS:
        path = cached_weights_path(backbone)
        state = "cached" if path.is_file() else "not cached: downloaded on first use"
        lines.append(f"  {backbone:<20} {path.name:<40} {state}")
    return "\n".join(lines)
