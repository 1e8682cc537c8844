"""CPU inference time: PyTorch eager vs onnxruntime, for FCN-8s and U-Net.

    python bench/onnx_vs_torch.py                       # 512x512, paper-sized models
    python bench/onnx_vs_torch.py --size 128 --unet-base 16 --fcn-fc 512 --repeats 3 --threads 1

Each model (random weights, FCN score layers too, eval mode) is exported with `pixelwise.export.export_onnx` (parity
checked at the benchmark size), then both run batch 1 on the same input with the same number of
threads (`torch.set_num_threads`, onnxruntime `intra_op_num_threads`). Prints a Markdown table
with the median of `--repeats` timed runs after one warm-up, and the parity figure.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from models import forward_ms  # bench/models.py: this folder is on sys.path when run as a script

from pixelwise.export import export_onnx
from pixelwise.inference.onnx import OnnxModule
from pixelwise.models import build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--unet-base", type=int, default=64, help="U-Net base_channels")
    parser.add_argument("--fcn-backbone", default="vgg16")
    parser.add_argument("--fcn-fc", type=int, default=4096, help="FCN fc6/fc7 width (vgg16)")
    parser.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "legacy"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fcn_options = {"backbone": args.fcn_backbone}
    if args.fcn_backbone == "vgg16":
        fcn_options["fc_channels"] = args.fcn_fc
    models = {
        f"unet (base {args.unet_base}, depth 4)": build("unet", 2, base_channels=args.unet_base),
        f"fcn8s ({args.fcn_backbone})": build("fcn8s", 21, **fcn_options),
    }
    with torch.no_grad():  # FCN's score layers start at zero: make the parity figure mean something
        for model in models.values():
            for key, parameter in model.named_parameters():
                if "score" in key:
                    parameter.normal_(0, 0.01)
    x = torch.randn(1, 3, args.size, args.size)
    print(f"{args.size}x{args.size}, batch 1, {args.threads} threads, median of {args.repeats}\n")
    print("| model | exporter | PyTorch eager (ms) | onnxruntime (ms) | speed-up | max abs diff |")
    print("|---|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for name, model in models.items():
            model.eval()
            path = Path(folder) / "model.onnx"
            report = export_onnx(model, path, exporter=args.exporter,
                                 sizes=[(args.size, args.size)])
            exported = OnnxModule(path, threads=args.threads)
            eager = forward_ms(model, x, warmup=1, repeats=args.repeats)
            onnx = forward_ms(exported, x, warmup=1, repeats=args.repeats)
            print(f"| {name} | {report.exporter} | {eager:.1f} | {onnx:.1f} | "
                  f"{eager / onnx:.2f}x | {report.max_abs_diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
