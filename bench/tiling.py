"""Tiled against whole-image inference of one small U-Net: time per pixel and peak memory.

    python bench/tiling.py                                   # 1024 2048 4096, tile 512, overlap 128
    python bench/tiling.py --sizes 512 1024 --tile 256 --overlap 64 --rounds 5 --threads 1

Each measurement runs in a fresh subprocess, so that `resource.getrusage(RUSAGE_SELF).ru_maxrss`
(peak resident memory) belongs to it alone; the rounds interleave the two ways (each round runs
tiled then whole for every size) and the table shows medians, so a busy machine slows both alike.
In the subprocess: import, build the U-Net (`base_channels`, depth 3, random weights), allocate a
random uint8 (H, W, 3) image and the (H, W) uint8 label map, run the model once on a small input
(oneDNN's first-call set-up is not what is measured), record RSS, then time either
`predict_tiled(..., out=label)` (no probabilities) or one whole-image pass
(`model(x).argmax(1)`, what `Segmenter` does below `tile_above`), and record the peak.

Prints a Markdown table: megapixels per second of each, the ratio of tiled to whole time per
pixel (the target is <= 1.3 at 25 % overlap), the pixels the tiles compute per image pixel (at
25 % overlap 1.5-1.9: tiles of 512 stepping by 384 cover each axis 1.25-1.375 times), and the
peak RSS above the baseline (accumulators, tiles, activations: flat in the image size for tiled,
growing with it for whole). Sizes above `--whole-max` are run tiled only.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
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


def run_one(size: int, mode: str, args: argparse.Namespace) -> dict:
    """Measure one size in this process (called in the child)."""
    import numpy as np
    import torch

    from pixelwise.inference.tiling import plan_grid, predict_tiled
    from pixelwise.models import build

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build("unet", 4, in_channels=3, base_channels=args.base_channels, depth=3).eval()
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    label = np.full((size, size), 255, np.uint8)  # written, so resident before the baseline
    with torch.inference_mode():
        model(torch.zeros(1, 3, 64, 64))
    baseline = current_rss_mib()
    start = time.perf_counter()
    if mode == "tiled":
        predict_tiled(model, image, args.tile, args.overlap, args.batch_size,
                      align=model.geometry.align, out=label, preprocess=lambda x: x / 255)
    else:
        with torch.inference_mode():
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
            label[:] = model(x).argmax(1)[0].numpy()
    seconds = time.perf_counter() - start
    grid = plan_grid(model.geometry, size, size, (args.tile, args.tile),
                     (args.overlap, args.overlap), model.geometry.align)
    tile_pixels = sum(r.size * c.size for r in grid.rows for c in grid.cols)
    return {"seconds": seconds, "peak_above_baseline_mib": peak_rss_mib() - baseline,
            "computed_per_pixel": tile_pixels / size**2 if mode == "tiled" else 1.0}


def child(size: int, mode: str, args: argparse.Namespace) -> dict:
    argv = [sys.executable, __file__, "--child", str(size), "--mode", mode,
            "--tile", str(args.tile), "--overlap", str(args.overlap),
            "--batch-size", str(args.batch_size), "--base-channels", str(args.base_channels),
            "--threads", str(args.threads)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--base-channels", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--whole-max", type=int, default=4096,
                        help="largest size also run whole (its activations grow with the area)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["tiled", "whole"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(run_one(args.child, args.mode, args)))
        return
    print(f"U-Net base_channels={args.base_channels} depth=3, tile {args.tile}, overlap "
          f"{args.overlap} ({100 * args.overlap / args.tile:.0f} %), batch {args.batch_size}, "
          f"{args.threads} threads, median of {args.rounds} interleaved rounds\n")
    runs: dict[tuple[int, str], list[dict]] = {}
    for _ in range(args.rounds):
        for size in args.sizes:
            for mode in ("tiled", "whole") if size <= args.whole_max else ("tiled",):
                runs.setdefault((size, mode), []).append(child(size, mode, args))
    print("| size | tiled Mpx/s | whole Mpx/s | tiled / whole time per pixel | pixels the tiles "
          "compute per image pixel | tiled peak RSS (MiB) | whole peak RSS (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        megapixels = size * size / 1e6
        cells = []
        for mode in ("tiled", "whole"):
            results = runs.get((size, mode))
            cells.append(None if results is None else (
                statistics.median(r["seconds"] for r in results),
                max(r["peak_above_baseline_mib"] for r in results)))
        (tiled, tiled_peak), whole = cells[0], cells[1]
        whole_rate = f"{megapixels / whole[0]:.2f}" if whole else "-"
        ratio = f"{tiled / whole[0]:.2f}" if whole else "-"
        whole_peak = f"{whole[1]:.0f}" if whole else "-"
        computed = runs[(size, "tiled")][0]["computed_per_pixel"]
        print(f"| {size} | {megapixels / tiled:.2f} | {whole_rate} | {ratio} | {computed:.2f} "
              f"| {tiled_peak:.0f} | {whole_peak} |", flush=True)


if __name__ == "__main__":
    main()
