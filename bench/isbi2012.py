"""ISBI 2012 side by side: pixelwise against smp and torchvision, the same budget for each.

    python bench/isbi2012.py --budget 600 --systems pixelwise,smp-unet-r34,tv-lraspp-mbv3
    python bench/isbi2012.py --steps 300 --out runs/bench-isbi2012   # equal steps

Every system trains on slices 0-24 (256x256 crops, batch 4, 2 threads), one after another, and
is scored on whole slices 25-29 at 512x512 (bench/_side_by_side.py says how each is trained
and scored; pixelwise with its 8 rotations and mirrors averaged, each also at 1.25x: --tta none
and --tta-scales 1 drop them). pixelwise trains from configs/isbi2012_cpu.yaml. Scores:
- pixel_error: wrong pixels / all pixels, pooled over the slices (the plain pixel error);
- challenge_pixel_error: the ISBI 2012 challenge's pixel error, 1 - the best F-score of cell
  pixels (class 1) over thresholds 0, 0.1, ..., 1 of P(cell), pooled over the slices
  (pixelwise.metrics.MaxFScorePixelError; the definition of the U-Net paper's 0.0611);
- challenge_rand_error: the ISBI 2012 challenge's Rand error (the definition of the U-Net paper's
  0.0382), 1 - the best F-score of the foreground-restricted Rand index over the same
  thresholds: at each, the segments are the 4-connected regions where P(cell) exceeds it, the
  truth's cell pixels are scored, those left out are segments of their own, and the pairs are
  pooled over the slices (pixelwise.metrics.MaxFScoreRandError; no border thinning);
- membrane_iou: IoU of class 0, the membrane;
- adapted_rand_error: foreground-restricted adapted Rand error, the mean over slices of
  pixelwise.metrics.adapted_rand_error. Segments are the 4-connected regions of cell-interior
  pixels (class 1), labelled separately in the truth and in the prediction; only the truth's
  cell pixels are scored, and those the prediction calls membrane form one more segment;
- watershed_rand_error: the same error of the cells pixelwise.postprocess.watershed_cells grows
  from each system's cell probability (seeds where it exceeds 0.95, flooding 1 - P over every
  pixel), so a gap in a predicted membrane no longer joins two cells; every system alike;
- object_recall: per class and size (small < 32^2, medium < 96^2 pixels, large), the fraction
  of the truth's 4-connected components with at least half their pixels predicted as their
  class (for cells: how many cells are found).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _side_by_side import Task, add_common_arguments, parse_crop, run_all  # bench/ is on sys.path

REPO = Path(__file__).resolve().parents[1]
# How the recipe's model is scored: its 8 rotations and mirrors, each also enlarged 1.25x, the
# softmax averaged (docs/benchmarks.md, session 18: the label map's gaps and wrong pixels fewer
# on every model tried, the watershed cells mostly worse)
TTA_VIEWS, TTA_SCALES = "d4", (1.0, 1.25)


def isbi_scores(scores: dict) -> dict:
    return {"pixel_error": scores["pixel_error"],
            "challenge_pixel_error": scores["challenge_pixel_error"],
            "challenge_rand_error": scores["challenge_rand_error"],
            "membrane_iou": scores["iou"][0],
            "adapted_rand_error": scores["adapted_rand_error"],
            "watershed_rand_error": scores["watershed_rand_error"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, budget=600.0, crop="256", batch_size=4)
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "isbi2012"),
                        help="ISBI 2012 folder (default ../shared/data/isbi2012)")
    parser.add_argument("--eval-slices", default="25-29",
                        help="labelled slices to score (default %(default)s, never trained on)")
    args = parser.parse_args(argv)
    task = Task("isbi2012", str(REPO / "configs" / "isbi2012_cpu.yaml"), args.root, args.root,
                "val", parse_crop(args.crop), args.batch_size, vflip=0.5, scores=isbi_scores,
                eval_options={"slices": args.eval_slices}, tta=TTA_VIEWS, tta_scales=TTA_SCALES)
    run_all(task, args, default_out="runs/bench-isbi2012")
    return 0


if __name__ == "__main__":
    sys.exit(main())
