"""Time and peak memory of `predict_tiled` on square images of growing size, small U-Net.

    python bench/tiling.py                                   # 1024 2048 4096 8192, tile 512
    python bench/tiling.py --sizes 256 512 1024 --tile 128 --overlap 32 --threads 1

Each size runs in a fresh subprocess so that `resource.getrusage(RUSAGE_SELF).ru_maxrss` (peak
resident memory) belongs to that size alone. In the subprocess: import, build the U-Net
(`base_channels`, depth 3, random weights), allocate a random uint8 (H, W, 3) image and the
(H, W) uint8 label map, record RSS, then run `predict_tiled(..., out=label)` (no probabilities)
and record the peak. Prints a Markdown table: seconds, seconds per megapixel, the peak RSS above
the baseline (accumulators, tiles, activations: the part that should stay flat), and the image +
label bytes that are allocated before the baseline.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def run_one(size: int, args: argparse.Namespace) -> dict:
    """Measure one size in this process (called in the child)."""
    import numpy as np
    import torch

    from pixelwise.inference.tiling import predict_tiled
    from pixelwise.models import build

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build("unet", 4, in_channels=3, base_channels=args.base_channels, depth=3).eval()
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    label = np.full((size, size), 255, np.uint8)  # written, so resident before the baseline
    baseline = current_rss_mib()
    start = time.perf_counter()
    predict_tiled(model, image, args.tile, args.overlap, args.batch_size, align=8, out=label,
                  preprocess=lambda x: x / 255)
    seconds = time.perf_counter() - start
    return {"size": size, "seconds": seconds, "peak_above_baseline_mib": peak_rss_mib() - baseline,
            "image_and_label_mib": (image.nbytes + label.nbytes) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--base-channels", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(run_one(args.child, args)))
        return
    print(f"U-Net base_channels={args.base_channels} depth=3, tile {args.tile}, overlap "
          f"{args.overlap}, batch {args.batch_size}, {args.threads} threads\n")
    print("| size | seconds | s / Mpx | peak RSS above baseline (MiB) | image + label (MiB) |")
    print("|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        argv = [sys.executable, __file__, "--child", str(size), "--tile", str(args.tile),
                "--overlap", str(args.overlap), "--batch-size", str(args.batch_size),
                "--base-channels", str(args.base_channels), "--threads", str(args.threads)]
        result = json.loads(subprocess.run(argv, check=True, capture_output=True,
                                           text=True).stdout.splitlines()[-1])
        megapixels = size * size / 1e6
        print(f"| {size} | {result['seconds']:.2f} | {result['seconds'] / megapixels:.3f} | "
              f"{result['peak_above_baseline_mib']:.0f} | {result['image_and_label_mib']:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
