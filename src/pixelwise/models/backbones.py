"""Feature extractors for the FCN head and the U-Net encoder: any torchvision classifier, or timm's.

A :class:`Backbone` maps ``(N, in_channels, H, W)`` to an ordered dict of named feature maps and
states its stages: channels, stride, and the input pixel on which feature index 0 is centred
(``offset``; feature index ``i`` is centred on pixel ``stride * i + offset``). The FCN head uses
strides and offsets to crop and align its skips exactly; a test checks every stated stage against
real output shapes and against flip symmetry (which holds exactly when the offset is right).

Names: ``"vgg16"`` is FCN's VGG16 (conv1_1 padded by 100, fc6/fc7 as convolutions, §4.1); any other
torchvision classification model name (``resnet50``, ``efficientnet_b0``, ``convnext_tiny``,
``densenet121``, ``vgg16_bn``, ...) is read by :mod:`pixelwise.models.feature_graph`, which finds
its stride 2 ... 32 maps in the traced graph; ``"timm:NAME"`` is timm's ``features_only`` model,
whose ``feature_info`` states channels and strides. Encoders whose strided layers are not all
centred (ConvNeXt's 4x4 stem, DenseNet's and VGG's 2x2 pools, timm models whose graph cannot be
read) round sizes down and would make empty maps from small inputs, so they see the input with
31 zero rows and columns added at the bottom/right; the heads crop back, so every backbone takes
any input size.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import fx, nn
from torchvision.models.feature_extraction import DualGraphModule, create_feature_extractor

from pixelwise.errors import ConfigError, MissingExtraError, WeightsNotFoundError
from pixelwise.models.convolutionalize import convolutional_fc_layers
from pixelwise.models.feature_graph import FeatureGraph, Grid, output_grids, read_stages
from pixelwise.models.weights import (
    Pretrained,
    check_pretrained,
    imagenet_weights,
    load_imagenet_state_dict,
    load_into,
    load_local_state_dict,
    require_file,
    timm_weights_files,
)

# The backbones of the standard model table (summary.py) and of every-model tests; any torchvision
# classifier with stride-8/16/32 maps, or timm:NAME, is accepted too.
BACKBONES = ("vgg16", "resnet18", "resnet34", "resnet50", "mobilenet_v3_large")
TIMM_PREFIX = "timm:"
# torchvision's convolutional families, as name patterns (every member found in its graph, not in
# a table): what `pixelwise models --encoders` lists, bench/encoders.py times and the tests build
# (one per family). Other classifiers with stride-8/16/32 maps work too (MNASNet, ShuffleNetV2).
ENCODER_FAMILIES = {
    "ResNet": r"resnet\d+|resnext\w+|wide_resnet\w+",  # one class: ResNeXt and Wide ResNet too
    "RegNet": r"regnet_\w+",
    "EfficientNet": r"efficientnet_b\d",
    "EfficientNetV2": r"efficientnet_v2_\w",
    "ConvNeXt": r"convnext_\w+",
    "MobileNetV2": r"mobilenet_v2",
    "MobileNetV3": r"mobilenet_v3_\w+",
    "DenseNet": r"densenet\d+",
    "VGG-BN": r"vgg\d+_bn",
}


@dataclass(frozen=True)
class Stage:
    """One feature map a backbone returns: key, channels, stride and offset in input pixels."""

    name: str
    channels: int
    stride: int
    offset: float | None  # None: not readable (a timm graph torch.fx cannot trace)


class Backbone(nn.Module):
    """``body`` returning ``{stage.name: (N, stage.channels, ~H / stride, ~W / stride)}``.

    With ``pad > 0`` the input gets ``pad`` zero rows and columns at the bottom/right first, so
    that layers which round sizes down (2x2 pools, a 4x4 stem) still cover every input pixel and
    never see an empty map: with ``pad = 31`` a stride-32 map has ``floor((n + 31) / 32) =
    ceil(n / 32)`` cells. A fixed pad keeps exported graphs free of size arithmetic. The heads crop
    their output back to ``H, W``.
    """

    def __init__(self, body: nn.Module, stages: tuple[Stage, ...], pad: int = 0) -> None:
        super().__init__()
        self.body = body
        self.stages = stages
        self.pad = pad

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.pad:
            x = nn.functional.pad(x, (0, self.pad, 0, self.pad))
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
    Returns ``pool2`` (stride 4, for FCN-4s), ``pool3`` (stride 8), ``pool4`` (stride 16) and
    ``fc7`` (stride 32).
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
        # pool2 is the 10th layer of to_pool3 (conv, relu, conv, relu, pool twice); slicing keeps
        # the modules, and so the checkpoints' tensor names, as they were.
        pool2 = self.to_pool3[:10](x)
        pool3 = self.to_pool3[10:](pool2)
        pool4 = self.to_pool4(pool3)
        return {"pool2": pool2, "pool3": pool3, "pool4": pool4,
                "fc7": self.fc(self.to_pool5(pool4))}


# Offsets, in Caffe's coordinate-mapping arithmetic: a layer with kernel k, stride s, padding p
# maps output index i to input position s * i + (k - 1) / 2 - p. conv1_1 (k3, p100): -99; each 2x2
# pool adds 0.5 * (stride so far): pool2 -99 + 0.5 + 1 = -97.5, pool3 -95.5, pool4 -91.5,
# pool5 -83.5;
# fc6 (k7, p0) adds 3 * 32: 12.5. They reproduce the reference crop offsets (19; 5, 27; 5, 9, 31).
VGG16_STAGES = (Stage("pool2", 128, 4, -97.5), Stage("pool3", 256, 8, -95.5),
                Stage("pool4", 512, 16, -91.5))

def build_backbone(
    name: str, *, in_channels: int, pretrained: Pretrained = False, fc_channels: int = 4096
) -> Backbone:
    """Backbone ``name``: ``"vgg16"`` (FCN's), a torchvision classifier name, or ``"timm:NAME"``.

    ``pretrained``: False (random init, as the library initialises the classifier), True
    (ImageNet weights through torchvision's or timm's API), or a local ``.safetensors`` /
    ``.pth`` file holding the classifier's state dict (see :mod:`pixelwise.models.weights`).
    ``fc_channels`` sets the width of VGG16's fc6/fc7 (4096 in the paper; small for tests).
    With ``in_channels != 3`` the first convolution's weights are averaged over RGB and repeated
    (timm: timm's own ``in_chans`` rule, the same for one channel).
    """
    check_pretrained(pretrained)
    if name == "vgg16":
        return vgg16_fcn_backbone(in_channels, pretrained, fc_channels)
    if fc_channels != 4096:
        raise ConfigError(
            f"fc_channels only applies to backbone='vgg16', got fc_channels={fc_channels} with "
            f"backbone={name!r}; try removing fc_channels"
        )
    if name.startswith(TIMM_PREFIX):
        return timm_backbone(name.removeprefix(TIMM_PREFIX), in_channels, pretrained)
    return torchvision_backbone(name, in_channels, pretrained)


def torchvision_backbone(name: str, in_channels: int, pretrained: Pretrained) -> Backbone:
    """The stride 2 ... 32 maps of torchvision classifier ``name``, found in its graph."""
    model = torchvision_classifier(name)
    if pretrained:
        load_into(model, classifier_state_dict(name, pretrained), name)
    graph = stages_of(name, model)
    conv_path = graph.first_conv
    conv = model.get_submodule(conv_path)
    if in_channels != 3:
        if not isinstance(conv, nn.Conv2d):
            raise ConfigError(
                f"in_channels must be 3 for backbone {name!r}, whose first layer {conv_path!r} "
                f"is a {type(conv).__name__}, not a Conv2d, got {in_channels}; try in_channels=3"
            )
        model.set_submodule(conv_path, adapt_first_conv(conv, in_channels))
    stages = tuple(
        to_stage(stage.name, stage.channels, stage.grid.stride, stage.grid) for stage in graph.stages
    )
    body = feature_extractor(name, model, [stage.name for stage in stages])
    return Backbone(body, stages, input_pad(graph.stages[-1].grid))


# torchvision classifier name -> its FeatureGraph: the stage layout is the architecture's alone
# (weights load before, in_channels is adapted after), and reading it (a trace and a probe pass)
# took a third of each build.
_GRAPHS: dict[str, FeatureGraph] = {}


def stages_of(name: str, model: nn.Module) -> FeatureGraph:
    """``read_stages`` of torchvision's classifier ``name`` (``model``), read once per process."""
    if name not in _GRAPHS:
        _GRAPHS[name] = read_stages(model, name)
    return _GRAPHS[name]


# (torchvision classifier name, stage names) -> the train- and eval-mode graphs that
# create_feature_extractor traces: they are the architecture's alone (the first convolution is
# adapted in place, under the same name), and tracing both took a quarter of each build.
_EXTRACTOR_GRAPHS: dict[tuple[str, tuple[str, ...]], tuple[fx.Graph, fx.Graph]] = {}


def feature_extractor(name: str, model: nn.Module, nodes: list[str]) -> nn.Module:
    """``create_feature_extractor(model, return_nodes=nodes)`` for torchvision's classifier
    ``name``, its graphs traced once per process and given a copy to each model."""
    key = (name, tuple(nodes))
    if key not in _EXTRACTOR_GRAPHS:
        body = create_feature_extractor(model, return_nodes=nodes)
        _EXTRACTOR_GRAPHS[key] = (copy.deepcopy(body.train_graph), copy.deepcopy(body.eval_graph))
        return body
    train_graph, eval_graph = (copy.deepcopy(graph) for graph in _EXTRACTOR_GRAPHS[key])
    body = DualGraphModule(model, train_graph, eval_graph, class_name=type(model).__name__)
    body.train(model.training)
    return body


def encoder_families() -> dict[str, list[str]]:
    """``{family: torchvision model names}``, each list smallest first (by the parameter count
    torchvision's weights metadata states for the ImageNet classifier)."""
    names = torchvision.models.list_models(module=torchvision.models)
    return {
        family: sorted(
            (name for name in names if re.fullmatch(pattern, name)),
            key=lambda name: imagenet_weights(name).meta["num_params"],
        )
        for family, pattern in ENCODER_FAMILIES.items()
    }


def classifier_state_dict(name: str, pretrained: Pretrained) -> dict[str, torch.Tensor]:
    """The state dict for torchvision classifier ``name``: ImageNet's (``True``) or a file's."""
    if pretrained is True:
        return load_imagenet_state_dict(name)
    return load_local_state_dict(Path(pretrained), name)


def to_stage(name: str, channels: int, stride: int, grid: Grid | None) -> Stage:
    """A :class:`Stage` whose offset is the grid's (None where the graph could not be read)."""
    return Stage(name, channels, stride, None if grid is None else grid.offset)


def input_pad(last: Grid | None) -> int:
    """0 when every strided layer is centred (any size maps to ``ceil(n / stride)`` cells, as in
    torchvision's ResNets, EfficientNets, MobileNets and RegNets), else the total stride - 1."""
    return 0 if last is not None and last.centred else 32 - 1


def torchvision_classifier(name: str) -> nn.Module:
    """``torchvision.models.get_model(name)`` with random weights; ConfigError naming close names.

    On the meta device (used to count parameters), RegNets cannot be built: their constructor
    reads tensor values. They are built on the CPU and moved to the meta device.
    """
    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=4, cutoff=0.5)
        raise ConfigError(
            f"backbone must be a torchvision classification model name (or 'timm:NAME'), got "
            f"{name!r}; try one of {close or ['resnet34', 'efficientnet_b0', 'convnext_tiny']} "
            "(pixelwise models --encoders lists them)"
        )
    try:
        return torchvision.models.get_model(name, weights=None)
    except NotImplementedError:  # "Cannot copy out of meta tensor"
        with torch.device("cpu"):
            return torchvision.models.get_model(name, weights=None).to("meta")


class TimmFeatures(nn.Module):
    """A timm ``features_only`` model returning ``{stage name: map}`` for the chosen stages."""

    def __init__(self, model: nn.Module, names: list[str], keep: list[int]) -> None:
        super().__init__()
        self.model = model
        self.names = names
        self.keep = keep

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.model(x)
        return {self.names[i]: features[i] for i in self.keep}


def timm_backbone(name: str, in_channels: int, pretrained: Pretrained) -> Backbone:
    """timm's ``create_model(name, features_only=True)``; channels and strides from its
    ``feature_info``, offsets from its graph where torch.fx can trace it."""
    try:
        timm = importlib.import_module("timm")
    except ImportError as error:
        raise MissingExtraError(
            f"timm must be installed for backbone 'timm:{name}', got ImportError; try pip install "
            "'pixelwise[timm]'"
        ) from error
    options = {"features_only": True, "in_chans": in_channels, "pretrained": bool(pretrained)}
    if pretrained and pretrained is not True:
        options["pretrained_cfg_overlay"] = {"file": str(require_file(Path(pretrained), name))}
    model = create_timm_model(timm, name, options)
    info = model.feature_info
    strides = info.reduction()
    keep = [i for i, stride in enumerate(strides) if stride in (2, 4, 8, 16, 32)]
    if not {8, 16, 32} <= {strides[i] for i in keep}:
        raise ConfigError(
            f"backbone 'timm:{name}' must have feature maps at strides 8, 16 and 32, got "
            f"{strides}; try another timm model"
        )
    names = info.module_name()
    grids = output_grids(model, in_channels) or [None] * len(strides)
    # where the graph arithmetic disagrees with timm's stride, state no offset
    grids = [g if g is not None and g.stride == s else None for g, s in zip(grids, strides, strict=True)]
    stages = tuple(to_stage(names[i], info.channels()[i], strides[i], grids[i]) for i in keep)
    return Backbone(TimmFeatures(model, names, keep), stages, input_pad(grids[keep[-1]]))


def create_timm_model(timm, name: str, options: dict) -> nn.Module:
    """``timm.create_model(name, **options)`` with our errors for an unknown name or missing
    weights (the Hugging Face hub cache file and folder named)."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=4, cutoff=0.5)
        raise ConfigError(
            f"backbone 'timm:NAME' must name a timm model, got {name!r}; try one of "
            f"{['timm:' + c for c in close] or ['timm:resnet18d', 'timm:efficientnet_b0']}"
        )
    try:
        return timm.create_model(name, **options)
    except (OSError, ConnectionError) as error:  # huggingface_hub's LocalEntryNotFoundError is one
        if "pretrained_cfg_overlay" in options:
            raise
        files = [str(path) for path in timm_weights_files(name)]
        raise WeightsNotFoundError(
            f"ImageNet weights for backbone 'timm:{name}' must be in the Hugging Face hub cache, "
            f"got no file {' or '.join(files) or '(timm names none)'} and the download failed "
            f"({type(error).__name__}: {error}); try downloading them where there is internet "
            "(HF_HOME moves the cache), or pretrained_backbone='path/to/weights.safetensors', "
            "or pretrained_backbone=False"
        ) from error


def vgg16_fcn_backbone(in_channels: int, pretrained: Pretrained, fc_channels: int) -> Backbone:
    """VGG16 as in FCN §4.1 (see :class:`VGG16FCNBody`); pretrained fc6/fc7 by convolutionalization."""
    if pretrained:
        if fc_channels != 4096:
            raise ConfigError(
                f"fc_channels must be 4096 with pretrained_backbone={pretrained!r}, got {fc_channels}; "
                "try fc_channels=4096 or pretrained_backbone=False"
            )
        with torch.device("meta"):  # its random init (138M parameters) would be overwritten
            vgg = torchvision.models.vgg16(weights=None)
        load_into(vgg, classifier_state_dict("vgg16", pretrained), "vgg16")
        features = vgg.features
        fc6, fc7, _ = convolutional_fc_layers(vgg)
    else:
        # Only the conv layers: building torchvision's whole VGG16 would initialise its unused
        # 120M-parameter classifier. Same init as torchvision's VGG for the convolutions; fc6
        # and fc7 (119M parameters at 4096) skip nn.Conv2d's own init, which this replaces.
        features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
        device = torch.get_default_device()
        fc6 = torch.nn.utils.skip_init(nn.Conv2d, 512, fc_channels, 7, device=device)
        fc7 = torch.nn.utils.skip_init(nn.Conv2d, fc_channels, fc_channels, 1, device=device)
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
