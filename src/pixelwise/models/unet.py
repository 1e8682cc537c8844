"""U-Net (Ronneberger, Fischer, Brox 2015), in the paper's "valid" form and a same-size form.

Contracting path: per level two 3x3 convolutions + ReLU, then 2x2 max-pool (stride 2); widths
double per level (64 ... 1024 in the paper, ``base_channels * 2**level`` here). Expanding path: a
2x2 up-convolution halving the channels, concatenation with the (cropped) contracting feature map,
two 3x3 convolutions; a final 1x1 convolution gives the class scores (paper §2, Fig. 1).

``padding="valid"`` is the paper's network: unpadded convolutions, so the output is the centre of
the input (572 -> 388 at depth 4) and only some input sizes are valid (see
:func:`unet_valid_output_size`). ``padding="same"`` (default) pads every convolution by 1 and
max-pools with ``ceil_mode=True``, so any H, W works: the up-sampled map (size ``2 * ceil(s / 2)``)
is cropped at its bottom/right to the skip's size ``s``; pooling cell ``i`` covers pixels ``2i,
2i + 1`` and up-sampling puts its values back exactly there, so the maps stay pixel-aligned.

``encoder="resnet34"`` (or any backbone name: a torchvision classifier such as
``efficientnet_b0`` or ``convnext_tiny``, or ``timm:NAME``; see :mod:`pixelwise.models.backbones`)
swaps the contracting path for that network, optionally ImageNet-pretrained, whose stages at
strides 2-32 feed the same expanding path (five levels; a stride the encoder lacks, such as
ConvNeXt's stride 2, gets no skip). Its stride-2 convolutions centre cell ``i`` on pixel ``2i``
while a 2x2 up-convolution writes it to pixels ``2i, 2i + 1``: a quarter-cell shift per level that
the decoder's 3x3 convolutions learn to absorb (as in other ResNet U-Nets); the plain U-Net has no
such shift.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from pixelwise.errors import ConfigError
from pixelwise.models.backbones import Backbone, build_backbone
from pixelwise.models.geometry import Geometry, geometry_of
from pixelwise.models.layers import centre_crop, crop, reflect_indices
from pixelwise.models.registry import check_choice, check_int, register
from pixelwise.models.weights import check_pretrained

UP_MODES = ("transpose", "bilinear")
PADDINGS = ("same", "valid")
DECODER_STRIDES = (16, 8, 4, 2, 1)  # the expanding path's levels below an encoder's stride 32


def conv_block(
    in_channels: int, out_channels: int, padding: int, batch_norm: bool
) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by (optional batch norm and) ReLU."""
    layers: list[nn.Module] = []
    for cin in (in_channels, out_channels):
        layers.append(nn.Conv2d(cin, out_channels, 3, padding=padding, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def up_block(in_channels: int, out_channels: int, up_mode: str) -> nn.Module:
    """Double the resolution and go from ``in_channels`` to ``out_channels``.

    ``"transpose"``: the paper's 2x2 up-convolution. ``"bilinear"``: fixed bilinear upsampling
    followed by a learned 1x1 convolution (no checkerboard artefacts, fewer parameters).
    """
    if up_mode == "transpose":
        return nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(in_channels, out_channels, 1),
    )


def he_init(modules: list[nn.Module]) -> None:
    """U-Net §3: weights from a Gaussian with std sqrt(2 / N), N = inputs per unit (k * k * C_in)."""
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)


class UNet(nn.Module):
    """U-Net mapping ``(N, in_channels, H, W)`` to logits ``(N, num_classes, H', W')``.

    ``H', W' = H, W`` for ``padding="same"``; for ``padding="valid"`` they are
    ``unet_valid_output_size(H, depth)``, the centre of the input (the paper's overlap-tile setting).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        base_channels: int,
        depth: int,
        batch_norm: bool,
        up_mode: str,
        padding: str,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.padding = padding
        self.output_stride = 1  # the decoder predicts at full resolution
        self.geometry = (unet_valid_geometry(depth) if padding == "valid"
                         else Geometry(align=2**depth))  # depth 2x2 poolings
        pad = 1 if padding == "same" else 0
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList(
            conv_block(cin, cout, pad, batch_norm)
            for cin, cout in zip([in_channels, *widths[:-1]], widths, strict=True)
        )
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=padding == "same")
        self.up = nn.ModuleList(
            up_block(widths[level + 1], widths[level], up_mode) for level in reversed(range(depth))
        )
        self.decode = nn.ModuleList(
            conv_block(2 * widths[level], widths[level], pad, batch_norm)
            for level in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        he_init([self.down, self.up, self.decode, self.head])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "valid":
            for size in x.shape[-2:]:
                unet_valid_output_size(size, self.depth)
        skips = []
        for block in self.down[:-1]:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.down[-1](x)
        for up, decode, skip in zip(self.up, self.decode, reversed(skips), strict=True):
            x = up(x)
            if self.padding == "valid":
                skip = centre_crop(skip, *x.shape[-2:])
            else:
                x = crop(x, 0, 0, *skip.shape[-2:])
            x = decode(torch.cat([skip, x], dim=1))
        return self.head(x)


class EncoderUNet(nn.Module):
    """U-Net expanding path on an encoder: ``(N, C, H, W)`` -> ``(N, num_classes, H, W)``.

    ``widths`` are the decoder's widths at strides 16, 8, 4, 2 and at full resolution, where no
    encoder map is concatenated (:func:`encoder_unet_widths`); each level concatenates the
    encoder's map at its stride when the encoder has one.
    """

    def __init__(
        self,
        encoder: Backbone,
        num_classes: int,
        widths: tuple[int, ...],
        batch_norm: bool,
        up_mode: str,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.output_stride = 1
        self.geometry = Geometry(align=encoder.total_stride)
        bottom = encoder.stage(32)
        skips = {stage.stride: stage for stage in encoder.stages if stage.stride < 32}
        self.bottom_name = bottom.name
        self.skip_names = [skips[s].name if s in skips else None for s in DECODER_STRIDES]
        self.up = nn.ModuleList(
            up_block(cin, cout, up_mode)
            for cin, cout in zip([bottom.channels, *widths[:-1]], widths, strict=True)
        )
        skip_channels = [skips[s].channels if s in skips else 0 for s in DECODER_STRIDES]
        self.decode = nn.ModuleList(
            conv_block(width + skip, width, 1, batch_norm)
            for width, skip in zip(widths, skip_channels, strict=True)
        )
        self.head = nn.Conv2d(widths[-1], num_classes, 1)
        he_init([self.up, self.decode, self.head])  # the encoder keeps its own (or ImageNet) init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        features = self.encoder(x)
        x = features[self.bottom_name]
        levels = zip(DECODER_STRIDES, self.skip_names, self.up, self.decode, strict=True)
        for stride, name, up, decode in levels:
            x = up(x)  # cells 2i, 2i + 1 of cell i: maps agree from the top-left, crop the far end
            if name is None:
                x = crop(x, 0, 0, -(-height // stride), -(-width // stride))
            else:  # ceil-size maps: the skip is the smaller; round-down (padded) maps: x may be
                skip = features[name]
                h, w = min(x.shape[-2], skip.shape[-2]), min(x.shape[-1], skip.shape[-1])
                x = torch.cat([crop(skip, 0, 0, h, w), crop(x, 0, 0, h, w)], dim=1)
            x = decode(x)
        return self.head(x)


# segmentation_models_pytorch's Unet default (decoder_channels=(256, 128, 64, 32, 16)).
SMP_DECODER_CHANNELS = (256, 128, 64, 32, 16)


def encoder_unet_widths(
    base_channels: int, decoder_channels: Sequence[int] | None
) -> tuple[int, ...]:
    """Decoder widths of the encoder U-Net, one per decoder stride (16, 8, 4, 2, 1).

    ``decoder_channels`` when given; otherwise ``base_channels * stride / 2`` and then
    ``base_channels`` (512, 256, 128, 64, 64 at 64), the widths of every model saved before the
    option existed: checkpoints store only the options a config set, so this default stays.
    """
    strides = DECODER_STRIDES[:-1]
    if decoder_channels is None:
        return (*(base_channels * stride // 2 for stride in strides), base_channels)
    if (not isinstance(decoder_channels, (list, tuple))
            or len(decoder_channels) != len(strides) + 1 or base_channels != 64):
        raise ConfigError(
            f"decoder_channels must be {len(strides) + 1} widths (strides "
            f"{', '.join(map(str, strides))}, 1) with base_channels left at 64, got "
            f"decoder_channels={decoder_channels!r}, base_channels={base_channels}; "
            f"try decoder_channels={list(SMP_DECODER_CHANNELS)}"
        )
    for width in decoder_channels:
        check_int("decoder_channels width", width, minimum=1)
    return tuple(int(width) for width in decoder_channels)


def _output_size_or_none(size: int, depth: int) -> int | None:
    """Output size of the valid U-Net for input ``size``, or None when ``size`` is not valid."""
    for _ in range(depth):
        size -= 4  # two unpadded 3x3 convolutions
        if size < 2 or size % 2:
            return None  # 2x2 max-pool needs an even size
        size //= 2
    size -= 4
    for _ in range(depth):
        if size < 1:
            return None
        size = 2 * size - 4  # 2x2 up-convolution, then two 3x3 convolutions
    return size if size >= 1 else None


def unet_valid_input_sizes(depth: int = 4, max_size: int = 1024) -> list[int]:
    """Input sizes up to ``max_size`` that the ``padding="valid"`` U-Net of ``depth`` accepts.

    They are ``2**depth * k + 4 * (2**depth - 1)`` for ``k`` large enough, e.g. ..., 556, 572, 588
    at depth 4 (paper Fig. 1 uses 572).
    """
    return [s for s in range(1, max_size + 1) if _output_size_or_none(s, depth) is not None]


def unet_valid_geometry(depth: int) -> Geometry:
    """The :class:`Geometry` of the ``padding="valid"`` U-Net of ``depth``: valid sizes form the
    progression ``smallest + 2**depth * k``, k >= 0, and each loses the same border (92 pixels
    per side at depth 4: 572 -> 388)."""
    smallest = next(s for s in itertools.count(1) if _output_size_or_none(s, depth) is not None)
    border = (smallest - _output_size_or_none(smallest, depth)) // 2
    return Geometry(align=2**depth, border=border, smallest_input=smallest)


def unet_nearest_valid_input_size(size: int, depth: int = 4) -> int:
    """The valid input size closest to ``size`` (the larger one on a tie)."""
    return unet_valid_geometry(depth).nearest_input_size(size)


def unet_valid_border(depth: int = 4) -> int:
    """Pixels the ``padding="valid"`` U-Net loses on each side of its input (92 at depth 4:
    572 -> 388); the same for every valid input size."""
    return unet_valid_geometry(depth).border


class MirrorExtended(nn.Module):
    """A ``padding="valid"`` U-Net that returns logits of its input's size, for any input size.

    The input is extended by mirroring (U-Net §2, Fig. 2: "the missing context is extrapolated
    by mirroring the input image") by the network's border on the top/left and up to the next
    valid size on the bottom/right; the output is cropped back to the input's size. This is the
    whole-image reference that overlap-tile inference reproduces tile by tile, and what
    validation of a valid U-Net on whole images uses. Any model whose :class:`Geometry` has a
    border can be wrapped; the result keeps its alignment and accepts every size.
    """

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        valid_geometry = geometry_of(unet)
        if valid_geometry.same_size:
            raise ConfigError("MirrorExtended needs a U-Net with padding='valid', got "
                              f"{type(unet).__name__}; a 'same' model already keeps the size")
        self.unet = unet
        self.valid_geometry = valid_geometry
        self.border = valid_geometry.border
        self.geometry = Geometry(align=valid_geometry.align)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K, H, W)`` of a float batch ``(N, C, H, W)`` of any H, W."""
        height, width = x.shape[-2:]
        stops = [self.valid_geometry.input_size_at_least(size + 2 * self.border) - self.border
                 for size in (height, width)]
        index = [torch.from_numpy(reflect_indices(-self.border, stop, size)).to(x.device)
                 for stop, size in zip(stops, (height, width), strict=True)]
        extended = x.index_select(-2, index[0]).index_select(-1, index[1])
        return self.unet(extended)[..., :height, :width]


def same_size_output(model: nn.Module) -> nn.Module:
    """``model`` itself, or wrapped in :class:`MirrorExtended` when its output is smaller than
    its input (a valid U-Net), so the result maps any input to logits of the input's size."""
    return model if geometry_of(model).same_size else MirrorExtended(model)


def unet_valid_output_size(size: int, depth: int = 4) -> int:
    """Output size of the ``padding="valid"`` U-Net for an input of ``size`` pixels (572 -> 388).

    Raises:
        ConfigError: ``size`` is not a valid input size; the message names the nearest valid one.
    """
    output = _output_size_or_none(size, depth)
    if output is None:
        raise ConfigError(
            f"input size of the padding='valid' U-Net (depth {depth}) must be one of "
            f"2**depth * k + {4 * (2**depth - 1)}, got {size}; try "
            f"{unet_nearest_valid_input_size(size, depth)} or padding='same'"
        )
    return output


@register("unet")
def unet(
    *,
    num_classes: int,
    in_channels: int = 3,
    base_channels: int = 64,
    decoder_channels: Sequence[int] | None = None,
    depth: int | None = None,
    batch_norm: bool = True,
    up_mode: str = "transpose",
    padding: str = "same",
    encoder: str | None = None,
    pretrained_backbone: bool | str = False,
) -> nn.Module:
    """U-Net; the paper's exact network is ``padding="valid", batch_norm=False`` (31.0M params
    for 2 classes at ``base_channels=64``, ``depth`` 4). Use ``base_channels`` 8-32 on a CPU.

    ``depth`` is the number of 2x poolings: 4 by default (paper), fixed at 5 with an ``encoder``
    (resnet34, any torchvision classifier with stride-8/16/32 maps, or ``timm:NAME``;
    ``pretrained_backbone=True`` loads its ImageNet weights, a path a local weights file). With an
    encoder, ``decoder_channels`` sets the five decoder widths (strides 16 ... 1); see
    :func:`encoder_unet_widths`. :data:`SMP_DECODER_CHANNELS` costs less than half the default.
    """
    check_int("in_channels", in_channels, minimum=1)
    check_int("base_channels", base_channels, minimum=1)
    check_choice("batch_norm", batch_norm, (True, False))
    check_choice("up_mode", up_mode, UP_MODES)
    check_choice("padding", padding, PADDINGS)
    if not (encoder is None or isinstance(encoder, str)) or encoder == "vgg16":
        raise ConfigError(
            f"encoder must be None or a backbone name other than FCN's 'vgg16', got {encoder!r}; "
            "try encoder='resnet34' or 'vgg16_bn'"
        )
    check_pretrained(pretrained_backbone)
    if encoder is None:
        if pretrained_backbone or decoder_channels is not None:
            raise ConfigError(
                "pretrained_backbone and decoder_channels need an encoder, got encoder=None; "
                "try encoder='resnet34' (the plain U-Net's widths follow base_channels)"
            )
        depth = 4 if depth is None else depth
        check_int("depth", depth, minimum=1)
        return UNet(num_classes, in_channels, base_channels, depth, batch_norm, up_mode, padding)
    if padding != "same" or depth not in (None, 5):
        raise ConfigError(
            f"an encoder must have padding='same' and depth 5, got padding={padding!r}, "
            f"depth={depth!r}; try leaving padding and depth unset"
        )
    backbone = build_backbone(encoder, in_channels=in_channels, pretrained=pretrained_backbone)
    widths = encoder_unet_widths(base_channels, decoder_channels)
    return EncoderUNet(backbone, num_classes, widths, batch_norm, up_mode)
