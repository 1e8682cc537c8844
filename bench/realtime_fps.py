"""Realtime preset frames per second at 360x480, label map included: torch and onnx backends
against torchvision's LR-ASPP MobileNetV3 eager fp32, interleaved (30 rounds, medians), 2 threads.

    python bench/realtime_fps.py
"""

from __future__ import annotations

import statistics
import time

import torch
from torchvision.models.segmentation import lraspp_mobilenet_v3_large

from pixelwise.inference.backends import build_backend
from pixelwise.models import build, preset


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    name, options = preset("realtime")
    ours = build(name, num_classes=11, **options).eval().to(memory_format=torch.channels_last)
    peer = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=11).eval()
    frame = torch.randn(1, 3, 360, 480)
    onnx = build_backend("onnx", ours, torch.device("cpu"), 3)
    runs = {
        "realtime torch": lambda: ours(frame.contiguous(memory_format=torch.channels_last)).argmax(1),
        "realtime onnx": lambda: onnx(frame).argmax(1),
        "lraspp torch": lambda: peer(frame)["out"].argmax(1),
    }
    times: dict[str, list[float]] = {key: [] for key in runs}
    with torch.inference_mode():
        for run in runs.values():  # warm-up
            run()
            run()
        for _ in range(30):
            for key, run in runs.items():
                start = time.perf_counter()
                run()
                times[key].append(time.perf_counter() - start)
    peer_ms = statistics.median(times["lraspp torch"])
    for key, values in times.items():
        median = statistics.median(values)
        print(f"{key:16s} {median * 1000:7.1f} ms {1 / median:6.1f} fps  "
              f"time / LR-ASPP {median / peer_ms:.2f}")


if __name__ == "__main__":
    main()
