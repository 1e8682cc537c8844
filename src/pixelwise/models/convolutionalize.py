"""Turn torchvision's VGG16 ImageNet classifier into a fully convolutional network (FCN Fig. 2).

FCN §3.1: a fully connected layer is a convolution whose kernel covers its whole input region, so
fc6 (25088 -> 4096 on a 512x7x7 map) becomes a 7x7 convolution and fc7/fc8 become 1x1
convolutions. The network then takes inputs of any size and outputs a map of class scores.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import VGG


def linear_to_conv(linear: nn.Linear, in_channels: int, kernel_size: int) -> nn.Conv2d:
    """A ``kernel_size`` x ``kernel_size`` convolution computing ``linear`` at each position.

    ``linear.weight`` ``(out, in_channels * k * k)`` is read in the ``(C, H, W)`` order in which
    ``torch.flatten`` lays out the map, i.e. reshaped to ``(out, in_channels, k, k)``.
    """
    # no random init of its own (fc6 has 103M weights): every value is copied over
    conv = nn.utils.skip_init(nn.Conv2d, in_channels, linear.out_features, kernel_size,
                              device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(conv.weight.shape))
        conv.bias.copy_(linear.bias)
    return conv


def convolutional_fc_layers(vgg: VGG) -> tuple[nn.Conv2d, nn.Conv2d, nn.Conv2d]:
    """fc6 (7x7), fc7 (1x1) and fc8 (1x1) convolutions from the classifier of ``vgg``."""
    fc6, fc7, fc8 = (m for m in vgg.classifier if isinstance(m, nn.Linear))
    return (
        linear_to_conv(fc6, fc6.in_features // 49, 7),
        linear_to_conv(fc7, fc7.in_features, 1),
        linear_to_conv(fc8, fc8.in_features, 1),
    )


def convolutionalize(vgg: VGG) -> nn.Sequential:
    """The fully convolutional form of a torchvision VGG16 classifier (features shared, fc weights copied).

    Maps ``(N, 3, H, W)`` to class scores ``(N, 1000, h, w)`` with ``h = floor(H / 32) - 6``
    (pool5 size minus fc6's 7x7 window), so 224x224 gives 1x1 (equal to ``vgg(x)``) and 500x500
    gives 9x9. torchvision's ``AdaptiveAvgPool2d(7)`` is left out: it is the identity at 224x224
    and would squash any other size back to 7x7, defeating dense prediction.
    """
    fc6, fc7, fc8 = convolutional_fc_layers(vgg)
    dropout = [m.p for m in vgg.classifier if isinstance(m, nn.Dropout)]
    return nn.Sequential(
        *vgg.features,
        fc6,
        nn.ReLU(inplace=True),
        nn.Dropout(dropout[0]),
        fc7,
        nn.ReLU(inplace=True),
        nn.Dropout(dropout[1]),
        fc8,
    )
