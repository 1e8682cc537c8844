"""Realtime preset frames per second at 360x480, label map included: torch and onnx backends
against torchvision's LR-ASPP MobileNetV3 eager fp32, interleaved (30 rounds, medians), 2 threads.

    python bench/realtime_fps.py
    python bench/realtime_fps.py --rounds 10 --json runs/realtime_fps.json

Each row maps a 360x480 frame to its 360x480 label map. "half size" rows run the model on the
frame shrunk to 180x240 and resize the class scores back (``tta_scales=(0.5,)``, what
``Segmenter(..., tta_scales=(0.5,))`` and ``pixelwise predict --tta-scales 0.5`` do), the size
``bench/camvid.py`` trains and scores every system at; LR-ASPP gets the same treatment, so that
each model is timed at the size it was trained for.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _side_by_side import PeerLogits  # bench/ is on sys.path
from torchvision.models.segmentation import lraspp_mobilenet_v3_large

from pixelwise.inference.backends import build_backend
from pixelwise.inference.tta import with_tta
from pixelwise.labels import class_ids
from pixelwise.models import build, preset

FRAME = (360, 480)
HALF = (0.5,)


def runs() -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Each timed system: frame (1, 3, 360, 480) in, label map (1, 360, 480) out."""
    torch.manual_seed(0)
    name, options = preset("realtime")
    ours = build(name, num_classes=11, **options).eval().to(memory_format=torch.channels_last)
    peer = PeerLogits(lraspp_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                num_classes=11).eval(), repeat_grey=False)
    onnx = build_backend("onnx", ours, torch.device("cpu"), 3)
    ours_half, peer_half = with_tta(ours, (), HALF), with_tta(peer, (), HALF)
    onnx_half = with_tta(onnx, (), HALF)
    last = torch.channels_last
    return {
        "realtime torch": lambda x: class_ids(ours(x.contiguous(memory_format=last))),
        "realtime onnx": lambda x: class_ids(onnx(x)),
        "realtime torch, half size": lambda x: class_ids(ours_half(x.contiguous(memory_format=last))),
        "realtime onnx, half size": lambda x: class_ids(onnx_half(x)),
        "lraspp torch": lambda x: class_ids(peer(x)),
        "lraspp torch, half size": lambda x: class_ids(peer_half(x)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds (default 30)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    systems = runs()
    frame = torch.randn(1, 3, *FRAME)
    times: dict[str, list[float]] = {key: [] for key in systems}
    with torch.inference_mode():
        for run in systems.values():  # warm-up
            assert run(frame).shape == (1, *FRAME)
            run(frame)
        for _ in range(args.rounds):
            for key, run in systems.items():
                start = time.perf_counter()
                run(frame)
                times[key].append(time.perf_counter() - start)
    peer_ms = statistics.median(times["lraspp torch"])
    rows = []
    for key, values in times.items():
        median = statistics.median(values)
        rows.append({"system": key, "ms": round(median * 1000, 1), "fps": round(1 / median, 1),
                     "time_over_lraspp": round(median / peer_ms, 2)})
        print(f"{key:26s} {median * 1000:7.1f} ms {1 / median:6.1f} fps  "
              f"time / LR-ASPP {median / peer_ms:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
