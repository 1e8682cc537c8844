"""Time of the optimiser step and the Dice loss of a training step, pixelwise's way and the plain way.

    python bench/train_step.py                 # the CamVid recipe's batch, 2 threads

On FCN-8s MobileNetV3 (the CamVid recipe's model until session 14; 4x3x176x240, 11 classes) it
times, interleaved in rounds so that machine load falls on both columns alike:
- the optimiser step of `pixelwise.engine.optim.build_optimizer` (fused on the CPU) against
  torch's default per-parameter loop (`foreach=False`), for AdamW and SGD;
- `pixelwise.losses.DiceLoss` forward and backward against the same loss written with a one-hot
  target (the textbook formula, which it replaced);
- a whole step (forward, `ce_dice`, backward, AdamW) with both against neither.
Prints the median milliseconds of each and the ratio. Run it alone.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from pixelwise.config import OptimConfig
from pixelwise.engine.optim import build_optimizer
from pixelwise.losses import DiceLoss, build_loss
from pixelwise.models.registry import build

CLASSES, BATCH, SIZE = 11, 4, (176, 240)


def one_hot_dice(loss: DiceLoss, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DiceLoss's value by the one-hot formula: sum p g over a (N, K, H, W) one-hot target."""
    valid = (target != loss.ignore_index)[:, None]
    probs = logits.float().softmax(1) * valid
    truth = F.one_hot(torch.where(valid[:, 0], target, 0), loss.num_classes)
    truth = truth.permute(0, 3, 1, 2) * valid
    overlap = (probs * truth).sum((0, 2, 3))
    total = probs.sum((0, 2, 3)) + truth.sum((0, 2, 3))
    dice = (2 * overlap + loss.smooth) / (total + loss.smooth)
    weights = loss.class_weights
    return 1 - (dice * weights).sum() / weights.sum()


def mean_ms(run: Callable[[], object], repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        run()
    return (time.perf_counter() - start) / repeat * 1e3


def interleaved(cases: dict[str, Callable[[], object]], rounds: int, repeat: int) -> dict:
    """Median over `rounds` of the mean milliseconds of `repeat` calls of each case."""
    for run in cases.values():
        run()  # warm-up
    times = {name: [] for name in cases}
    for _ in range(rounds):
        for name, run in cases.items():
            times[name].append(mean_ms(run, repeat))
    return {name: statistics.median(values) for name, values in times.items()}


def model_and_batch() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = build("fcn8s", CLASSES, backbone="mobilenet_v3_large")
    model = model.to(memory_format=torch.channels_last).train()
    x = torch.randn(BATCH, 3, *SIZE).to(memory_format=torch.channels_last)
    return model, x, torch.randint(0, CLASSES, (BATCH, *SIZE))


def optimiser_cases(model: torch.nn.Module) -> dict:
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    cases = {}
    for name in ("adamw", "sgd"):
        config = OptimConfig(name=name, lr=1e-3, momentum=0.9, weight_decay=1e-4)
        kind = torch.optim.AdamW if name == "adamw" else torch.optim.SGD
        extra = {"momentum": 0.9} if name == "sgd" else {}
        looped = kind(model.parameters(), lr=1e-3, weight_decay=1e-4, foreach=False, **extra)
        cases[f"{name} step, loop"] = looped.step
        cases[f"{name} step, pixelwise"] = build_optimizer(model, config).step
    return cases


def dice_cases(target: torch.Tensor) -> dict:
    loss = build_loss("dice", CLASSES, class_weights=torch.rand(CLASSES) + 0.5)
    logits = torch.randn(BATCH, CLASSES, *SIZE, requires_grad=True)
    return {"dice fwd+bwd, one-hot": lambda: one_hot_dice(loss, logits, target).backward(),
            "dice fwd+bwd, pixelwise": lambda: loss(logits, target).backward()}


def step_cases(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> dict:
    ce_dice = build_loss("ce_dice", CLASSES, class_weights=torch.rand(CLASSES) + 0.5)
    config = OptimConfig(name="adamw", lr=1e-3, weight_decay=1e-4)
    plain = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4, foreach=False)
    fused = build_optimizer(model, config)
    dice = ce_dice.parts[1]

    def step(optimiser: torch.optim.Optimizer, one_hot: bool) -> None:
        optimiser.zero_grad(set_to_none=True)
        logits = model(x)
        dice_term = one_hot_dice(dice, logits, target) if one_hot else dice(logits, target)
        (ce_dice.parts[0](logits, target) + dice_term).backward()
        optimiser.step()

    return {"whole step, loop + one-hot": lambda: step(plain, True),
            "whole step, pixelwise": lambda: step(fused, False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, x, target = model_and_batch()
    results = {**interleaved(optimiser_cases(model), args.rounds, 20),
               **interleaved(dice_cases(target), args.rounds, 10),
               **interleaved(step_cases(model, x, target), args.rounds, 5)}
    print(f"{'case':<30} {'ms':>8}")
    for name, ms in results.items():
        print(f"{name:<30} {ms:8.2f}")
    for plain, ours in zip(list(results)[::2], list(results)[1::2], strict=True):
        print(f"{ours}: {results[ours] / results[plain]:.3f}x of {plain.split(', ')[1]}")


if __name__ == "__main__":
    main()
