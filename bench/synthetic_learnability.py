"""How far a small U-Net gets on SyntheticShapes in a CPU time budget (pooled FCN metrics).

    python bench/synthetic_learnability.py --seconds 60

Prints the validation table (64 held-out images) after training for about --seconds. The point
is that the built-in data is learnable quickly: mean IoU well above chance (about 1/5 for
five classes of which background covers ~80 % of the pixels).
"""

from __future__ import annotations

import argparse
import time

import torch

from pixelwise.data import open_dataset
from pixelwise.data.transforms import RECOMMENDED, eval_preset, train_preset
from pixelwise.losses import build_loss
from pixelwise.metrics import ConfusionMatrix, format_table
from pixelwise.models import build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    settings = RECOMMENDED["synthetic"]
    train = open_dataset(
        "synthetic",
        None,
        "train",
        size=args.size,
        transforms=train_preset(**settings),
    )
    val = open_dataset(
        "synthetic",
        None,
        "val",
        size=args.size,
        transforms=eval_preset(settings["mean"], settings["std"]),
    )
    model = build("unet", train.info.num_classes, base_channels=8, depth=3)
    loss_fn = build_loss("ce", train.info.num_classes, train.info.ignore_index)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = torch.utils.data.DataLoader(train, batch_size=16, shuffle=True)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds:
        for images, masks in loader:
            loss = loss_fn(model(images), masks)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            steps += 1
            if time.perf_counter() - start >= args.seconds:
                break
    print(
        f"trained {steps} steps (batch 16) in {time.perf_counter() - start:.0f} s, last loss {loss.item():.3f}"
    )
    model.eval()
    matrix = ConfusionMatrix(val.info.num_classes, val.info.ignore_index)
    with torch.no_grad():
        for images, masks in torch.utils.data.DataLoader(val, batch_size=32):
            matrix.update(model(images).argmax(1), masks)
    print(format_table(matrix.compute(), val.info.classes))


if __name__ == "__main__":
    main()
