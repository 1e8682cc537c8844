"""Feature extractors for the FCN head and the U-Net encoder.

A :class:`Backbone` maps ``(N, in_channels, H, W)`` to an ordered dict of named feature maps and
states its stages: channels, stride, and the input pixel on which feature index 0 is centred
(``offset``; feature index ``i`` is centred on pixel ``stride * i + offset``). The FCN head uses
strides and offsets to crop and align its skips exactly; a test checks every stated stage against
real output shapes and against flip symmetry (which holds exactly when the offset is right).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from pixelwise.errors import ConfigError
from pixelwise.models.convolutionalize import convolutional_fc_layers
from pixelwise.models.weights import load_imagenet_state_dict

BACKBONES = ("vgg16", "resnet18", "resnet34", "resnet50", "mobilenet_v3_large")


@dataclass(frozen=True)
class Stage:
    """One feature map a backbone returns: key, channels, stride and offset in input pixels."""

    name: str
    channels: int
    stride: int
    offset: float


class Backbone(nn.Module):
    """``body`` returning ``{stage.name: (N, stage.channels, ~H / stride, ~W / stride)}``."""

    def __init__(self, body: nn.Module, stages: tuple[Stage, ...]) -> None:
        super().__init__()
        self.body = body
        self.stages = stages

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.body(x)

    @property
    def total_stride(self) -> int:
        """The backbone's total downsampling: the stride of its deepest stage (the body stops
        there), which is what a model built on it must align its input tiles to."""
        return max(stage.stride for stage in self.stages)

    def stage(self, stride: int) -> Stage:
        """The stage at ``stride``; raises ConfigError listing the strides available."""
        for stage in self.stages:
            if stage.stride == stride:
                return stage
        raise ConfigError(
            f"backbone stride must be one of {[s.stride for s in self.stages]}, got {stride}"
        )


class VGG16FCNBody(nn.Module):
    """VGG16 as FCN uses it: conv1_1 padded by 100, ceil-mode pools, fc6/fc7 as convolutions.

    FCN reference implementation: the 100-pixel pad lets fc6's 7x7 window fit any input, however
    small, and ceil-mode pooling (Caffe's) keeps every input pixel inside the last pooling cell.
    Returns ``pool3`` (stride 8), ``pool4`` (stride 16) and ``fc7`` (stride 32).
    """

    def __init__(self, features: nn.Sequential, fc6: nn.Conv2d, fc7: nn.Conv2d) -> None:
        super().__init__()
        self.to_pool3 = features[:17]
        self.to_pool4 = features[17:24]
        self.to_pool5 = features[24:]
        self.fc = nn.Sequential(
            fc6, nn.ReLU(inplace=True), nn.Dropout(), fc7, nn.ReLU(inplace=True), nn.Dropout()
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        pool3 = self.to_pool3(x)
        pool4 = self.to_pool4(pool3)
        return {"pool3": pool3, "pool4": pool4, "fc7": self.fc(self.to_pool5(pool4))}


# Offsets, in Caffe's coordinate-mapping arithmetic: a layer with kernel k, stride s, padding p
# maps output index i to input position s * i + (k - 1) / 2 - p. conv1_1 (k3, p100): -99; each 2x2
# pool adds 0.5 * (stride so far): pool3 -99 + 0.5 + 1 + 2 = -95.5, pool4 -91.5, pool5 -83.5;
# fc6 (k7, p0) adds 3 * 32: 12.5. They reproduce the reference crop offsets (19; 5, 27; 5, 9, 31).
VGG16_STAGES = (Stage("pool3", 256, 8, -95.5), Stage("pool4", 512, 16, -91.5))

# torchvision's ResNet and MobileNetV3 pad every convolution/pool by (k - 1) / 2, so every layer
# maps index i to 2 * i (or i): all offsets are 0.
RESNET_STAGES = {
    "resnet18": (64, 64, 128, 256, 512),
    "resnet34": (64, 64, 128, 256, 512),
    "resnet50": (64, 256, 512, 1024, 2048),
}
MOBILENET_V3_LARGE_STAGES = (
    Stage("features.6", 40, 8, 0.0),
    Stage("features.12", 112, 16, 0.0),
    Stage("features.16", 960, 32, 0.0),
)


def build_backbone(
    name: str, *, in_channels: int, pretrained: bool, fc_channels: int = 4096
) -> Backbone:
    """Backbone ``name`` (one of :data:`BACKBONES`), optionally with torchvision ImageNet weights.

    ``fc_channels`` sets the width of VGG16's fc6/fc7 (4096 in the paper; small for tests).
    With ``in_channels != 3`` the first convolution's weights are averaged over RGB and repeated.
    """
    if name not in BACKBONES:
        raise ConfigError(f"backbone must be one of {list(BACKBONES)}, got {name!r}")
    if name == "vgg16":
        return vgg16_fcn_backbone(in_channels, pretrained, fc_channels)
    if fc_channels != 4096:
        raise ConfigError(
            f"fc_channels only applies to backbone='vgg16', got fc_channels={fc_channels} with "
            f"backbone={name!r}; try removing fc_channels"
        )
    model = getattr(torchvision.models, name)(weights=None)
    if pretrained:
        model.load_state_dict(load_imagenet_state_dict(name))
    if name.startswith("resnet"):
        model.conv1 = adapt_first_conv(model.conv1, in_channels)
        names = ("relu", "layer1", "layer2", "layer3", "layer4")
        stages = tuple(
            Stage(n, c, 2**level, 0.0)
            for level, (n, c) in enumerate(zip(names, RESNET_STAGES[name], strict=True), start=1)
        )
    else:
        model.features[0][0] = adapt_first_conv(model.features[0][0], in_channels)
        stages = MOBILENET_V3_LARGE_STAGES
    body = create_feature_extractor(model, return_nodes=[stage.name for stage in stages])
    return Backbone(body, stages)


def vgg16_fcn_backbone(in_channels: int, pretrained: bool, fc_channels: int) -> Backbone:
    """VGG16 as in FCN §4.1 (see :class:`VGG16FCNBody`); pretrained fc6/fc7 by convolutionalization."""
    if pretrained:
        if fc_channels != 4096:
            raise ConfigError(
                f"fc_channels must be 4096 with pretrained_backbone=True, got {fc_channels}; "
                "try fc_channels=4096 or pretrained_backbone=False"
            )
        vgg = torchvision.models.vgg16(weights=None)
        vgg.load_state_dict(load_imagenet_state_dict("vgg16"))
        features = vgg.features
        fc6, fc7, _ = convolutional_fc_layers(vgg)
    else:
        # Only the conv layers: building torchvision's whole VGG16 would initialise its unused
        # 120M-parameter classifier. Same init as torchvision's VGG for the convolutions.
        features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
        fc6, fc7 = nn.Conv2d(512, fc_channels, 7), nn.Conv2d(fc_channels, fc_channels, 1)
        for conv in (*features, fc6, fc7):
            if isinstance(conv, nn.Conv2d):
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(conv.bias)
    features[0] = adapt_first_conv(features[0], in_channels)
    features[0].padding = (100, 100)
    for layer in features:
        if isinstance(layer, nn.MaxPool2d):
            layer.ceil_mode = True
    stages = (*VGG16_STAGES, Stage("fc7", fc_channels, 32, 12.5))
    return Backbone(VGG16FCNBody(features, fc6, fc7), stages)


def adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """``conv`` taking ``in_channels`` inputs; RGB weights averaged and repeated (scaled by
    ``3 / in_channels`` so activations keep their size). Unchanged when ``in_channels == 3``."""
    if in_channels == conv.in_channels:
        return conv
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        mean = conv.weight.mean(dim=1, keepdim=True)
        new.weight.copy_(mean.repeat(1, in_channels, 1, 1) * 3 / in_channels)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new
