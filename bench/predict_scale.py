"""Throughput of `pixelwise predict` in one process and under torchrun, and the scaling efficiency.

    python bench/predict_scale.py                        # 96 images of 128x128, 1 and 2 processes
    python bench/predict_scale.py --images 400 --size 256 --processes 1 2 4 --base-channels 32

Writes a folder of random RGB PNGs and an untrained U-Net checkpoint (`--base-channels`, depth 3)
into a temporary folder, then runs `pixelwise predict CKPT IMAGES --out OUT --format png` once per
process count: `python -m pixelwise` for 1, `torchrun --standalone --nproc-per-node N -m pixelwise`
above, every process with one thread (`OMP_NUM_THREADS=1`) and `--workers` decoding processes.

images/s is counted from the job's own `manifest*.jsonl` times (from the first image done to the
last, over all processes), so Python's start-up and the model load are left out; the wall time
of the whole command is printed beside it. Efficiency = rate(N) / (N x rate(1)). Each run's
outputs are checked to be byte-identical to the one-process run's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def make_inputs(folder: Path, count: int, size: int, base_channels: int) -> Path:
    """``count`` random ``size``-pixel PNGs in ``folder/images`` and a checkpoint; returns it."""
    import numpy as np
    import torch
    from PIL import Image

    from pixelwise.checkpoint import ModelMeta, save_weights
    from pixelwise.data.palette import default_palette
    from pixelwise.models import build

    images = folder / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"img{i:05d}.png")
    torch.manual_seed(0)
    options = {"in_channels": 3, "base_channels": base_channels, "depth": 3}
    meta = ModelMeta(name="unet", num_classes=4, options=options,
                     classes=[f"class_{k}" for k in range(4)], palette=default_palette(4),
                     ignore_index=255, in_channels=3, mean=[0.5] * 3, std=[0.25] * 3)
    checkpoint = folder / "model.safetensors"
    save_weights(checkpoint, build("unet", 4, **options), meta)
    return checkpoint


def run(processes: int, checkpoint: Path, images: Path, out: Path, workers: int) -> dict:
    """One `pixelwise predict` run; returns its rate (manifest times) and wall seconds."""
    launcher = [sys.executable, "-m", "pixelwise"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(processes), "-m", "pixelwise"]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    command = [*launcher, "predict", str(checkpoint), str(images), "--out", str(out),
               "--format", "png", "--workers", str(workers), "--no-progress"]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - started
    times = sorted(json.loads(line)["time"] for path in out.glob("manifest*.jsonl")
                   for line in path.read_text().splitlines() if '"outputs"' in line)
    return {"processes": processes, "images_per_s": (len(times) - 1) / (times[-1] - times[0]),
            "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workers", type=int, default=1, help="decoding processes per process")
    args = parser.parse_args()
    sys.path.insert(0, str(SRC))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoint = make_inputs(folder, args.images, args.size, args.base_channels)
        results, reference = [], None
        for n in args.processes:
            out = folder / f"out{n}"
            results.append(run(n, checkpoint, folder / "images", out, args.workers))
            files = {p.name: p.read_bytes() for p in out.glob("img*.png")}
            reference = reference or files
            results[-1]["identical"] = files == reference
    base = next((r["images_per_s"] for r in results if r["processes"] == 1), None)
    print(f"{args.images} images of {args.size}x{args.size}, U-Net base {args.base_channels} "
          f"depth 3, 1 thread and {args.workers} decoding worker(s) per process\n")
    print("| processes | images/s | scaling efficiency | wall s (with start-up) | same bytes |")
    print("|---:|---:|---:|---:|---|")
    for r in results:
        efficiency = f"{r['images_per_s'] / (r['processes'] * base):.0%}" if base else "-"
        print(f"| {r['processes']} | {r['images_per_s']:.1f} | {efficiency} | "
              f"{r['wall_s']:.1f} | {'yes' if r['identical'] else 'NO'} |")


if __name__ == "__main__":
    main()
