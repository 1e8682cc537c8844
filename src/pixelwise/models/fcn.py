"""Fully convolutional networks FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer, Darrell 2015), and
FCN-4s, one skip further, for thin objects.

A backbone gives feature maps at stride 32 (VGG16: fc7), 16 (pool4) and 8 (pool3); torchvision
and timm backbones also at stride 4, which FCN-4s adds the same way (the paper stops at 8: "we
meet diminishing returns"; on CamVid at 180x240 a pole is 1-3 pixels wide). The head
scores the stride-32 map with a 1x1 convolution, then for each skip (FCN §4.2) upsamples the
scores 2x with a bilinear-initialised learnable ``ConvTranspose2d``, adds a zero-initialised 1x1
score of the finer feature map, and finally upsamples to the input resolution and crops.
``refine`` (beyond the paper) makes the finest skip non-linear: see :func:`_refine_block`.

Alignment. Every feature map is a grid ``stride * i + offset`` in input pixels (see
:class:`~pixelwise.models.backbones.Stage`). A ``ConvTranspose2d`` with stride ``f`` and kernel
``k`` puts output ``j`` at input index ``(j - (k - 1) / 2) / f``; we pick ``k = 2f`` (the paper's,
half-pixel centre) or ``k = 2f - 1`` (whole-pixel centre), whichever lands the upsampled grid
exactly on the finer grid, and crop the two maps to their common extent before adding. For VGG16
(conv1_1 padded by 100, as in the paper's reference code) this yields ``k = 2f`` and exactly the
reference crops: 19 (32s); 5 then 27 (16s); 5, 9 then 31 (8s). For torchvision ResNets and
MobileNetV3 (offset 0) it yields ``k = 2f - 1``. The output is the input-sized window of the last
upsampled map, pixel for pixel, for any input size.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from pixelwise.errors import CheckpointError, ConfigError
from pixelwise.models.backbones import BACKBONES, Backbone, Stage, build_backbone
from pixelwise.models.geometry import Geometry
from pixelwise.models.layers import bilinear_upsampler, crop, smaller
from pixelwise.models.registry import check_choice, check_int, register

# "At-once" training (FCN journal version; reference net voc-fcn8s-atonce): skip inputs are scaled
# so their initial contribution is small next to the coarse scores.
AT_ONCE_SKIP_SCALES = {16: 0.01, 8: 0.0001}
# The strides the scores are fused from, coarsest first: FCN-32s uses the first, FCN-4s all four.
FCN_STRIDES = (32, 16, 8, 4)


def upsampling_alignment(
    source: tuple[int, float], factor: int, target: tuple[int, float]
) -> tuple[int, int]:
    """Kernel size and shift that align a ``factor`` x upsampled ``source`` grid with ``target``.

    ``source`` and ``target`` are ``(stride, offset)`` grids with ``target stride = source stride /
    factor``. Returns ``(k, shift)``: after ``ConvTranspose2d(k, stride=factor)`` the upsampled
    index ``x + shift`` lies on target index ``x`` (shift < 0: upsampled ``x`` on target
    ``x - shift``).
    """
    (stride, offset), (target_stride, target_offset) = source, target
    assert stride == factor * target_stride  # internal: strides come from Stage definitions
    gap = (target_offset - offset) / target_stride
    for kernel_size in (2 * factor, 2 * factor - 1):
        shift = gap + (kernel_size - 1) / 2
        if shift == int(shift):
            return kernel_size, int(shift)
    raise ConfigError(
        f"feature grids must be offset by a multiple of half the stride to align, got source "
        f"{source} and target {target}; this backbone's stages are misdeclared"
    )


def check_refine(strides: list[int] | tuple[int, ...], refine: int) -> None:
    """ConfigError unless an FCN fusing scores of ``strides`` (coarsest first) has a skip for
    ``refine`` to make non-linear (any FCN but FCN-32s, or ``refine`` 0)."""
    if refine and len(strides) < 2:
        raise ConfigError(f"refine must be 0 for fcn32s (it has no skips), got {refine}")


def check_at_once(strides: list[int] | tuple[int, ...]) -> None:
    """ConfigError unless "at-once" training can scale every skip of an FCN fusing scores of
    ``strides`` (coarsest first): it needs skips, and the reference nets scale those of
    strides 16 and 8 only (``AT_ONCE_SKIP_SCALES``)."""
    if len(strides) < 2:
        raise ConfigError("at_once must be False for fcn32s (it has no skips), got True")
    unscaled = [stride for stride in strides[1:] if stride not in AT_ONCE_SKIP_SCALES]
    if unscaled:
        raise ConfigError(f"at_once must be False for fcn{min(strides)}s (the reference nets "
                          f"scale skips of strides 16 and 8 only, not {unscaled}), got True")


class FCN(nn.Module):
    """FCN head on a backbone: ``(N, C, H, W)`` -> logits ``(N, num_classes, H, W)``.

    ``skips`` is 0 (FCN-32s), 1 (FCN-16s: + stride 16), 2 (FCN-8s: + stride 8) or 3 (FCN-4s:
    + stride 4, for backbones that have it). Score layers
    are zero-initialised (FCN §4.2, §4.3), so at step one only the score layers get gradients.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        skips: int,
        at_once: bool = False,
        refine: int = 0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        strides = list(FCN_STRIDES[: skips + 1])
        self.stages: list[Stage] = [backbone.stage(s) for s in strides]
        if any(stage.offset is None for stage in self.stages):
            raise ConfigError(
                f"backbone stages must state their offsets for FCN's skip alignment, got "
                f"{self.stages}; this timm model's graph could not be traced: use it as a U-Net "
                "encoder, or pick another backbone"
            )
        self.output_stride = strides[-1]  # finest feature map the scores are fused from
        self.geometry = Geometry(align=backbone.total_stride)  # any input size, output the same
        if at_once:
            check_at_once(strides)
        self.skip_scales = [AT_ONCE_SKIP_SCALES[s] if at_once else 1.0 for s in strides[1:]]
        check_refine(strides, refine)
        self.refine = _refine_block(self.stages[-1].channels + num_classes, refine)
        # the finest score reads the refine block's output when there is one
        score_inputs = [st.channels for st in self.stages[:-1]] + [refine or self.stages[-1].channels]
        self.score = nn.ModuleDict(
            {str(st.stride): _zero_conv(channels, num_classes)
             for st, channels in zip(self.stages, score_inputs, strict=True)}
        )
        self.upsample = nn.ModuleDict()
        self.shifts: list[int] = []
        grid = (self.stages[0].stride, self.stages[0].offset)
        for stage in self.stages[1:]:
            kernel_size, shift = upsampling_alignment(grid, 2, (stage.stride, stage.offset))
            self.upsample[f"{grid[0]}to{stage.stride}"] = bilinear_upsampler(
                num_classes, 2, kernel_size
            )
            self.shifts.append(shift)
            # The sum covers both maps' common extent, which starts on the later-starting grid.
            grid = (stage.stride, stage.offset + stage.stride * max(-shift, 0))
        kernel_size, shift = upsampling_alignment(grid, grid[0], (1, 0.0))
        if shift < 0:
            raise ConfigError(
                f"backbone features must start at or before the first pixel, got offset {grid[1]}"
            )
        self.upsample[f"{grid[0]}to1"] = bilinear_upsampler(num_classes, grid[0], kernel_size)
        self.shifts.append(shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        features = self.backbone(x)
        *skip_upsamplers, final_upsampler = self.upsample.values()
        scores = self.score[str(self.stages[0].stride)](features[self.stages[0].name])
        for stage, scale, upsample, shift in zip(
            self.stages[1:], self.skip_scales, skip_upsamplers, self.shifts[:-1], strict=True
        ):
            up, fine = upsample(scores), features[stage.name] * scale
            up_start, fine_start = max(shift, 0), max(-shift, 0)
            h = smaller(up.shape[-2] - up_start, fine.shape[-2] - fine_start)
            w = smaller(up.shape[-1] - up_start, fine.shape[-1] - fine_start)
            up = crop(up, up_start, up_start, h, w)
            fine = crop(fine, fine_start, fine_start, h, w)
            if self.refine is not None and stage is self.stages[-1]:
                fine = self.refine(torch.cat([fine, up], dim=1))
            scores = up + self.score[str(stage.stride)](fine)
        out = final_upsampler(scores)
        return crop(out, self.shifts[-1], self.shifts[-1], height, width)


def _refine_block(channels: int, width: int) -> nn.Module | None:
    """Two 3x3 convolutions (batch norm, ReLU) of ``width`` channels over the finest feature map
    concatenated with the coarser scores upsampled onto it (``channels`` in all), feeding that
    stride's score layer; None for ``width`` 0 (the paper's linear skip).

    The linear score of a shallow map cannot say "a thin vertical edge pair *where the coarse
    scores say pole-like context*": a non-linear skip can (DeepLabv3+'s decoder, Chen et al.
    2018, refines at stride 4 the same way). The score layer stays zero-initialised, so training
    starts from the plain FCN's output.
    """
    if width == 0:
        return None
    layers: list[nn.Module] = []
    for _ in range(2):
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False),
                   nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        channels = width
    return nn.Sequential(*layers)


def _zero_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """1x1 score layer, zero-initialised (FCN §4.3: random init is no better)."""
    conv = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def init_from(model: nn.Module, source: nn.Module | Mapping[str, torch.Tensor]) -> list[str]:
    """Staged training (FCN §4.2): copy a trained coarser FCN into ``model``.

    Every tensor whose name exists in both (backbone, score layers, shared upsamplers) is copied;
    the rest of ``model`` (the new skip's zero-initialised score layer and its upsamplers) keeps
    its initialisation. Use it to start FCN-16s from FCN-32s and FCN-8s from FCN-16s.

    Returns:
        The copied names, sorted.

    Raises:
        CheckpointError: a shared name has a different shape (other num_classes or backbone),
            or nothing is shared.
    """
    state = source.state_dict() if isinstance(source, nn.Module) else source
    target = model.state_dict()
    shared = sorted(set(state) & set(target))
    if not shared:
        raise CheckpointError(
            "source state must share tensor names with the model, got none in common; "
            "try a source FCN with the same backbone"
        )
    for name in shared:
        if state[name].shape != target[name].shape:
            raise CheckpointError(
                f"tensor {name!r} must have shape {tuple(target[name].shape)}, got "
                f"{tuple(state[name].shape)}; try a source with the same num_classes, backbone "
                "and fc_channels"
            )
    model.load_state_dict({name: state[name] for name in shared}, strict=False)
    return shared


def _fcn_builder(skips: int):
    def builder(
        *,
        num_classes: int,
        in_channels: int = 3,
        backbone: str = "vgg16",
        pretrained_backbone: bool | str = False,
        fc_channels: int = 4096,
        at_once: bool = False,
        refine: int = 0,
    ) -> nn.Module:
        check_int("in_channels", in_channels, minimum=1)
        check_int("refine", refine, minimum=0)
        check_int("fc_channels", fc_channels, minimum=1)
        if not isinstance(backbone, str):
            raise ConfigError(f"backbone must be a name such as 'vgg16', got {backbone!r}")
        check_choice("at_once", at_once, (True, False))
        if at_once:
            check_at_once(FCN_STRIDES[: skips + 1])  # before the backbone's weights are made
        check_refine(FCN_STRIDES[: skips + 1], refine)
        features = build_backbone(
            backbone,
            in_channels=in_channels,
            pretrained=pretrained_backbone,
            fc_channels=fc_channels,
        )
        return FCN(features, num_classes, skips, at_once, refine)

    return builder


_DOC = """FCN-{s}s (FCN §4.2{extra}). Options: ``backbone`` ({backbones}, any torchvision
classifier with stride-8/16/32 maps, or ``timm:NAME``), ``pretrained_backbone`` (True: ImageNet
weights; VGG16's fc6/fc7 by convolutionalization; or a local weights file), ``fc_channels`` (VGG16
fc6/fc7 width, 4096 in the paper), ``at_once`` (scale skip inputs by 0.01 / 0.0001 as the reference
"at-once" FCN-8s does; for staged training use :func:`init_from`), ``refine`` (0: the paper's
linear skips; W > 0: the finest skip's score reads two 3x3 convolutions of W channels over that
map and the upsampled coarser scores)."""

_EXTRA = {0: ", single stream", 3: "'s skips one stride further: backbones with a stride-4 map"}
for _skips, _stride in enumerate(FCN_STRIDES):
    _builder = _fcn_builder(_skips)
    _builder.__name__ = f"fcn{_stride}s"
    _builder.__doc__ = _DOC.format(
        s=_stride, extra=_EXTRA.get(_skips, ""), backbones=", ".join(BACKBONES)
    )
    register(f"fcn{_stride}s")(_builder)
