"""Label maps: which values are class ids, the dtype a predicted label map is stored in, and
the fast way to take one from class scores (`class_ids`).

A label map holds class ids `0..K-1` and, where a pixel is unlabelled, the ignore index. Masks
read from files (`pixelwise.data`), loss targets and metric targets are all checked by
`invalid_labels` / `check_labels`, so a bad value gets the same message wherever it is found.
Kept free of the data package so that losses and metrics can import it cheaply.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pixelwise.errors import DataError

Labels = np.ndarray | torch.Tensor


def class_ids(scores: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The label map of class scores: the index of the largest score along `dim` (the class
    axis: 1 for `(N, K, H, W)`, 0 for `(K, H, W)`), the first one on a tie, as `argmax`.

    `scores.max(dim).indices` rather than `scores.argmax(dim)`: on the CPU (torch 2.14)
    argmax over the class axis of a contiguous `(1, 11, 360, 480)` tensor took 39 ms, the
    max 4 ms, for the same indices (docs/benchmarks.md): in a 30 fps budget, the difference.
    """
    return scores.max(dim).indices


def invalid_labels(labels: Labels, num_classes: int, ignore_index: int) -> list[int]:
    """The distinct values of `labels` (any shape) that are neither a class id
    `0..num_classes-1` nor `ignore_index`, sorted; `[]` when every value is valid."""
    bad = ((labels < 0) | (labels >= num_classes)) & (labels != ignore_index)
    if not bad.any():
        return []
    values = labels[bad].unique() if isinstance(labels, torch.Tensor) else np.unique(labels[bad])
    return sorted(int(value) for value in values.tolist())


def label_error(where: str, bad: Sequence[int], num_classes: int, ignore_index: int) -> DataError:
    """The one message for label values `bad` found in `where` (e.g. "a.png: mask", "target")."""
    return DataError(
        f"{where} values must be class ids 0..{num_classes - 1} or the ignore index "
        f"{ignore_index}, got {list(bad)[:10]}; try `pixelwise data check` (a colour-coded "
        "mask needs a colour_map)"
    )


def check_labels(labels: Labels, num_classes: int, ignore_index: int, where: str = "target") -> None:
    """Raise `DataError` (`label_error`) unless every value of `labels` is a class id or
    `ignore_index`."""
    bad = invalid_labels(labels, num_classes, ignore_index)
    if bad:
        raise label_error(where, bad, num_classes, ignore_index)


def label_dtype(num_classes: int) -> type[np.integer]:
    """The dtype of a predicted label map: uint8 for up to 256 classes, else int16 (files an
    eighth of int64's size)."""
    return np.uint8 if num_classes <= 256 else np.int16
