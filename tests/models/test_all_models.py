"""Every registered model, with every backbone it offers, at tiny widths: parametrised over the
registry so that a newly registered model is tested without writing a line."""

import functools

import pytest
import torch
import torch.nn.functional as F

from pixelwise.errors import ConfigError
from pixelwise.models import BACKBONES, available, build, model_options

TINY = {"base_channels": 4, "depth": 2}
ODD_SIZES = [(5, 7), (13, 21), (31, 33), (97, 131)]


def variants(options: dict) -> list[dict]:
    """One option set per backbone / encoder the model offers (its own layers otherwise), and
    its unpadded ("valid") form where it has one."""
    if "backbone" in options:
        return [{"backbone": b, **({"fc_channels": 16} if b == "vgg16" else {})} for b in BACKBONES]
    out: list[dict] = [{}]
    if "padding" in options:
        out.append({"padding": "valid"})
    if "encoder" in options:  # depth is fixed by an encoder
        out += [{"encoder": e, "depth": None} for e in ("resnet18", "resnet34", "resnet50")]
    return out


def cases() -> list[tuple[str, dict]]:
    out = []
    for name in available():
        options = model_options(name)
        tiny = {key: value for key, value in TINY.items() if key in options}
        out += [(name, {"in_channels": 2, **tiny, **v}) for v in variants(options)]
    return out


def case_id(case: tuple[str, dict]) -> str:
    name, options = case
    padding = "-valid" if options.get("padding") == "valid" else ""
    return f"{name}-{options.get('backbone') or options.get('encoder') or 'own'}{padding}"


CASES = cases()


def shape_cases() -> list[tuple[str, dict]]:
    """The cases whose sizes are checked on the meta device: FCN-8s (which taps every stage) on
    every backbone, each other model on its own layers, VGG16 (the pad-100 path) and a ResNet,
    U-Net on a basic-block and a bottleneck encoder.

    A backbone's stage strides are checked against real output shapes in test_backbones, and
    the heads are the same code on every backbone, so the omitted pairs (FCN-16s / 32s on
    ResNet-34, ResNet-50 and MobileNetV3, U-Net on ResNet-34) repeat what is here; each meta
    forward costs 0.1-0.3 s of Python dispatch.
    """
    return [c for c in CASES if c[0] == "fcn8s"
            or (c[1].get("backbone") in (None, "vgg16", "resnet18")
                and c[1].get("encoder") in (None, "resnet18", "resnet50"))]


SHAPE_CASES = shape_cases()


def compute_cases() -> list[tuple[str, dict]]:
    """Every model and every kind of backbone and encoder at least once, cheaply: each name with
    its own layers or resnet18, every other backbone under FCN-8s (which has every head layer)
    but resnet34 (resnet18's block type, more of them), and U-Net on a resnet18 encoder (the
    other encoders are the same code, shape-checked above).

    Real passes cost seconds each on a shared CPU (VGG16 pads its input by 100 pixels, so a 13x21
    image costs as much as a 213x221 one); the meta-device tests cover the shapes.
    """
    chosen = [
        next(c for c in CASES if c[0] == name and c[1].get("backbone") in ("resnet18", None))
        for name in available()
    ]
    covered = {c[1].get("backbone") for c in chosen} | {"resnet34"}  # resnet18's block type
    chosen += [c for c in CASES if c[0] == "fcn8s" and c[1].get("backbone") not in covered]
    chosen += [c for c in CASES if c[0] == "unet" and c[1].get("encoder") == "resnet18"]
    return chosen


COMPUTE_CASES = compute_cases()


def meta_model(case: tuple[str, dict]) -> torch.nn.Module:
    """The case's model on the meta device (shapes only, no memory, no compute), built once."""
    return _meta_model(case_id(case))


@functools.cache
def _meta_model(key: str) -> torch.nn.Module:
    name, options = next(c for c in CASES if case_id(c) == key)
    with torch.device("meta"):
        return build(name, 3, **options)


@pytest.mark.parametrize("case", SHAPE_CASES, ids=case_id)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_logits_have_the_declared_size_at_odd_sizes(case, train):
    # same-size models at the odd sizes themselves, valid ones at the nearest size they accept
    model = meta_model(case).train(train)
    geometry = model.geometry
    # eval mode at every size; train mode, which changes no geometry, only has to agree at one
    for size in ODD_SIZES[-1:] if train else ODD_SIZES:
        height, width = (geometry.nearest_input_size(s) for s in size)
        expected = (2, 3, geometry.output_size(height), geometry.output_size(width))
        assert model(torch.empty(2, 2, height, width, device="meta")).shape == expected, size


@pytest.mark.parametrize("case", SHAPE_CASES, ids=case_id)
def test_models_accept_exactly_the_declared_sizes(case):
    # valid models: only smallest_input + k * align; same-size ones: every size from 1 up
    model = meta_model(case).eval()  # one 1-pixel-wide image: batch norm needs eval mode
    geometry = model.geometry
    sizes = range(geometry.smallest_input - 3, geometry.smallest_input + 2 * geometry.align)
    if geometry.same_size:  # a sample of that window (each size is a forward pass)
        sizes = (1, 2, geometry.align + 1)
    for size in sizes:
        x = torch.empty(1, 2, size, geometry.smallest_input, device="meta")
        if geometry.accepts(size):
            assert model(x).shape[-2] == geometry.output_size(size), size
        else:
            with pytest.raises(ConfigError):
                model(x)


@pytest.mark.parametrize("case", SHAPE_CASES, ids=case_id)
def test_declared_alignment_is_the_total_downsampling(case):
    # A map of stride r gains 8 * align / r cells when the input gains 8 * align pixels, so the
    # coarsest map of the whole network gains exactly 8 cells when align is its stride (globally
    # pooled maps, as in MobileNetV3's squeeze-excitation, gain none and tell nothing).
    model = meta_model(case)
    geometry = model.geometry
    widths: list[int] = []
    hooks = [module.register_forward_hook(
        lambda _, __, out: widths.append(out.shape[-1]) if isinstance(out, torch.Tensor) else None
    ) for module in model.modules()]
    runs = []
    first = geometry.input_size_at_least(37)
    for width in (first, first + 8 * geometry.align):
        widths.clear()
        model(torch.empty(1, 2, geometry.nearest_input_size(37), width, device="meta"))
        runs.append(list(widths))
    for hook in hooks:
        hook.remove()
    gains = [after - before for before, after in zip(*runs, strict=True)]
    assert min(gain for gain in gains if gain > 0) == 8


@pytest.mark.parametrize("case", COMPUTE_CASES, ids=case_id)
def test_eval_forward_is_finite_and_deterministic(case):
    name, options = case
    torch.manual_seed(0)
    model = build(name, 3, **options).eval()
    x = torch.randn(1, 2, 13, 21)
    with torch.no_grad():
        first, second = model(x), model(x)
    assert first.shape == (1, 3, 13, 21)
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)


@pytest.mark.parametrize("case", COMPUTE_CASES, ids=case_id)
def test_gradient_reaches_every_parameter_once_score_layers_are_nonzero(case):
    # FCN score layers start at zero, which blocks gradients to everything before them on the
    # very first step (by design, FCN §4.3; checked in test_fcn). Any update makes them non-zero;
    # we perturb every all-zero tensor as that update would, then every parameter must receive a
    # non-zero gradient.
    # Evaluation mode, so that batch norm takes one image (the deepest maps are 1x1): the
    # gradient reaches the same parameters as in training mode, at half the cost.
    name, options = case
    torch.manual_seed(0)
    model = build(name, 3, **options).eval()
    with torch.no_grad():
        for param in model.parameters():
            if not param.any():
                param.normal_(std=0.01)
    x, target = torch.randn(1, 2, 13, 21), torch.randint(0, 3, (1, 13, 21))
    F.cross_entropy(model(x), target).backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert silent == []
