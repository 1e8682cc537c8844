"""Figures written by ``evaluate`` and the demo: confusion matrix, per-class IoU, training curves,
and a grid of image / ground truth / prediction.

matplotlib's Agg backend draws to files only, so these work on machines without a display.
Each function writes one PNG and returns its path.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from pixelwise.checkpoint import atomic_write_bytes  # noqa: E402


def confusion_matrix_png(matrix: Sequence[Sequence[int]], classes: Sequence[str],
                         path: str | Path, subtitle: str = "") -> Path:
    """Heatmap of the row-normalised confusion matrix (rows: ground truth, columns: prediction).

    Each row is divided by its total so a cell reads "fraction of class i predicted as j";
    rows of absent classes stay 0. ``subtitle`` (e.g. what was evaluated) goes under the title.
    """
    normalised = row_normalise(matrix)
    size = max(4.0, 0.5 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    if len(classes) <= 12:
        for i, j in np.ndindex(normalised.shape):
            colour = "white" if normalised[i, j] > 0.5 else "black"
            ax.text(j, i, f"{normalised[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color=colour)
    fig.colorbar(image, ax=ax, label="fraction of ground-truth row")
    ax.set_title(_titled("Confusion matrix (row-normalised)", subtitle), fontsize=10)
    return _save(fig, path)


def row_normalise(matrix: Sequence[Sequence[int]]) -> np.ndarray:
    """Each row divided by its sum (rows summing to 0 stay 0): ``(K, K)`` float64."""
    counts = np.asarray(matrix, dtype=np.float64)
    totals = counts.sum(1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def per_class_iou_png(iou: Sequence[float], classes: Sequence[str], path: str | Path,
                      subtitle: str = "") -> Path:
    """Bar chart of IoU per class; classes with undefined IoU (NaN) are labelled "absent"."""
    values = [0.0 if math.isnan(v) else v for v in iou]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(classes) + 2), 3.5))
    bars = ax.bar(range(len(classes)), values, color="tab:blue")
    for bar, value in zip(bars, iou, strict=True):
        label = "absent" if math.isnan(value) else f"{value:.2f}"
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), label, ha="center",
                va="bottom", fontsize=8)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("IoU")
    ax.set_title(_titled("Per-class IoU", subtitle), fontsize=10)
    return _save(fig, path)


def training_curves_png(metrics_csv: str | Path, path: str | Path) -> Path:
    """Training loss and validation mean IoU per epoch, read from a run's ``metrics.csv``
    (epochs are whole numbers on the axis)."""
    with open(metrics_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    epochs = [int(row["epoch"]) for row in rows]
    loss = [float(row["train_loss"]) for row in rows]
    validated = [(int(row["epoch"]), float(row["mean_iou"])) for row in rows if row.get("mean_iou")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, loss, marker="o")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss")
    left.set_title("Training loss")
    if validated:
        right.plot(*zip(*validated, strict=True), marker="o", color="tab:green")
    right.set_xlabel("epoch")
    right.set_ylabel("mean IoU")
    right.set_ylim(0, 1)
    right.set_title("Validation mean IoU")
    for axis in (left, right):
        axis.set_xticks(epoch_ticks(epochs))
        axis.set_xlim(min(epochs, default=1) - 0.5, max(epochs, default=1) + 0.5)
    # Fixed margins, not tight_layout: this figure is redrawn at every validation, and measuring
    # the labels took half of its 0.33 s here.
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.14, top=0.9, wspace=0.3)
    return _save(fig, path, tight=False)


def epoch_ticks(epochs: Sequence[int]) -> list[int]:
    """Whole epochs for an axis: every one up to ten, then every k-th (at most about ten)."""
    if not epochs:
        return [1]
    first, last = min(epochs), max(epochs)
    step = math.ceil((last - first + 1) / 10)
    return list(range(first, last + 1, step))


def prediction_grid_png(images: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                        predictions: Sequence[np.ndarray], palette: Sequence[Sequence[int]],
                        classes: Sequence[str], path: str | Path,
                        ignore_index: int | None = None) -> Path:
    """One row per sample: the image, its ground truth and the prediction, in class colours.

    ``images`` are ``(H, W, 3)`` or ``(H, W)`` uint8; ``targets`` and ``predictions`` ``(H, W)``
    class ids (``ignore_index`` pixels of the ground truth drawn black). A legend names the
    classes by colour.
    """
    from matplotlib.patches import Patch

    from pixelwise.outputs import colorize

    def coloured(label: np.ndarray) -> np.ndarray:
        label = np.asarray(label).astype(np.int64)
        ignored = (label == ignore_index) if ignore_index is not None else label < 0
        rgb = colorize(np.where(ignored, 0, label), palette)
        rgb[ignored] = 0
        return rgb

    rows = len(images)
    fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.4 * rows + 0.6), squeeze=False)
    for row, (image, target, prediction) in enumerate(zip(images, targets, predictions,
                                                          strict=True)):
        panels = (image, coloured(target), coloured(prediction))
        for column, (panel, title) in enumerate(zip(panels, ("image", "ground truth",
                                                             "prediction"), strict=True)):
            axis = axes[row, column]
            axis.imshow(panel, cmap="gray" if np.ndim(panel) == 2 else None,
                        interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title)
    handles = [Patch(color=np.asarray(palette[i]) / 255, label=name)
               for i, name in enumerate(classes)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(classes), 6), frameon=False)
    return _save(fig, path, rect=(0, 0.6 / (2.4 * rows + 0.6), 1, 1))  # room for the legend


def _titled(title: str, subtitle: str) -> str:
    return f"{title}\n{subtitle}" if subtitle else title


def _save(fig, path: str | Path, rect: tuple[float, float, float, float] = (0, 0, 1, 1),
          tight: bool = True) -> Path:
    """Write ``fig`` as PNG atomically: a reader (a browser refreshing the training curves of a
    running job) sees the old figure or the new one, never half a file. ``tight``: fit the
    layout to the labels within ``rect`` first."""
    path = Path(path)
    if tight:
        fig.tight_layout(rect=rect)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path
