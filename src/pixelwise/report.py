"""The evaluation report: one self-contained HTML file (``pixelwise evaluate ... --report``).

Sections: what was evaluated (checkpoint, model, data, split, TTA), the FCN metrics, per-class
IoU / Dice / accuracy, the row-normalised confusion matrix, object recall by size (when the
scores carry ``object_recall``) and a gallery of the images with the lowest IoU: each image, its
ground truth and prediction over it in class colours, and an error map, side by side, so a user
sees where the model fails. Images are PNGs embedded as base64 ``data:`` URLs; the file needs
nothing else, not even a network connection.

:class:`WorstImages` collects the gallery during evaluation (``validate(..., observe=...)``):
the mean IoU of every image (FCN definitions on that image alone, classes absent from both
prediction and ground truth left out) and the pixels of the lowest ``keep`` of them.
"""

from __future__ import annotations

import base64
import datetime
import heapq
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pixelwise.metrics import ConfusionMatrix
from pixelwise.outputs import color_overlay

Palette = Sequence[tuple[int, int, int]]
THUMBNAIL = 320  # longest side of a gallery image, pixels
WRONG, IGNORED = (235, 30, 40), (70, 90, 200)  # error-map colours


@dataclass(frozen=True)
class GalleryImage:
    """One gallery entry: dataset ``index``, its mean ``iou``, the ``image`` ``(H, W, 3)`` uint8
    as the model saw it (mean/std undone), ``target`` and ``prediction`` ``(H, W)`` int64."""

    index: int
    iou: float
    image: np.ndarray
    target: np.ndarray
    prediction: np.ndarray


class WorstImages:
    """An ``observe(images, predictions, targets)`` hook for ``validate`` that scores each image
    and keeps the ``keep`` with the lowest mean IoU (see the module docs).

    ``images`` come normalised ``(N, C, H, W)``; ``mean``/``std`` undo that for display.
    """

    def __init__(self, num_classes: int, ignore_index: int, mean: Sequence[float],
                 std: Sequence[float], keep: int = 8) -> None:
        self.num_classes, self.ignore_index, self.keep = num_classes, ignore_index, keep
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.per_image_iou: list[float] = []  # NaN for images with no labelled pixel
        self._heap: list[tuple[float, int, GalleryImage]] = []  # max-heap on IoU (negated)

    def __call__(self, images: torch.Tensor, predictions: torch.Tensor,
                 targets: torch.Tensor) -> None:
        for image, prediction, target in zip(images, predictions, targets, strict=True):
            iou = self._mean_iou(prediction, target)
            index = len(self.per_image_iou)
            self.per_image_iou.append(iou)
            if math.isnan(iou) or (len(self._heap) == self.keep and -self._heap[0][0] <= iou):
                continue
            entry = GalleryImage(index, iou, self._display(image, prediction.shape),
                                 target.cpu().numpy().astype(np.int64),
                                 prediction.cpu().numpy().astype(np.int64))
            heapq.heappush(self._heap, (-iou, -index, entry))
            if len(self._heap) > self.keep:
                heapq.heappop(self._heap)

    @property
    def worst(self) -> list[GalleryImage]:
        """The kept images, lowest IoU first (ties: dataset order)."""
        return sorted((entry for _, _, entry in self._heap), key=lambda e: (e.iou, e.index))

    def _mean_iou(self, prediction: torch.Tensor, target: torch.Tensor) -> float:
        matrix = ConfusionMatrix(self.num_classes, self.ignore_index)
        matrix.update(prediction, target)
        return matrix.compute()["mean_iou"]

    def _display(self, image: torch.Tensor, size: torch.Size) -> np.ndarray:
        """``(H, W, 3)`` uint8 of a normalised ``(C, H, W)`` image, cropped to the prediction's
        size (a valid U-Net predicts the centre)."""
        from pixelwise.models.layers import centre_crop

        pixels = centre_crop(image.float().cpu(), *size) * self.std + self.mean
        rgb = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        return np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb[..., :3]


def error_map(image: np.ndarray, target: np.ndarray, prediction: np.ndarray,
              ignore_index: int) -> np.ndarray:
    """``(H, W, 3)`` uint8: wrong pixels red, ignored ones blue, correct ones the image dimmed."""
    shown = (0.35 * image.astype(np.float32)).astype(np.uint8)
    ignored = target == ignore_index
    shown[(prediction != target) & ~ignored] = WRONG
    shown[ignored] = IGNORED
    return shown


def label_overlay(image: np.ndarray, label: np.ndarray, palette: Palette,
                  ignore_index: int) -> np.ndarray:
    """Class colours over the image (alpha 0.5); ``ignore_index`` pixels keep the image."""
    ignored = label == ignore_index
    shown = color_overlay(image, np.where(ignored, 0, label), palette)
    shown[ignored] = image[ignored]
    return shown


def png_data_url(rgb: np.ndarray, longest: int = THUMBNAIL) -> str:
    """A ``data:image/png;base64,...`` URL of an ``(H, W, 3)`` uint8 image, shrunk (box
    filter: a one-pixel error line stays visible, faint) to at most ``longest`` on a side."""
    picture = Image.fromarray(rgb)
    scale = longest / max(picture.size)
    if scale < 1:
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(size, Image.Resampling.BOX)
    buffer = io.BytesIO()
    picture.save(buffer, format="png", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def write_report(path: str | Path, scores: Mapping[str, Any], palette: Palette,
                 about: Mapping[str, Any], gallery: Sequence[GalleryImage] = (),
                 ignore_index: int = 255, image_names: Sequence[str] | None = None) -> Path:
    """Write the report of ``scores`` (``evaluate``'s dict: ``ConfusionMatrix.compute()`` plus
    ``classes``) to ``path``; ``about`` lists what was evaluated, ``gallery`` the worst images
    (:attr:`WorstImages.worst`), ``image_names`` names dataset indices. Returns the path."""
    classes = list(scores["classes"])
    sections = [
        _section("What was evaluated", _key_values(about)),
        _section("Metrics", _metrics_table(scores)),
        _section("Per-class IoU", _per_class_table(scores, classes, palette)),
        _section("Confusion matrix", _confusion_table(scores["matrix"], classes)),
    ]
    if scores.get("object_recall") is not None:
        sections.append(_section("Object recall by size", _nested_table(scores["object_recall"])))
    sections.append(_section("Lowest-IoU images", _gallery(
        gallery, classes, palette, ignore_index, image_names, scores.get("per_image_iou"))))
    from pixelwise.version import __version__

    created = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    page = PAGE.format(title=html.escape(f"pixelwise evaluation: {about.get('checkpoint', '')}"),
                       subtitle=html.escape(f"written {created} by pixelwise {__version__}"),
                       body="\n".join(sections))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def _section(title: str, body: str) -> str:
    anchor = title.lower().replace(" ", "-")
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>\n{body}\n</section>'


def _percent(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '<span class="absent">absent</span>'
    return f"{100 * float(value):.2f}"


def _key_values(about: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(str(value))}</td></tr>"
                   for key, value in about.items())
    return f'<table class="about">{rows}</table>'


def _metrics_table(scores: Mapping[str, Any]) -> str:
    names = {"pixel_accuracy": "pixel accuracy", "mean_accuracy": "mean accuracy",
             "mean_iou": "mean IoU", "fw_iou": "frequency-weighted IoU", "mean_dice": "mean Dice"}
    head = "".join(f"<th>{label}</th>" for label in names.values())
    cells = "".join(f'<td class="num">{_percent(scores[key])}</td>' for key in names)
    how = ("pooled over the dataset (one confusion matrix)" if scores.get("averaging") ==
           "pooled" else "averaged over images")
    return (f'<table class="metrics"><tr>{head}</tr><tr>{cells}</tr></table>'
            f"<p>In percent, {how}: {scores.get('num_images')} images, "
            f"{scores.get('num_pixels')} labelled pixels (FCN §5 definitions).</p>")


def _per_class_table(scores: Mapping[str, Any], classes: Sequence[str], palette: Palette) -> str:
    matrix = np.asarray(scores["matrix"], dtype=np.int64)
    rows = []
    for index, name in enumerate(classes):
        iou = scores["iou"][index]
        width = 0 if iou is None or math.isnan(iou) else round(200 * iou)
        rows.append(
            f"<tr><td>{_swatch(palette[index])} {html.escape(name)}</td>"
            f'<td class="num">{_percent(iou)}</td>'
            f'<td><span class="bar" style="width:{width}px"></span></td>'
            f'<td class="num">{_percent(scores["dice"][index])}</td>'
            f'<td class="num">{_percent(scores["accuracy"][index])}</td>'
            f'<td class="num">{matrix[index].sum()}</td><td class="num">{matrix[:, index].sum()}'
            "</td></tr>")
    return ('<table class="per-class"><tr><th>class</th><th>IoU</th><th></th><th>Dice</th>'
            "<th>accuracy</th><th>true pixels</th><th>predicted pixels</th></tr>"
            f"{''.join(rows)}</table>")


def _confusion_table(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    from pixelwise.plots import row_normalise

    counts = np.asarray(matrix, dtype=np.int64)
    fractions = row_normalise(counts)
    head = "".join(f'<th class="col">{html.escape(name)}</th>' for name in classes)
    rows = []
    for i, name in enumerate(classes):
        cells = "".join(
            f'<td class="cm" style="background:rgba(31,119,180,{fractions[i, j]:.3f});'
            f'color:{"#fff" if fractions[i, j] > 0.5 else "#000"}" title="{counts[i, j]} pixels">'
            f"{fractions[i, j]:.2f}</td>" for j in range(len(classes)))
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return ('<p>Rows: ground truth; columns: prediction; each row divided by its total (hover a '
            'cell for its pixel count).</p>'
            f'<table class="confusion"><tr><th></th>{head}</tr>{"".join(rows)}</table>')


def _nested_table(value: Any) -> str:
    """A table of a mapping of numbers, or of mappings of numbers (rows x columns)."""
    if not isinstance(value, Mapping):
        return f"<pre>{html.escape(str(value))}</pre>"
    if all(isinstance(row, Mapping) for row in value.values()):
        columns = list(dict.fromkeys(key for row in value.values() for key in row))
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        body = "".join(
            f"<tr><th>{html.escape(str(name))}</th>"
            + "".join(f'<td class="num">{_cell(row.get(c))}</td>' for c in columns) + "</tr>"
            for name, row in value.items())
        return f'<table class="recall"><tr><th></th>{head}</tr>{body}</table>'
    body = "".join(f'<tr><th>{html.escape(str(k))}</th><td class="num">{_cell(v)}</td></tr>'
                   for k, v in value.items())
    return f'<table class="recall">{body}</table>'


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return _percent(value)
    return html.escape("" if value is None else str(value))


def _gallery(gallery: Sequence[GalleryImage], classes: Sequence[str], palette: Palette,
             ignore_index: int, names: Sequence[str] | None,
             per_image: Sequence[float] | None) -> str:
    if not gallery:
        return "<p>No image was collected for the gallery.</p>"
    parts = [_per_image_summary(per_image),
             "<p>Each row: the image, the ground truth over it, the prediction over it, and the "
             "errors (red: wrong, blue: ignored pixels, dimmed image: correct).</p>",
             '<p class="legend">' + " ".join(f"{_swatch(palette[i])} {html.escape(name)}"
                                             for i, name in enumerate(classes)) + "</p>"]
    for entry in gallery:
        name = names[entry.index] if names is not None else f"image {entry.index}"
        panels = (entry.image, label_overlay(entry.image, entry.target, palette, ignore_index),
                  label_overlay(entry.image, entry.prediction, palette, ignore_index),
                  error_map(entry.image, entry.target, entry.prediction, ignore_index))
        figures = "".join(
            f'<figure><img src="{png_data_url(panel)}" alt="{title}"><figcaption>{title}'
            "</figcaption></figure>"
            for panel, title in zip(panels, ("image", "ground truth", "prediction", "errors"),
                                    strict=True))
        parts.append(f'<div class="sample"><h3>{html.escape(str(name))}: mean IoU '
                     f"{_percent(entry.iou)} %</h3>{figures}</div>")
    return "\n".join(parts)


def _per_image_summary(per_image: Sequence[float] | None) -> str:
    values = np.asarray([v for v in per_image or [] if v is not None and not math.isnan(v)])
    if not len(values):
        return ""
    low, median, high = np.percentile(values, [0, 50, 100])
    return (f"<p>Per-image mean IoU over {len(values)} images: lowest {100 * low:.1f} %, median "
            f"{100 * median:.1f} %, highest {100 * high:.1f} %.</p>")


def _swatch(colour: Sequence[int]) -> str:
    r, g, b = (int(c) for c in colour)
    return f'<span class="swatch" style="background:rgb({r},{g},{b})"></span>'


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }}
h1 {{ font-size: 20px; margin-bottom: 0; }} .subtitle {{ color: #666; margin-top: 4px; }}
h2 {{ font-size: 17px; border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 28px; }}
h3 {{ font-size: 14px; margin: 12px 0 4px; }}
table {{ border-collapse: collapse; }} th, td {{ padding: 3px 8px; text-align: left; }}
table.metrics td, table.metrics th, table.per-class td {{ border-bottom: 1px solid #eee; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.bar {{ display: inline-block; height: 10px; background: #1f77b4; }}
.swatch {{ display: inline-block; width: 12px; height: 12px; border: 1px solid #0003;
          vertical-align: middle; }}
.absent {{ color: #999; }} td.cm {{ text-align: center; min-width: 36px; font-size: 12px; }}
th.col {{ writing-mode: vertical-rl; transform: rotate(180deg); font-weight: normal; }}
.sample {{ display: grid; grid-template-columns: repeat(4, minmax(0, 320px)); gap: 8px; }}
.sample h3 {{ grid-column: 1 / -1; }} figure {{ margin: 0; }}
figure img {{ display: block; width: 100%; image-rendering: pixelated; }}
figcaption {{ color: #555; font-size: 12px; }}
</style></head>
<body><h1>{title}</h1><p class="subtitle">{subtitle}</p>
{body}
</body></html>
"""
