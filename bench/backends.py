"""Inference backends of one checkpoint: latency per image and the mean IoU each one scores.

    python bench/backends.py runs/unet_camvid/best.safetensors --data camvid \
        --root ../shared/data/camvid                     # val split, calibrated on train/
    python bench/backends.py CKPT --data synthetic --option n=16 --option size=128 \
        --calibration DIR --images 4 --rounds 5 --threads 1

For each backend available here ("torch", "onnx", "onnx-int8"; "torch-bf16" where the CPU has
bf16 units, or when named with --backends): a `Segmenter` on the CPU, calibrated on the first
four images of --calibration (default: the first four images of the dataset's train split as
it reads them, so at the size of the scored images; `auto` times the backends at that size). Latency is
`Segmenter.predict` on the first --images images of the split (label map included), timed in
--rounds interleaved rounds (each round times every backend once, so a busy machine slows all
alike), median per image. Mean IoU is `pixelwise.engine.evaluate.evaluate` over the whole split
through the same backend; the change is in IoU points against "torch" (fp32). A backend is
accepted when its mean IoU drops by at most 0.5 points (issue 16) and its labels agree with
fp32's on at least 99.5 % of the timed images' pixels (what `backend="auto"` requires). Then
`backend="auto"` runs and prints what it measured and chose.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pixelwise.config import parse_options
from pixelwise.data import open_dataset
from pixelwise.device import bf16_supported
from pixelwise.engine.evaluate import evaluate
from pixelwise.inference.backends import MIN_AGREEMENT
from pixelwise.inference.predict import Segmenter

MAX_DROP = 0.5  # mean IoU points a backend may lose against fp32 (issue 16)


def split_images(data, count: int) -> list[torch.Tensor]:
    """The first `count` images of the split, float (C, H, W) in [0, 1] as the dataset reads."""
    return [data[i][0] for i in range(min(count, len(data)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True, help="dataset kind, e.g. camvid")
    parser.add_argument("--root", default="")
    parser.add_argument("--split", default="val")
    parser.add_argument("--option", action="append", default=[], metavar="key=value")
    parser.add_argument("--calibration",
                        help="calibration image folder (default: the train split as read)")
    parser.add_argument("--backends", nargs="+", help="default: those available here")
    parser.add_argument("--images", type=int, default=8, help="images timed per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)  # before the backends: onnxruntime takes the same count
    options = parse_options(args.option)
    # Calibrate at the size the split is predicted at: the first training images as the dataset
    # reads them (--option scale=0.5 included), not the files at full size.
    calibration = args.calibration or split_images(
        open_dataset(args.data, args.root, "train", **options), 4)
    names = args.backends or (["torch"] + (["torch-bf16"] if bf16_supported("cpu") else [])
                              + ["onnx", "onnx-int8"])
    segmenters = {name: Segmenter.from_checkpoint(args.checkpoint, device="cpu", backend=name,
                                                  calibration=calibration) for name in names}
    data = open_dataset(args.data, args.root, args.split, **options)
    images = split_images(data, args.images)

    labels = {name: [s.predict(x) for x in images] for name, s in segmenters.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name, segmenter in segmenters.items():
            start = time.perf_counter()
            for x in images:
                segmenter.predict(x)
            times[name].append((time.perf_counter() - start) / len(images))

    results = {}
    with tempfile.TemporaryDirectory() as out:
        for name in names:
            scores = evaluate(args.checkpoint, args.data, args.root, args.split,
                              out_dir=Path(out) / name, device="cpu", progress=False,
                              backend=name, calibration=calibration, **options)
            agreement = np.mean([(a == b).mean() for a, b in zip(labels[name], labels["torch"],
                                                                  strict=True)])
            results[name] = {"ms_per_image": 1000 * statistics.median(times[name]),
                             "mean_iou": scores["mean_iou"], "agreement": float(agreement)}
    reference = results["torch"]
    height, width = images[0].shape[-2:]
    print(f"{args.checkpoint} on {args.data} {args.split} ({len(data)} images), latency on "
          f"{len(images)} images of {height}x{width}, {args.threads} threads, median of "
          f"{args.rounds} interleaved rounds\n")
    print("| backend | ms / image | speed-up | mean IoU | change (points) | agreement | accepted |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, r in results.items():
        change = 100 * (r["mean_iou"] - reference["mean_iou"])
        r["accepted"] = bool(change >= -MAX_DROP and r["agreement"] >= MIN_AGREEMENT)
        print(f"| {name} | {r['ms_per_image']:.1f} | "
              f"{reference['ms_per_image'] / r['ms_per_image']:.2f}x | {r['mean_iou']:.4f} | "
              f"{change:+.2f} | {100 * r['agreement']:.2f} % | {'yes' if r['accepted'] else 'no'} |")
    auto = Segmenter.from_checkpoint(args.checkpoint, device="cpu", backend="auto",
                                     calibration=calibration)
    print(f"\n{auto.backend_choice}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results,
                                               "auto": auto.backend_choice.name}, indent=2))


if __name__ == "__main__":
    main()
