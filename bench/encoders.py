"""Parameters, FLOPs and CPU forward time at 512x512 of each encoder family (the docs' table).

    python bench/encoders.py                         # smallest member of every family
    python bench/encoders.py --families resnet,convnext --members all
    python bench/encoders.py --no-time               # parameters and FLOPs only (seconds)
    python bench/encoders.py --families efficientnet,densenet --no-time --onnx  # + ONNX parity

Per encoder: the feature extractor alone (what ``backbone=`` / ``encoder=`` adds to a model),
batch 1, random weights, ``torch.inference_mode``. Parameters and FLOPs (multiply-adds count 2,
``torch.utils.flop_counter.FlopCounterMode``) are counted on the meta device, so they do not
depend on the machine; forward time is the best of ``--repeats`` timed passes after ``--warmup``
(on a CPU shared with other jobs the minimum is the least disturbed figure). Prints a Markdown
table; ``--onnx`` adds the ONNX export parity check (``pixelwise.export.export_onnx``, odd sizes
37x45, 50x33, 20x9) of a tiny U-Net and of FCN-8s on each encoder (minutes each on 2 cores).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from models import forward_ms  # bench/models.py: this folder is on sys.path when run as a script
from torch.utils.flop_counter import FlopCounterMode

from pixelwise.export import export_onnx
from pixelwise.models import build
from pixelwise.models.backbones import Backbone, build_backbone, encoder_families
from pixelwise.models.summary import count_parameters

ONNX_SIZES = [(37, 45), (50, 33), (20, 9)]


def meta_figures(name: str, size: int) -> tuple[Backbone, int]:
    """Encoder ``name`` on the meta device, and its forward FLOPs at ``size`` x ``size``."""
    with torch.device("meta"):
        encoder = build_backbone(name, in_channels=3).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            encoder(torch.empty(1, 3, size, size))
    return encoder, counter.get_total_flops()


def onnx_parity(name: str, folder: Path) -> list[str]:
    """``"passed (exporter, max |diff|)"`` for a tiny U-Net and FCN-8s on encoder ``name``."""
    results = []
    for model_name, options in (("unet", {"encoder": name, "base_channels": 4}),
                                ("fcn8s", {"backbone": name})):
        torch.manual_seed(0)
        model = build(model_name, 3, **options).eval()
        with torch.no_grad():  # FCN score layers start at zero: give them values to compare
            for key, parameter in model.named_parameters():
                if "score" in key:
                    parameter.normal_(0, 0.01)
        try:
            report = export_onnx(model, folder / f"{model_name}_{name}.onnx", sizes=ONNX_SIZES)
        except Exception as error:  # a report row, not a crash: onnxruntime rejecting a size
            results.append(f"FAILED ({type(error).__name__})")
            continue
        verdict = "passed" if report.passed else "FAILED"
        results.append(f"{verdict} ({report.exporter}, {report.max_abs_diff:.1e})")
    return results


def selected(families: str, members: str) -> list[tuple[str, str]]:
    """``(family, name)`` pairs: families whose name contains one of the comma-separated words."""
    words = [w.strip().lower() for w in families.split(",") if w.strip()]
    pairs = []
    for family, names in encoder_families().items():
        if not words or any(w in family.lower() for w in words):
            pairs += [(family, name) for name in (names if members == "all" else names[:1])]
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--families", default="", help="comma-separated, e.g. resnet,convnext")
    parser.add_argument("--members", choices=["smallest", "all"], default="smallest")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-time", action="store_true", help="parameters and FLOPs only")
    parser.add_argument("--onnx", action="store_true", help="also check ONNX export parity")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    timing = "no timing" if args.no_time else (
        f"CPU, {args.threads} threads, best of {args.repeats} after {args.warmup} warm-up"
    )
    print(f"{args.size}x{args.size}, batch 1; {timing}")
    print("| family | encoder | strides | parameters | GFLOPs | input padded | forward ms |")
    print("|---|---|---|---|---|---|---|")
    for family, name in selected(args.families, args.members):
        encoder, flops = meta_figures(name, args.size)
        parameters = count_parameters(encoder)
        strides = "/".join(str(stage.stride) for stage in encoder.stages)
        padded = "yes" if encoder.pad else "no"
        ms = "-"
        if not args.no_time:
            encoder = build_backbone(name, in_channels=3).eval()
            x = torch.randn(1, 3, args.size, args.size)
            ms = f"{forward_ms(encoder, x, args.warmup, args.repeats):.0f}"
        print(
            f"| {family} | {name} | {strides} | {parameters / 1e6:.2f}M | {flops / 1e9:.1f} | "
            f"{padded} | {ms} |",
            flush=True,
        )
    if args.onnx:
        print("\n| encoder | ONNX U-Net | ONNX FCN-8s |\n|---|---|---|")
        with tempfile.TemporaryDirectory() as folder:
            for _, name in selected(args.families, args.members):
                unet, fcn = onnx_parity(name, Path(folder))
                print(f"| {name} | {unet} | {fcn} |", flush=True)


if __name__ == "__main__":
    main()
