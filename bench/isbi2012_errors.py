"""Where an ISBI 2012 model's wrong pixels lie: on the truth's membrane edges, or away from them.

    python bench/isbi2012_errors.py runs/bench-isbi2012/pixelwise/last.safetensors

Predicts slices 25-29 (the benchmark's evaluation slices) with the test-time augmentation
bench/isbi2012.py scores pixelwise with (its TTA_VIEWS and TTA_SCALES: the 8 rotations and
mirrors, each also at 1.25x), and prints:
- the plain pixel error (wrong pixels / all pixels, pooled) when P(cell) is cut at thresholds
  0.3 ... 0.7 instead of the label map's 0.5: whether a bias of the probabilities explains it;
  beside it the Rand error of the cut's 4-connected cell components (the benchmark's
  adapted_rand_error, mean over slices): whether another cut closes the gaps that join cells;
- how far each wrong pixel is from the truth's membrane/cell edge (Euclidean distance, pixel
  centre to the nearest pixel of the other class: 1 is a pixel on the edge), as the share of
  the wrong pixels within 1, 2 and 3 px, and the pixel error left when a band of that width on
  both sides of every edge is not scored;
- the pixel error of the truth against itself with every cell grown, or shrunk, by one pixel
  (4-connected; the image border is not an edge): what an annotator who draws every membrane
  one pixel wider or narrower than this one would score, the scale of the plain pixel error's
  floor.
The labels' membranes are drawn by hand a few pixels wide, so where a model puts an edge one
pixel off its annotator's is the floor of the plain pixel error. Run it alone (it takes a
minute on 2 cores).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _side_by_side import tta_label  # bench/ is on sys.path
from isbi2012 import TTA_SCALES, TTA_VIEWS
from scipy import ndimage

from pixelwise.data import open_dataset
from pixelwise.inference.predict import Segmenter
from pixelwise.inference.tta import tta_views
from pixelwise.metrics import adapted_rand_error

REPO = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)
BANDS = (1, 2, 3)


def edge_distance(cells: np.ndarray) -> np.ndarray:
    """Distance `(H, W)` of every pixel to the nearest pixel of the other class."""
    return np.where(cells, ndimage.distance_transform_edt(cells),
                    ndimage.distance_transform_edt(~cells))


def predict_slices(checkpoint: Path, root: Path, slices: str) -> tuple[np.ndarray, np.ndarray]:
    """P(cell) `(N, H, W)` of the slices with the benchmark's TTA, and their truth's cell masks."""
    segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu", tta_flips=tta_views(TTA_VIEWS),
                                          tta_scales=TTA_SCALES)
    data = open_dataset("isbi2012", root, "val", slices=slices)
    cell = data.info.classes.index("cell")
    proba = [segmenter.predict_proba(data.read_image(i))[cell] for i in range(len(data))]
    truth = [data.read_mask(i) == cell for i in range(len(data))]
    return np.stack(proba), np.stack(truth)


def edges_moved_one_pixel(truth: np.ndarray) -> dict[str, float]:
    """Pixel error of the cell masks ``truth`` `(N, H, W)` against themselves, cells grown or shrunk by 1 px."""
    cross = ndimage.generate_binary_structure(2, 1)[None]  # 4-neighbours in each slice alone
    grown = ndimage.binary_dilation(truth, cross)
    shrunk = ndimage.binary_erosion(truth, cross, border_value=1)
    return {"cells grown 1 px": float(np.mean(grown != truth)),
            "cells shrunk 1 px": float(np.mean(shrunk != truth))}


def components_rand(cells: np.ndarray, truth: np.ndarray) -> float:
    """The mean over slices of the Rand error of the 4-connected components of ``cells``."""
    return float(np.mean([adapted_rand_error(guess.astype(np.uint8), true.astype(np.uint8))
                          for guess, true in zip(cells, truth, strict=True)]))


def report(proba: np.ndarray, truth: np.ndarray) -> list[str]:
    """The lines the script prints (see the module docstring)."""
    lines = ["| P(cell) threshold | pixel error | Rand error of the components |", "|---|---|---|"]
    lines += [f"| {t} | {np.mean((proba > t) != truth):.4f} | {components_rand(proba > t, truth):.4f} |"
              for t in THRESHOLDS]
    wrong = (proba > 0.5) != truth
    distance = np.stack([edge_distance(cells) for cells in truth])
    lines += ["", "| band around the truth's edges | share of the wrong pixels in it | "
              "pixel error outside it |", "|---|---|---|"]
    for band in BANDS:
        near = distance <= band
        lines.append(f"| {band} px | {(wrong & near).sum() / max(wrong.sum(), 1):.3f} | "
                     f"{(wrong & ~near).sum() / (~near).sum():.4f} |")
    lines += ["", "| the truth against itself | pixel error |", "|---|---|"]
    lines += [f"| {name} | {error:.4f} |" for name, error in edges_moved_one_pixel(truth).items()]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a pixelwise ISBI 2012 checkpoint")
    parser.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "isbi2012")
    parser.add_argument("--slices", default="25-29", help="the train slices to score")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    proba, truth = predict_slices(args.checkpoint, args.root, args.slices)
    print(f"{args.checkpoint}: slices {args.slices}, TTA {tta_label(TTA_VIEWS, TTA_SCALES)}; "
          "pooled pixel error "
          f"{np.mean((proba > 0.5) != truth):.4f}")
    print("\n".join(report(proba, truth)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
