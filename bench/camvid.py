"""CamVid side by side at half resolution: pixelwise against smp and torchvision, one budget.

    python bench/camvid.py --budget 1200 --systems pixelwise,smp-unet-r34,tv-lraspp-mbv3
    python bench/camvid.py --steps 300 --eval-root /data/camvid-full --eval-split test

Every system trains on the 367 images of --train-root, each pair read at 180x240 (CamVid
scale=0.5: image bilinear antialiased, mask nearest), 176x240 crops, batch 4, 2 threads, one
after another, and is scored on --eval-root/--eval-split (default: the train root's val, 101
images) at the same resolution with void ignored (bench/_side_by_side.py says how each is
trained and scored). pixelwise trains from configs/camvid_cpu.yaml (FCN-4s on MobileNetV3-Large,
the realtime preset's FCN-8s with a non-linear stride-4 skip, against torchvision's LR-ASPP
MobileNetV3; pixelwise-realtime is the same recipe with the preset's model). Scores: mean_iou and iou per
class in class order (FCN definitions, pooled), pixel_accuracy, and object_recall: per class and
size (small < 32^2, medium < 96^2 pixels, large), the fraction of the truth's 4-connected
components with at least half their pixels predicted as their class.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _side_by_side import Task, add_common_arguments, parse_crop, run_all  # bench/ is on sys.path

REPO = Path(__file__).resolve().parents[1]


def camvid_scores(scores: dict) -> dict:
    return {"mean_iou": scores["mean_iou"], "pixel_accuracy": scores["pixel_accuracy"],
            "iou": scores["iou"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, budget=1200.0, crop="176x240", batch_size=4)
    parser.add_argument("--train-root", default=str(REPO.parent / "shared" / "data" / "camvid"),
                        help="CamVid in the SegNet layout (default ../shared/data/camvid)")
    parser.add_argument("--eval-root", help="SegNet-layout folder to score on (default: "
                        "--train-root)")
    parser.add_argument("--eval-split", default="val",
                        help="split folder of --eval-root, e.g. test (default %(default)s)")
    parser.add_argument("--scale", type=float, default=0.5,
                        help="read every pair at this factor of 360x480 (default %(default)s)")
    args = parser.parse_args(argv)
    task = Task("camvid", str(REPO / "configs" / "camvid_cpu.yaml"), args.train_root,
                args.eval_root or args.train_root, args.eval_split, parse_crop(args.crop),
                args.batch_size, vflip=0.0, scores=camvid_scores, options={"scale": args.scale},
                tta="h")  # the mirror: +0.5 mean IoU points on the 1200 s model (docs/benchmarks.md)
    args.set = [f"data.options.scale={args.scale}", *args.set]
    run_all(task, args, default_out="runs/bench-camvid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
