"""The watershed cells' seed threshold: Rand error of one checkpoint's cells per threshold.

    python bench/watershed_seeds.py runs/isbi2012_cpu/last.safetensors --slices 0-24
    python bench/watershed_seeds.py CKPT --root ../shared/data/isbi2012 --slices 15-24 \
        --thresholds 0.9 0.95 0.97 --tta d4 --tta-scales 1

For each slice of --slices (ISBI 2012 labelled slices; choose the threshold on training slices,
never on the slices you score), the checkpoint's cell probability (averaged over the 8 rotations
and mirrors, each also at 1.25x, by default: the views and scales bench/isbi2012.py scores
pixelwise with, its TTA_VIEWS and TTA_SCALES; --tta and --tta-scales change them), then for each
threshold `pixelwise.postprocess.watershed_cells(p, threshold)` and its
`pixelwise.metrics.segment_rand_error`; the mean over the slices is printed per threshold, with
the label map's own `adapted_rand_error` (components of p > 0.5) for reference, and the best.
Accuracy only: the load of the machine does not change the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from _side_by_side import tta_label  # bench/ is on sys.path
from isbi2012 import TTA_SCALES, TTA_VIEWS

from pixelwise.data import open_dataset
from pixelwise.inference.predict import Segmenter
from pixelwise.inference.tta import tta_views
from pixelwise.metrics import adapted_rand_error, segment_rand_error
from pixelwise.postprocess import watershed_cells

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a two-class .safetensors checkpoint (cell = class 1)")
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "isbi2012"))
    parser.add_argument("--slices", default="0-24", help="labelled slices (default %(default)s)")
    parser.add_argument("--thresholds", type=float, nargs="+",
                        default=[0.8, 0.9, 0.95, 0.97, 0.98, 0.99])
    parser.add_argument("--tta", choices=["none", "h", "d4"], default=TTA_VIEWS)
    parser.add_argument("--tta-scales", type=float, nargs="+", default=list(TTA_SCALES),
                        metavar="S", help="input scales each view also runs at")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    views = tta_views(False if args.tta == "none" else args.tta)
    segmenter = Segmenter.from_checkpoint(args.checkpoint, device="cpu", tta_flips=views,
                                          tta_scales=tuple(args.tta_scales))
    data = open_dataset("isbi2012", args.root, "val", slices=args.slices)
    pairs = [(segmenter.predict_proba(data.read_image(i)[..., 0])[1], data.read_mask(i))
             for i in range(len(data))]
    components = float(np.nanmean([adapted_rand_error((p > 0.5).astype(np.int64), mask)
                                   for p, mask in pairs]))
    rows = {t: float(np.nanmean([segment_rand_error(watershed_cells(p, t), mask)
                                 for p, mask in pairs])) for t in args.thresholds}
    print(f"{args.checkpoint}, slices {args.slices} ({len(pairs)}), "
          f"TTA {tta_label(args.tta, tuple(args.tta_scales))}")
    print(f"label map components (p > 0.5): adapted Rand error {components:.4f}")
    for threshold, error in rows.items():
        print(f"watershed seeds p > {threshold}: adapted Rand error {error:.4f}")
    best = min(rows, key=rows.get)
    print(json.dumps({"checkpoint": args.checkpoint, "slices": args.slices, "tta": args.tta,
                      "tta_scales": args.tta_scales,
                      "components": components, "watershed": rows, "best": best}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
