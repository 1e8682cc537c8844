"""Every registered model, with every backbone it offers, at tiny widths: parametrised over the
registry so that a newly registered model is tested without writing a line."""

import pytest
import torch
import torch.nn.functional as F

from pixelwise.models import BACKBONES, available, build, model_options

TINY = {"base_channels": 4, "depth": 2}
ODD_SIZES = [(5, 7), (13, 21), (31, 33), (97, 131)]


def variants(options: dict) -> list[dict]:
    """One option set per backbone / encoder the model offers (its own layers otherwise)."""
    if "backbone" in options:
        return [{"backbone": b, **({"fc_channels": 16} if b == "vgg16" else {})} for b in BACKBONES]
    if "encoder" in options:  # depth is fixed by an encoder
        return [{}] + [{"encoder": e, "depth": None} for e in ("resnet18", "resnet34", "resnet50")]
    return [{}]


def cases() -> list[tuple[str, dict]]:
    out = []
    for name in available():
        options = model_options(name)
        tiny = {key: value for key, value in TINY.items() if key in options}
        out += [(name, {"in_channels": 2, **tiny, **v}) for v in variants(options)]
    return out


def case_id(case: tuple[str, dict]) -> str:
    name, options = case
    return f"{name}-{options.get('backbone') or options.get('encoder') or 'own'}"


CASES = cases()


def compute_cases() -> list[tuple[str, dict]]:
    """Every model, backbone and encoder at least once, cheaply: each name with its own layers
    or resnet18, every other backbone under FCN-8s (which has every head layer), and U-Net on a
    resnet18 encoder (the other encoders are the same code, shape-checked above).

    Real passes cost seconds each on a shared CPU (VGG16 pads its input by 100 pixels, so a 13x21
    image costs as much as a 213x221 one); the meta-device test covers every case for shapes.
    """
    chosen = [
        next(c for c in CASES if c[0] == name and c[1].get("backbone") in ("resnet18", None))
        for name in available()
    ]
    covered = {c[1].get("backbone") for c in chosen}
    chosen += [c for c in CASES if c[0] == "fcn8s" and c[1].get("backbone") not in covered]
    chosen += [c for c in CASES if c[0] == "unet" and c[1].get("encoder") == "resnet18"]
    return chosen


COMPUTE_CASES = compute_cases()


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_logits_have_the_input_size_at_odd_sizes(case, train):
    name, options = case
    with torch.device("meta"):
        model = build(name, 3, **options).train(train)
        for size in ODD_SIZES:
            assert model(torch.empty(2, 2, *size)).shape == (2, 3, *size), size


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
    name, options = case
    torch.manual_seed(0)
    model = build(name, 3, **options).train()
    with torch.no_grad():
        for param in model.parameters():
            if not param.any():
                param.normal_(std=0.01)
    x, target = torch.randn(2, 2, 13, 21), torch.randint(0, 3, (2, 13, 21))
    F.cross_entropy(model(x), target).backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert silent == []
