"""`pixelwise data check`: scan a dataset and report every problem with its file name.

`check_dataset` reads every image and mask once and collects: image count, image sizes and
channel counts, pixels per class (and how many were ignored), SegNet's median-frequency class
weights, and each problem found, with its file: a missing pair, an unreadable file, a wrong
channel count, an image/mask size mismatch, or mask values outside the classes and the ignore
index. `quick_check` is the cheap part that training runs first: pairs exist and the first few
samples read cleanly, else it raises `DataError` with the same message.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset
from tqdm import tqdm

from pixelwise.data import io
from pixelwise.data.datasets import FileDataset, open_dataset
from pixelwise.data.stats import median_frequency_weights
from pixelwise.errors import ConfigError, DataError


@dataclass(frozen=True)
class Problem:
    """One problem: its kind (e.g. "size mismatch"), the file concerned, and the explanation."""

    kind: str
    path: Path | None
    message: str


@dataclass
class DataReport:
    """What `check_dataset` found. `class_counts[c]`: pixels of class c over all masks;
    `image_pixels[c]`: pixels of the images that contain class c (SegNet's denominator)."""

    name: str
    class_names: list[str]
    ignore_index: int
    num_samples: int = 0
    sizes: Counter = field(default_factory=Counter)
    channels: Counter = field(default_factory=Counter)
    class_counts: list[int] = field(default_factory=list)
    image_pixels: list[int] = field(default_factory=list)
    ignored_pixels: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def class_weights(self) -> list[float]:
        """Median-frequency class weights (SegNet), 0 for classes with no pixel."""
        if not any(self.class_counts):
            return [0.0] * len(self.class_names)
        return median_frequency_weights(self.class_counts, np.maximum(self.image_pixels, 1))

    def format(self) -> str:
        """The report as printable text: counts, sizes, per-class table, then every problem."""
        lines = [f"Data check of {self.name}: {self.num_samples} image/mask pairs"]
        lines.append("  sizes (H x W): " + _counted(f"{h}x{w}" for (h, w) in self.sizes.elements()))
        lines.append("  channels: " + _counted(str(c) for c in self.channels.elements()))
        total = sum(self.class_counts) + self.ignored_pixels
        width = max(12, *(len(name) for name in self.class_names))
        lines.append(
            f"  {'class':<{width}}  {'pixels':>12}  {'share':>7}  {'median-freq weight':>18}"
        )
        for name, count, weight in zip(
            self.class_names, self.class_counts, self.class_weights, strict=True
        ):
            share = f"{100 * count / total:.2f}%" if total else "-"
            lines.append(f"  {name:<{width}}  {count:>12}  {share:>7}  {weight:>18.4f}")
        ignored = f"{100 * self.ignored_pixels / total:.2f}%" if total else "-"
        label = f"(ignore {self.ignore_index})"
        lines.append(f"  {label:<{width}}  {self.ignored_pixels:>12}  {ignored:>7}")
        if self.ok:
            lines.append("No problems found.")
        else:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  {p.kind}: {p.message}" for p in self.problems]
        return "\n".join(lines)


def _counted(values) -> str:
    counts = Counter(values)
    return ", ".join(f"{value} ({count})" for value, count in counts.most_common()) or "-"


def check_dataset(
    dataset_or_root: Dataset | str | Path,
    kind: str | None = None,
    split: str = "train",
    *,
    progress: bool = True,
    **options,
) -> DataReport:
    """Scan every sample of a dataset (or of `open_dataset(kind, root, split, **options)`).

    File datasets are opened with `strict=False` so that missing pairs become problems in the
    report instead of an exception. Other datasets (e.g. `SyntheticShapes`) are scanned
    through `__getitem__`.
    """
    if isinstance(dataset_or_root, Dataset):
        dataset, name = dataset_or_root, type(dataset_or_root).__name__
    else:
        if kind is None:
            raise DataError(f"kind must name the dataset layout of {dataset_or_root}, got None")
        if "strict" in options:
            raise ConfigError(
                f"options of a data check must not include strict (the check reports what "
                f"strict refuses), got strict={options['strict']!r}; try without it"
            )
        strict = {} if kind == "synthetic" else {"strict": False}
        dataset = open_dataset(kind, dataset_or_root, split, **strict, **options)
        name = f"{kind} '{split}'" + ("" if kind == "synthetic" else f" at {dataset_or_root}")
    info = dataset.info
    report = DataReport(
        name=name,
        class_names=list(info.classes),
        ignore_index=info.ignore_index,
        class_counts=[0] * info.num_classes,
        image_pixels=[0] * info.num_classes,
    )
    if isinstance(dataset, FileDataset):
        report.problems += [
            Problem("missing pair", path, f"{path}: no partner file (image or mask) of this name")
            for path in dataset.unpaired
        ]
    for index in tqdm(range(len(dataset)), desc="data check", unit="image", disable=not progress):
        mask = (
            _scan_file_sample(dataset, index, report)
            if isinstance(dataset, FileDataset)
            else _scan_item(dataset, index, report)
        )
        if mask is not None:
            _count_classes(mask, report)
    return report


def _scan_file_sample(dataset: FileDataset, index: int, report: DataReport) -> np.ndarray | None:
    """Check one file pair step by step, so each problem gets its own kind; the mask (class
    ids) when it is usable for counting, else None."""
    sample = dataset.samples[index]
    report.num_samples += 1
    image = mask = None
    try:
        raw = io.read_image(sample.image, sample.page, dataset.max_pixels)
    except DataError as error:
        report.problems.append(Problem("unreadable image", sample.image, str(error)))
    else:
        report.sizes[raw.shape[:2]] += 1
        report.channels[raw.shape[2]] += 1
        try:
            image = io.fit_channels(raw, dataset.info.in_channels, sample.image)
        except DataError as error:
            report.problems.append(Problem("wrong channel count", sample.image, str(error)))
    try:
        mask = dataset.read_mask(index)
    except DataError as error:
        report.problems.append(Problem("unreadable mask", sample.mask, str(error)))
        return None
    if image is not None and mask.shape != image.shape[:2]:
        report.problems.append(
            Problem(
                "size mismatch",
                sample.mask,
                f"{sample.mask}: mask size {mask.shape} must equal image size "
                f"{image.shape[:2]} ({sample.image})",
            )
        )
    bad = dataset.invalid_values(mask)
    if bad:
        message = str(dataset.label_error(sample, bad))
        report.problems.append(Problem("mask values", sample.mask, message))
        return None
    return mask


def _scan_item(dataset: Dataset, index: int, report: DataReport) -> np.ndarray | None:
    """Check one item of a dataset that is not made of files, through `__getitem__`."""
    report.num_samples += 1
    try:
        image, mask = dataset[index]
    except DataError as error:
        report.problems.append(Problem("unreadable item", None, f"item {index}: {error}"))
        return None
    report.sizes[tuple(image.shape[-2:])] += 1
    report.channels[image.shape[0]] += 1
    return mask.numpy()


def _count_classes(mask: np.ndarray, report: DataReport) -> None:
    labelled = mask[mask != report.ignore_index]
    counts = np.bincount(labelled.ravel(), minlength=len(report.class_counts))
    for class_id in np.flatnonzero(counts):
        report.class_counts[class_id] += int(counts[class_id])
        report.image_pixels[class_id] += int(mask.size)
    report.ignored_pixels += int(mask.size - labelled.size)


def quick_check(dataset: Dataset, samples: int = 3) -> None:
    """The cheap check training runs first: every image has its mask, every pair's headers
    are readable with equal sizes (nothing decoded: seconds for thousands of files), and the
    first `samples` pairs read cleanly with valid values; else `DataError` (the first problem,
    with its file name). Damage past the headers (a truncated file, a bad mask value) in later
    pairs shows when they are first read; `pixelwise data check` reads everything."""
    if isinstance(dataset, FileDataset) and dataset.unpaired:
        raise DataError(
            f"{dataset.unpaired[0]}: every image must have a mask of the same name, got "
            f"{len(dataset.unpaired)} file(s) without a partner; try `pixelwise data check`"
        )
    if isinstance(dataset, FileDataset):
        _check_headers(dataset)
    for index in range(min(samples, len(dataset))):
        dataset[index]  # raises DataError naming the file on any problem


def _check_headers(dataset: FileDataset) -> None:
    """Every pair's headers (no pixel decoded): readable, within the pixel limit, and the mask
    of the image's size; else `DataError` naming the first file at fault."""
    for sample in dataset.samples:
        size = io.read_size(sample.image, sample.page, dataset.max_pixels)
        if sample.mask is None:
            continue
        mask_size = io.read_size(sample.mask, sample.page, dataset.max_pixels)
        if mask_size != size:
            raise DataError(
                f"{sample.mask}: a mask must have its image's size {size} (H, W), got "
                f"{mask_size} (image {sample.image}); try re-exporting the mask at full size"
            )


def run_data_check(root: str | Path, kind: str, split: str = "train", **options) -> DataReport:
    """Print the data check report of `open_dataset(kind, root, split, **options)`; return it
    when no problem was found, else raise `DataError` counting the problems listed above it
    (`pixelwise data check` prints that as its one error line and exits with status 2)."""
    report = check_dataset(root, kind, split, **options)
    print(report.format())
    if not report.ok:
        raise DataError(
            f"the data check of {report.name} must find no problem, got "
            f"{len(report.problems)}; try fixing the files listed above"
        )
    return report
