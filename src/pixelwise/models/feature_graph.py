"""Find a classifier's feature stages by reading its traced graph, not from a table per model.

The classifier is traced once with torch.fx (torchvision's ``NodePathTracer``, which names each
node by its module path, as ``create_feature_extractor`` does) and run once on a small probe
input, which gives every node's output shape. Along the graph each node gets a *grid*: the
stride and offset of its cells in input pixels (cell ``i`` centred on ``stride * i + offset``),
by Caffe's coordinate-mapping arithmetic: a convolution or pool with kernel ``k``, stride ``s``,
padding ``p`` and dilation ``d`` maps output index ``i`` to input index ``s * i + d (k - 1) / 2
- p``. Element-wise ops, concatenations and normalisations keep their inputs' grid; global pools
and flattening end it.

The stage at stride ``s`` is then the last *cut* node on grid ``s`` (a node every later node
depends on only through it: a block output, not a tensor inside a residual block) whose output is
an ``(N, C, H / s, W / s)`` map, preferring whole modules over pieces of one: among the cuts at
stride ``s`` the one named by the shortest module path wins (``layer1`` over
``layer2.0.conv1``, ``features.6`` over ``features.7.block.0``, the expansion convolution of the
next block, which also runs at stride 8 and is also a cut).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torchvision
from torch import fx, nn
from torchvision.models.feature_extraction import NodePathTracer

from pixelwise.errors import ConfigError

STRIDES = (2, 4, 8, 16, 32)
REQUIRED_STRIDES = (8, 16, 32)
# Multiples of 32, and unequal: a channels-last map (N, H / s, W / s, C), as ConvNeXt's blocks
# make, cannot then pass for a channels-first one.
PROBE_SIZE = (64, 96)
# The tracer settings create_feature_extractor uses by default (torchvision ops stay leaves, so
# StochasticDepth keeps its train/eval behaviour), so node names agree with it.
TRACER_KWARGS: dict[str, Any] = {
    "autowrap_modules": (math, torchvision.ops),
    "leaf_modules": [
        obj for obj in vars(torchvision.ops).values()
        if isinstance(obj, type) and issubclass(obj, nn.Module)
    ],
}
STRIDED = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
GLOBAL = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten)
GLOBAL_FUNCTIONS = (torch.flatten, nn.functional.adaptive_avg_pool2d, nn.functional.adaptive_max_pool2d)


@dataclass(frozen=True)
class Grid:
    """Cells at ``stride * i + offset`` input pixels. ``centred``: every strided op so far had
    ``2p = d (k - 1)``, which both keeps the offset at 0 and maps any size ``n`` to
    ``ceil(n / stride)`` (so no input is too small)."""

    stride: int
    offset: float
    centred: bool


@dataclass(frozen=True)
class FoundStage:
    """A stage read from the graph: node (module path), channels and grid."""

    name: str
    channels: int
    grid: Grid


@dataclass(frozen=True)
class FeatureGraph:
    """What the graph says: the stages, and the module path of the first layer on the input
    (where ``in_channels`` is adapted)."""

    stages: list[FoundStage]
    first_conv: str


def read_stages(model: nn.Module, label: str) -> FeatureGraph:
    """The stride 2 ... 32 stages of ``model`` (a classifier taking 3-channel images).

    Strides 2 and 4 may be missing (ConvNeXt's stem is stride 4); 8, 16 and 32 must be found.
    ``label`` names the model in errors.

    Raises:
        ConfigError: the graph cannot be traced, or has no stride-8/16/32 feature map.
    """
    tracer = NodePathTracer(**TRACER_KWARGS)
    try:
        graph = trace(model, tracer)
    except Exception as error:  # fx raises many types; the user needs only which model and why
        raise ConfigError(
            f"backbone {label!r} must be traceable by torch.fx to find its feature maps, got "
            f"{type(error).__name__}: {error}; try another backbone"
        ) from error
    nodes = list(graph.nodes)
    names = [tracer.node_to_qualname.get(node, "") for node in nodes]
    grids, shapes = propagate(fx.GraphModule(model, graph), model, 3)
    cuts = cut_indices(nodes)
    found: list[FoundStage] = []
    previous = 0  # the input placeholder
    for stride in STRIDES:
        candidates = [
            (module_path(names, index, previous), index)
            for index in cuts
            if index > previous
            and grids[nodes[index]] is not None
            and grids[nodes[index]].stride == stride
            and is_map_at(shapes.get(nodes[index], ()), stride)
        ]
        if not candidates:
            continue
        depth = min(path.count(".") for path, _ in candidates)
        name, previous = [c for c in candidates if c[0].count(".") == depth][-1]
        found.append(FoundStage(name, shapes[nodes[previous]][1], grids[nodes[previous]]))
    strides = [stage.grid.stride for stage in found]
    if not set(REQUIRED_STRIDES) <= set(strides):
        raise ConfigError(
            f"backbone {label!r} must have channels-first feature maps at strides 8, 16 and 32, "
            f"got strides {strides}; try a convolutional backbone (ResNet, EfficientNet, "
            "ConvNeXt, ...) or a timm:NAME one"
        )
    return FeatureGraph(found, first_layer(nodes, model))


def output_grids(model: nn.Module, in_channels: int) -> list[Grid | None] | None:
    """The grids of the tensors ``model`` returns (a list or tuple of maps, as timm's
    ``features_only`` models do), or None when torch.fx cannot trace it."""
    try:
        graph = trace(model, fx.Tracer())
    except Exception:  # untraceable (control flow on sizes, ...): offsets are then not stated
        return None
    grids, _ = propagate(fx.GraphModule(model, graph), model, in_channels)
    (outputs,) = [node.args[0] for node in graph.nodes if node.op == "output"]
    return [grids.get(node) for node in outputs]


def trace(model: nn.Module, tracer: fx.Tracer) -> fx.Graph:
    """``tracer.trace(model)`` in eval mode (the graph the probe runs), mode restored."""
    was_training = model.training
    try:
        return tracer.trace(model.eval())
    finally:
        model.train(was_training)


def propagate(
    module: fx.GraphModule, model: nn.Module, in_channels: int
) -> tuple[dict[fx.Node, Grid | None], dict[fx.Node, tuple[int, ...]]]:
    """Every node's grid and output shape."""
    shapes = probe_shapes(module, model, in_channels)
    grids: dict[fx.Node, Grid | None] = {}
    for node in module.graph.nodes:
        grids[node] = node_grid(node, module, grids, shapes.get(node))
    return grids, shapes


def first_layer(nodes: list[fx.Node], model: nn.Module) -> str:
    """Module path of the first layer applied to the input (inside a leaf ``Sequential``, its
    first layer: ``features.0.0`` in torchvision's MobileNets)."""
    (placeholder,) = [node for node in nodes if node.op == "placeholder"]
    first = next(user for user in nodes if user in placeholder.users)
    if first.op != "call_module":
        return str(first.target)
    path = str(first.target)
    while isinstance(model.get_submodule(path), nn.Sequential):
        path += ".0"
    return path


def probe_shapes(
    module: fx.GraphModule, model: nn.Module, in_channels: int
) -> dict[fx.Node, tuple[int, ...]]:
    """Output shape of every tensor-valued node on a ``(1, in_channels, *PROBE_SIZE)`` input (on
    the model's device, so on the meta device this costs nothing)."""
    device = next(model.parameters()).device
    shapes: dict[fx.Node, tuple[int, ...]] = {}

    class ShapeRecorder(fx.Interpreter):
        def run_node(self, node: fx.Node) -> Any:
            out = super().run_node(node)
            if isinstance(out, torch.Tensor):
                shapes[node] = tuple(out.shape)
            return out

    with torch.no_grad():
        ShapeRecorder(module.eval()).run(torch.zeros(1, in_channels, *PROBE_SIZE, device=device))
    return shapes


def is_map_at(shape: tuple[int, ...], stride: int) -> bool:
    """Whether ``shape`` is a channels-first map of the probe input at ``stride``."""
    return len(shape) == 4 and shape[-2:] == tuple(size // stride for size in PROBE_SIZE)


def node_grid(
    node: fx.Node, module: fx.GraphModule, grids: dict, shape: tuple[int, ...] | None
) -> Grid | None:
    """The grid of ``node``'s output, or None when it has none (not a map, or unknown)."""
    if node.op == "placeholder":
        return Grid(1, 0.0, True)
    inputs = [grids[arg] for arg in node.all_input_nodes if grids.get(arg) is not None]
    if not inputs or len({grid.stride for grid in inputs}) > 1:
        return None
    grid = inputs[0]
    if any(other != grid for other in inputs):
        # ResNet-D (timm): an average-pooled shortcut, offset by half a cell, added to the main
        # path. The first operand, the main path in timm's and torchvision's blocks, is kept.
        grid = Grid(grid.stride, grid.offset, centred=False)
    layer = module.get_submodule(node.target) if node.op == "call_module" else None
    if isinstance(layer, GLOBAL) or node.target in GLOBAL_FUNCTIONS:
        return None
    if layer is not None:
        grid = layer_grid(grid, layer)
    if grid is not None and shape is not None and len(shape) == 4:
        # a map whose size says another stride than the arithmetic: an op we do not model
        others = [s for s in (1, *STRIDES) if s != grid.stride and is_map_at(shape, s)]
        if others:
            return None
    return grid


def layer_grid(grid: Grid | None, layer: nn.Module) -> Grid | None:
    """``grid`` after a leaf module: strided layers move it, a leaf ``nn.Sequential`` (such as
    torchvision's ``Conv2dNormActivation``) applies its layers in turn, anything else keeps it
    (the probe shapes catch a module that changes the size anyway)."""
    if isinstance(layer, nn.Sequential):
        for child in layer:
            grid = layer_grid(grid, child)
        return grid
    if isinstance(layer, STRIDED) and grid is not None:
        return strided_grid(grid, layer)
    return grid


def strided_grid(grid: Grid, layer: nn.Module) -> Grid | None:
    """``grid`` after a convolution or pooling layer (None for an asymmetric or dynamic one)."""
    if isinstance(layer, nn.Conv2d) and type(layer).forward is not nn.Conv2d.forward:
        return None  # e.g. TF-style "same" padding computed in forward: offset depends on size
    pair = nn.modules.utils._pair
    kernel, stride = pair(layer.kernel_size), pair(layer.stride or layer.kernel_size)
    dilation = pair(getattr(layer, "dilation", 1))
    padding = layer.padding
    if padding == "same":  # torch pads total // 2 on the top / left
        padding = tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel, strict=True))
    padding = pair(0 if padding == "valid" else padding)
    shifts = {d * (k - 1) / 2 - p for k, d, p in zip(kernel, dilation, padding, strict=True)}
    if len(set(stride)) > 1 or len(shifts) > 1:
        return None
    (shift,) = shifts
    centred = grid.centred and shift == 0 and not getattr(layer, "ceil_mode", False)
    return Grid(grid.stride * stride[0], grid.offset + grid.stride * shift, centred)


def cut_indices(nodes: list[fx.Node]) -> list[int]:
    """Indices of the nodes every later node depends on only through them."""
    index = {node: i for i, node in enumerate(nodes)}
    cuts, reach = [], 0  # reach: the furthest use of any earlier node's output
    for i, node in enumerate(nodes):
        if node.op != "get_attr":  # parameters and constants are not activations
            if reach <= i:
                cuts.append(i)
            reach = max([reach, *(index[user] for user in node.users)])
    return cuts


def module_path(names: list[str], index: int, previous: int) -> str:
    """The shortest module path whose last node is ``index`` and whose first node comes after
    ``previous`` (so ``features.16`` for MobileNetV3's last block, not all of ``features``)."""
    parts = names[index].split(".")
    for depth in range(1, len(parts) + 1):
        prefix = parts[:depth]
        members = [i for i, name in enumerate(names) if name.split(".")[:depth] == prefix]
        if members[-1] == index and members[0] > previous:
            return ".".join(prefix)
    return names[index]
