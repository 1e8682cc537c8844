"""What `train.ema` adds to a training step: one update of the average against the step itself.

    python bench/ema_update.py                 # the ISBI recipe's model and batch, 2 threads

Builds the model of configs/isbi2012_cpu.yaml (a ResNet-34 U-Net, 1 input channel, 2 classes)
and times, interleaved in rounds so that machine load falls on both alike:
- one `pixelwise.engine.ema.update` of its average (after the first, which only copies);
- one training step of the recipe's batch (4x1x256x256): forward under bf16 autocast (what
  `train.amp` picks on a CPU where bf16 measures faster), cross-entropy, backward, AdamW.
Prints the median milliseconds of each and the update's share of the step. Run it alone.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from train_step import interleaved  # bench/ is on sys.path

from pixelwise.config import load_config
from pixelwise.engine import ema as averaging
from pixelwise.engine.optim import build_optimizer
from pixelwise.models.registry import build

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "isbi2012_cpu.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = load_config(RECIPE)
    model = build(config.model.name, 2, in_channels=1, **config.model.options)
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = build_optimizer(model, config.optim)
    x = torch.randn(4, 1, 256, 256).to(memory_format=torch.channels_last)
    target = torch.randint(0, 2, (4, 256, 256))
    ema = averaging.build_ema(model, 0.999)
    averaging.update(ema, model)  # the first update copies

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
        F.cross_entropy(logits.float(), target).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = interleaved({"ema update": lambda: averaging.update(ema, model), "step": step},
                        rounds=args.rounds, repeat=3)
    values = sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for b in model.buffers() if b.is_floating_point())
    print(f"{RECIPE.name} model: {values / 1e6:.1f} M averaged values, {args.threads} threads")
    print(f"ema update {times['ema update']:.1f} ms, training step {times['step']:.0f} ms: "
          f"{100 * times['ema update'] / times['step']:.1f} % of the step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
