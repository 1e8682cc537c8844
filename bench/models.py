"""CPU forward time at 512x512 and parameter count of each standard model configuration.

    python bench/models.py                      # best of 2 passes, about 1-2 minutes
    python bench/models.py --only fcn8s --repeats 5   # configurations whose name contains "fcn8s"

Batch 1, random weights, ``torch.inference_mode``; prints a Markdown table (the one in
docs/models.md) with the best (minimum) of ``--repeats`` timed passes after ``--warmup`` untimed
ones: on a CPU shared with other jobs the minimum is the least disturbed figure, and the first pass
pays one-off set-up, which the minimum skips. The padding="valid" U-Net takes the nearest valid
size (508 -> 324 output) instead of 512.
"""

from __future__ import annotations

import argparse
import time

import torch

from pixelwise.models import build, unet_nearest_valid_input_size
from pixelwise.models.summary import STANDARD_CONFIGURATIONS, describe_model


def forward_ms(model: torch.nn.Module, x: torch.Tensor, warmup: int, repeats: int) -> float:
    """Best wall time of ``model(x)`` over ``repeats`` passes, in milliseconds."""
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="keep configurations whose name contains this")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    print(
        f"CPU, {args.threads} threads, batch 1, best of {args.repeats} after {args.warmup} warm-up"
    )
    print("| model | backbone | options | output stride | parameters | input | forward ms |")
    print("|---|---|---|---|---|---|---|")
    for name, num_classes, options in STANDARD_CONFIGURATIONS:
        if args.only not in name:
            continue
        info = describe_model(name, num_classes, **options)
        size = args.size
        if options.get("padding") == "valid":
            size = unet_nearest_valid_input_size(size, depth=4)
        model = build(name, num_classes, **options).eval()
        x = torch.randn(1, options.get("in_channels", 3), size, size)
        ms = forward_ms(model, x, args.warmup, args.repeats)
        extra = " ".join(f"{k}={v}" for k, v in options.items() if k != "backbone") or "-"
        print(
            f"| {name} | {info.backbone} | {extra} | {info.output_stride} | "
            f"{info.parameters / 1e6:.2f}M | {size} | {ms:.0f} |"
        )


if __name__ == "__main__":
    main()
