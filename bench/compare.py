"""pixelwise against torchvision and segmentation_models_pytorch on the same machine.

For the closest pairs of architectures, prints parameters, CPU forward time (batch 1, random
weights, `torch.inference_mode`) at a multiple of 32 and whether an odd-sized input works:

- FCN on ResNet-50: pixelwise `fcn8s(backbone="resnet50")` (FCN-8s skips over stride 8/16/32
  features) vs torchvision `fcn_resnet50` (a dilated ResNet-50 at stride 8 with one FCN head,
  as torchvision builds it).
- U-Net on ResNet-34: pixelwise `unet(encoder="resnet34")` (default decoder, and
  `decoder_channels=[256, 128, 64, 32, 16]`, smp's widths) vs smp `Unet("resnet34")`.

    python bench/compare.py --size 512 --odd 500 375 --threads 2

smp is optional (`pip install segmentation-models-pytorch`); its rows are skipped without it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from models import forward_ms  # bench/models.py: this folder is on sys.path when run as a script

from pixelwise.models import build, count_parameters


def candidates() -> list[tuple[str, Callable[[], torch.nn.Module]]]:
    """(label, builder) of every model compared; smp only when installed."""
    from torchvision.models.segmentation import fcn_resnet50

    pairs: list[tuple[str, Callable[[], torch.nn.Module]]] = [
        ("pixelwise fcn8s resnet50", lambda: build("fcn8s", 21, backbone="resnet50")),
        ("torchvision fcn_resnet50", lambda: fcn_resnet50(weights=None, weights_backbone=None,
                                                          num_classes=21, aux_loss=False)),
        ("pixelwise unet resnet34", lambda: build("unet", 2, encoder="resnet34")),
        ("pixelwise unet resnet34 smp widths",
         lambda: build("unet", 2, encoder="resnet34", decoder_channels=[256, 128, 64, 32, 16])),
    ]
    try:
        import segmentation_models_pytorch as smp

        pairs.append(("smp Unet resnet34",
                      lambda: smp.Unet("resnet34", encoder_weights=None, classes=2)))
    except ImportError:
        print("segmentation_models_pytorch not installed: smp rows skipped")
    return pairs


def logits(output: torch.Tensor | dict) -> torch.Tensor:
    """torchvision's segmentation models return {"out": logits}."""
    return output["out"] if isinstance(output, dict) else output


def odd_size_result(model: torch.nn.Module, height: int, width: int) -> str:
    """The output size for an odd input, or the first line of the error the model raises."""
    try:
        with torch.inference_mode():
            out = logits(model(torch.randn(1, 3, height, width)))
        return f"{out.shape[-2]}x{out.shape[-1]}"
    except Exception as error:  # we report what other libraries raise, whatever it is
        return f"fails: {type(error).__name__}: {str(error).splitlines()[0][:60]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--odd", type=int, nargs=2, default=[500, 375], metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU, {args.threads} threads, batch 1, best of {args.repeats} after 1 warm-up")
    print(f"| model | parameters | forward ms at {args.size} | {args.odd[0]}x{args.odd[1]} input |")
    print("|---|---|---|---|")
    for label, make in candidates():
        torch.manual_seed(0)
        model = make().eval()
        x = torch.randn(1, 3, args.size, args.size)
        ms = forward_ms(lambda batch, m=model: logits(m(batch)), x, 1, args.repeats)
        print(f"| {label} | {count_parameters(model) / 1e6:.2f}M | {ms:.0f} | "
              f"{odd_size_result(model, *args.odd)} |")


if __name__ == "__main__":
    main()
