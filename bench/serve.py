"""A bounded load test of `pixelwise serve` on 127.0.0.1, with and without micro-batching.

    python bench/serve.py                          # 500 requests, 16 clients, 256x256, small U-Net
    python bench/serve.py --requests 200 --concurrency 8 --threads 2 --checkpoint best.safetensors

For each mode (``--max-batch 1``: no batching; ``--max-batch N --max-wait-ms W``: batching) a
fresh server runs in its own process (``python -m pixelwise serve ... --device cpu``), gets a
short warm-up, then ``--concurrency`` clients (asyncio + httpx, one connection each) send
``--requests`` POST /predict?format=png requests with a random ``--size`` x ``--size`` RGB PNG,
as fast as the answers come back. Prints a Markdown table: requests/s, latency p50 / p99,
errors (any status but 200, or a connection failure), and the mean batch size read from the
server's /metrics. Without ``--checkpoint`` the model is a randomly initialised U-Net (16 base
channels, depth 3, 3 classes), which computes exactly as a trained one does.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def tiny_checkpoint(folder: Path) -> Path:
    """A random 3-class U-Net (16 base channels, depth 3) saved as a pixelwise checkpoint."""
    import torch

    from pixelwise.checkpoint import ModelMeta, save_weights
    from pixelwise.data.palette import default_palette
    from pixelwise.models import build

    options = {"base_channels": 16, "depth": 3}
    torch.manual_seed(0)
    meta = ModelMeta(name="unet", num_classes=3, options=options, classes=["a", "b", "c"],
                     palette=default_palette(3), ignore_index=255, in_channels=3,
                     mean=[0.5] * 3, std=[0.25] * 3)
    path = folder / "bench.safetensors"
    save_weights(path, build("unet", num_classes=3, **options), meta)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(checkpoint: Path, port: int, max_batch: int, max_wait_ms: float,
                 threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "pixelwise", "serve", str(checkpoint), "--port", str(port),
               "--device", "cpu", "--max-batch", str(max_batch), "--max-wait-ms",
               str(max_wait_ms)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)


async def wait_until_up(client, url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            if (await client.get(f"{url}/healthz")).status_code == 200:
                return
        except Exception:  # not listening yet
            await asyncio.sleep(0.2)
    raise SystemExit(f"the server did not answer {url}/healthz within {seconds} s")


async def load(url: str, body: bytes, requests: int, concurrency: int) -> dict:
    """Send ``requests`` predictions from ``concurrency`` clients; latencies and errors."""
    import httpx

    latencies: list[float] = []
    errors = 0
    remaining = iter(range(requests))

    async def client_loop() -> None:
        nonlocal errors
        async with httpx.AsyncClient(timeout=60) as client:
            for _ in remaining:
                start = time.perf_counter()
                try:
                    response = await client.post(f"{url}/predict?format=png", content=body)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - start)
                errors += not ok

    start = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "latencies": latencies, "errors": errors}


def batch_totals(metrics_text: str) -> tuple[float, float]:
    """Images and model calls so far, from the server's pixelwise_batch_size histogram."""
    images = re.search(r"^pixelwise_batch_size_sum (\S+)$", metrics_text, re.M)
    calls = re.search(r"^pixelwise_batch_size_count (\S+)$", metrics_text, re.M)
    return float(images.group(1)), float(calls.group(1))


async def run_mode(checkpoint: Path, body: bytes, max_batch: int, args) -> dict:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(checkpoint, port, max_batch, args.max_wait_ms, args.threads)
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            await wait_until_up(client, url, server)
            for _ in range(args.warmup):
                await client.post(f"{url}/predict?format=png", content=body)
            images, calls = batch_totals((await client.get(f"{url}/metrics")).text)
            result = await load(url, body, args.requests, args.concurrency)
            images_after, calls_after = batch_totals((await client.get(f"{url}/metrics")).text)
            result["mean_batch"] = (images_after - images) / max(1.0, calls_after - calls)
    finally:
        server.terminate()
        server.wait(30)
    return result


def row(name: str, result: dict, requests: int) -> str:
    p50, p99 = np.percentile(np.asarray(result["latencies"]) * 1000, [50, 99])
    return (f"| {name} | {requests} | {result['errors']} | {requests / result['seconds']:.1f} | "
            f"{p50:.0f} | {p99:.0f} | {result['mean_batch']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="default: a random small U-Net")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--size", type=int, default=256, help="image side, pixels")
    parser.add_argument("--max-batch", type=int, default=8, help="the batching mode's batch")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2, help="the server's torch threads")
    parser.add_argument("--warmup", type=int, default=10, help="requests before timing")
    args = parser.parse_args()

    from PIL import Image

    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)).save(
        buffer, format="png")
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.checkpoint or tiny_checkpoint(Path(folder))
        modes = [("no batching (--max-batch 1)", 1),
                 (f"batching (--max-batch {args.max_batch}, --max-wait-ms {args.max_wait_ms:g})",
                  args.max_batch)]
        rows = [row(name, asyncio.run(run_mode(checkpoint, buffer.getvalue(), batch, args)),
                    args.requests) for name, batch in modes]
    print(f"{args.requests} requests from {args.concurrency} clients, {args.size}x{args.size} "
          f"PNG -> palette PNG, {checkpoint.name if args.checkpoint else 'U-Net 16/3'}, "
          f"server torch threads {args.threads}, {os.cpu_count()} CPUs\n")
    print("| mode | requests | errors | requests/s | p50 ms | p99 ms | images per model call |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
