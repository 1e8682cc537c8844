"""Learning-rate schedules: hand-computed multipliers."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from pixelwise.config import OptimConfig
from pixelwise.engine.optim import build_optimizer, build_scheduler, fusable, lr_factor


@pytest.mark.parametrize(
    ("schedule", "step", "expected"),
    [
        ("constant", 7, 1.0),
        ("poly", 0, 1.0),
        ("poly", 5, 0.5**0.9),  # t = 5/10
        ("cosine", 5, 0.5),  # (1 + cos(pi/2)) / 2
        ("cosine", 10, 0.0),
        ("linear", 5, 0.5),
    ],
)
def test_schedule_multipliers(schedule, step, expected):
    config = OptimConfig(schedule=schedule)
    assert lr_factor(step, 10, config) == pytest.approx(expected, abs=1e-12)


def test_under_a_budget_the_decay_follows_the_fraction_used_not_the_step():
    config = OptimConfig(schedule="linear")
    assert lr_factor(1, 10, config, budget_used=0.75) == pytest.approx(0.25)
    assert lr_factor(1, 10, config, budget_used=1.2) == 0.0  # spent: the end value


def test_warmup_rises_linearly_then_decays_over_the_rest():
    config = OptimConfig(schedule="poly", poly_power=1.0, warmup_steps=4)
    factors = [lr_factor(step, 12, config) for step in range(12)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[8] == pytest.approx(0.5)  # (8 - 4) / (12 - 4) of the way down


def test_scheduler_drives_the_optimiser_lr():
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, OptimConfig(name="sgd", lr=0.1, schedule="cosine"))
    scheduler = build_scheduler(optimizer, 4, OptimConfig(name="sgd", lr=0.1, schedule="cosine"))
    lrs = []
    for _ in range(4):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.1 * 0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(4)]
    assert lrs == pytest.approx(expected)


def test_adamw_and_sgd_settings_reach_torch():
    model = torch.nn.Linear(2, 2)
    sgd = build_optimizer(model, OptimConfig(name="sgd", lr=0.2, momentum=0.99, weight_decay=5e-4))
    adamw = build_optimizer(model, OptimConfig(name="adamw", lr=0.3, weight_decay=0.01))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.99
    assert sgd.defaults["weight_decay"] == 5e-4
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["lr"] == 0.3


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_cpu_optimisers_are_fused_and_step_as_the_reference_loop(name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    reference = copy.deepcopy(model)
    config = OptimConfig(name=name, lr=0.01, momentum=0.9, weight_decay=1e-4)
    optimizer = build_optimizer(model, config)
    assert optimizer.defaults["fused"] is True
    kind = torch.optim.SGD if name == "sgd" else torch.optim.AdamW
    options = {"momentum": 0.9} if name == "sgd" else {}
    looped = kind(reference.parameters(), lr=0.01, weight_decay=1e-4, foreach=False, **options)
    x, y = torch.randn(2, 3, 8, 8), torch.randn(2, 2, 6, 6)
    for _ in range(3):
        for net, opt in ((model, optimizer), (reference, looped)):
            opt.zero_grad()
            (net(x) - y).square().mean().backward()
            opt.step()
    for fused, plain in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(fused, plain)


def test_only_float_parameters_on_cpu_or_cuda_are_fused():
    assert fusable([torch.zeros(2)])
    assert not fusable([torch.zeros(2, device="meta")])
    assert not fusable([])
