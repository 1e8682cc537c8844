"""Datasets on disk, one class per layout, all returning `(image, mask)` pairs.

`image` is float32 `(C, H, W)` scaled to about [0, 1] (see `io.image_to_tensor`), `mask` int64
`(H, W)` of class ids with `info.ignore_index` where unlabelled. Every dataset has `.info`
(`DatasetInfo`), `.samples` (the file pairs, in order) and takes `transforms`, a callable
`(image, mask) -> (image, mask)` applied last. Mask files are decoded by one value map per
layout (e.g. CamVid's 11 -> ignore, Cityscapes' label ids -> train ids); a value the map does
not know and that is neither a class nor the ignore index raises `DataError` naming the file.

With `strict=False` a dataset keeps the images and masks that have no partner in `.unpaired`
instead of raising; `pixelwise.data.checks` uses this to report every problem at once.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pixelwise.data import io, tables
from pixelwise.data.info import DatasetInfo
from pixelwise.data.palette import default_palette
from pixelwise.data.synthetic import SyntheticShapes
from pixelwise.data.transforms import rescale_pair
from pixelwise.errors import ConfigError, DataError
from pixelwise.labels import invalid_labels, label_error
from pixelwise.options import (
    PYTHON,
    Spelling,
    check_int,
    check_options,
    closest_hint,
    is_integer,
    signature_options,
)

logger = logging.getLogger(__name__)

Transforms = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Sample:
    """One image file and its mask file; `page` picks a slice of multi-page TIFF stacks.

    `mask` is None for splits without public labels (the mask is then all `ignore_index`).
    """

    image: Path
    mask: Path | None
    page: int | None = None


class FileDataset(Dataset):
    """Shared loading for datasets of image/mask files, one subclass per layout.

    A published layout (VOC, CamVid, ISBI 2012, Cityscapes) says what its masks mean, in `info`
    and `value_map` (raw mask value -> class id or ignore index, from `tables`), and where its
    files are, in `find_samples`; this constructor, the reading and the checks are shared.
    `FolderDataset` has a constructor of its own (two folders and the classes) around the same
    `_take_samples`.
    """

    info: DatasetInfo
    value_map: Mapping[int, int] = {}
    colour_map: Mapping[tuple[int, int, int], int] | None = None
    band_range: list[tuple[float, float]] | None = None
    scale: float = 1.0  # resample each pair by this factor when read, before `transforms`
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None  # see keep_in_memory

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        transforms: Transforms | None = None,
        max_pixels: int = io.MAX_PIXELS,
        strict: bool = True,
    ) -> None:
        self.root, self.split = Path(root), split
        self._take_samples(*self.find_samples(), transforms, max_pixels, strict)

    def find_samples(self) -> tuple[list[Sample], list[Path]]:
        """The layout's pairs under `self.root` for `self.split`, in order, and the files found
        without a partner."""
        raise NotImplementedError

    def _take_samples(
        self,
        samples: list[Sample],
        unpaired: list[Path],
        transforms: Transforms | None,
        max_pixels: int,
        strict: bool,
    ) -> None:
        """Keep the samples; with `strict`, refuse files without a partner and an empty set."""
        check_int("max_pixels", max_pixels, minimum=1)
        self.samples, self.unpaired = samples, sorted(unpaired)
        self.transforms, self.max_pixels = transforms, max_pixels
        if strict and self.unpaired:
            shown = ", ".join(str(path) for path in self.unpaired[:5])
            raise DataError(
                f"every image must have a mask with the same name and every mask an image, got "
                f"{len(self.unpaired)} without a partner: {shown}"
                f"{' ...' if len(self.unpaired) > 5 else ''}; try `pixelwise data check`"
            )
        if strict and not samples:
            raise DataError(
                "a dataset must contain at least one image/mask pair, got none; check the root "
                "folder and split (see docs/datasets.md for each layout)"
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_t, mask_t = self.read_pair(index)
        if self.transforms is not None:
            image_t, mask_t = self.transforms(image_t, mask_t)
        return image_t, mask_t

    def keep_in_memory(self) -> None:
        """Read every pair now and keep it as `read_pair` makes it, so that no epoch decodes,
        checks or resamples the files again (on 180x240 CamVid with the CPU recipe's
        augmentation an item took 8.4 ms from memory against 24.4 ms from the files:
        `bench/data_loading.py`). Costs 4 bytes per image value and 2 per mask pixel; read
        before a DataLoader starts its workers, the pairs are shared with them (fork: pages
        are copied only when written, and none are). `transforms` still run on every read,
        so augmentation is drawn anew each time."""
        if self.cache is None:
            self.cache = {}
        for index in range(len(self)):
            if index not in self.cache:
                image_t, mask_t = self._load_pair(index)
                self.cache[index] = (image_t, _compact_mask(mask_t))

    def read_pair(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pair `index` before `transforms`: image float32 `(C, H, W)`, mask int64 `(H, W)`,
        checked and resampled by `scale`; from memory after `keep_in_memory` (new tensors each
        call, so a transform that writes into its input cannot change what is kept)."""
        if self.cache is None:
            return self._load_pair(index)
        image_t, mask_t = self.cache[index]
        return image_t.clone(), mask_t.to(torch.int64, copy=True)

    def _load_pair(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        image = self.read_image(index)
        mask = self.read_mask(index)
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"{sample.mask}: a mask must have its image's size {image.shape[:2]} (H, W), got "
                f"{mask.shape} (image {sample.image}); try re-exporting the mask at full size"
            )
        bad = self.invalid_values(mask)
        if bad:
            raise self.label_error(sample, bad)
        image_t = io.image_to_tensor(image, self.band_range)
        mask_t = torch.from_numpy(mask)
        if self.scale != 1.0:
            image_t, mask_t = rescale_pair(image_t, mask_t, self.scale)
        return image_t, mask_t

    def read_image(self, index: int) -> np.ndarray:
        """Pixels `(H, W, C)` of sample `index` with `C = info.in_channels` (`io.fit_channels`)."""
        sample = self.samples[index]
        image = io.read_image(sample.image, sample.page, self.max_pixels)
        return io.fit_channels(image, self.info.in_channels, sample.image)

    def read_mask(self, index: int) -> np.ndarray:
        """Class ids `(H, W)` int64 of sample `index` after the layout's value map."""
        sample = self.samples[index]
        if sample.mask is None:
            height, width = io.read_image(sample.image, sample.page, self.max_pixels).shape[:2]
            return np.full((height, width), self.info.ignore_index, dtype=np.int64)
        raw = io.read_mask(sample.mask, sample.page, self.colour_map, self.max_pixels)
        return self.map_values(raw, sample.mask)

    def map_values(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Apply the layout's value map (raw file value -> class id or ignore index).

        The map is exhaustive: a raw value `v` it does not name becomes `-1 - v`, never a valid
        class, and `invalid_values` reports it as `v`. Without a map the raw values are kept.
        """
        mask = raw.astype(np.int64)
        if not self.value_map:
            return mask
        if mask.min() < 0:
            raise DataError(
                f"{path}: mask values must be non-negative, got {int(mask.min())}; try "
                "`pixelwise data check`"
            )
        table = -1 - np.arange(max(int(mask.max()), *self.value_map) + 1)
        table[list(self.value_map)] = list(self.value_map.values())
        return table[mask]

    def invalid_values(self, mask: np.ndarray) -> list[int]:
        """Values of the mask file that are neither a class id nor the ignore index, sorted."""
        values = invalid_labels(mask, self.info.num_classes, self.info.ignore_index)
        return sorted(-1 - v if self.value_map and v < 0 else v for v in values)

    def label_error(self, sample: Sample, bad: list[int]) -> DataError:
        """The error for the `invalid_values` `bad` of `sample`'s mask file."""
        return label_error(f"{sample.mask}: mask", bad, self.info.num_classes, self.info.ignore_index)


def _compact_mask(mask: torch.Tensor) -> torch.Tensor:
    """`mask` as int16 when its values fit (class ids, the ignore index), else unchanged."""
    info = torch.iinfo(torch.int16)
    if mask.numel() and info.min <= int(mask.min()) and int(mask.max()) <= info.max:
        return mask.to(torch.int16)
    return mask


def pair_by_stem(
    image_dir: Path, mask_dir: Path, mask_stem: Callable[[str], str] = lambda stem: stem
) -> tuple[list[Sample], list[Path]]:
    """Pairs of files with the same stem (after `mask_stem`), and the files left without one.

    Images may be PNG, JPEG, TIFF or BMP; masks PNG, TIFF or BMP, and JPEG masks are paired
    too so that reading them can refuse them with a clear message.
    """
    images = _files_by_stem(image_dir, io.IMAGE_SUFFIXES)
    masks = _files_by_stem(mask_dir, io.IMAGE_SUFFIXES)
    by_image_stem = {mask_stem(stem): path for stem, path in masks.items()}
    samples = [
        Sample(path, by_image_stem[stem]) for stem, path in images.items() if stem in by_image_stem
    ]
    paired_masks = {sample.mask for sample in samples}
    unpaired = [path for stem, path in images.items() if stem not in by_image_stem]
    unpaired += [path for path in masks.values() if path not in paired_masks]
    return samples, unpaired


def _files_by_stem(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    if not Path(folder).is_dir():
        raise DataError(
            f"{folder}: the folder must exist, got nothing there; check the dataset root and "
            "split (see docs/datasets.md for each layout)"
        )
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in suffixes)
    by_stem = {path.stem: path for path in files}
    if len(by_stem) < len(files):
        stems = Counter(path.stem for path in files)
        twins = [path.name for path in files if stems[path.stem] > 1]
        raise DataError(
            f"{folder}: file names must differ by more than their suffix, got {twins[:6]}; "
            "try keeping one file per image"
        )
    return by_stem


class FolderDataset(FileDataset):
    """Images and masks in two folders, paired by file stem (`a.jpg` with `a.png`).

    `classes`: class names, or their number (named `class_0`, ...). Masks are index PNGs,
    palette PNGs (pixel values are the class ids), 16-bit PNG/TIFF, or RGB colour-coded with
    `colour_map = {(r, g, b): class_id}` (or its YAML forms, a list of `{colour: [r, g, b],
    class: id}` or `{"#rrggbb": id}`: `io.colour_map_from`). With two classes, a mask holding only 0 and 255 is
    read as binary (255 -> class 1), and one log line says so; `binary_masks=False` keeps
    255 as the ignore value instead. Images may be grey, RGB, or multi-band / 16-bit TIFF
    (`in_channels` is taken from the first image; `band_range` fixes the 16-bit scaling).
    A class named "background" is the background of the instance outputs (`DatasetInfo`).
    """

    def __init__(
        self,
        images: str | Path,
        masks: str | Path,
        classes: Sequence[str] | int,
        *,
        palette: Sequence[tuple[int, int, int]] | None = None,
        colour_map: Mapping | list | None = None,
        ignore_index: int = 255,
        binary_masks: bool = True,
        band_range: list[tuple[float, float]] | None = None,
        transforms: Transforms | None = None,
        max_pixels: int = io.MAX_PIXELS,
        strict: bool = True,
    ) -> None:
        names = _class_names(classes)
        self.colour_map, self.band_range = io.colour_map_from(colour_map), band_range
        samples, unpaired = pair_by_stem(Path(images), Path(masks))
        if strict and not samples and not unpaired:
            raise DataError(
                f"{images}: the folder must hold images ({', '.join(io.IMAGE_SUFFIXES)}) with "
                f"masks of the same name in {masks}, got none; check the root folder and split"
            )
        jpeg_masks = [s.mask for s in samples if s.mask.suffix.lower() in (".jpg", ".jpeg")]
        if strict and jpeg_masks:
            io.read_mask(jpeg_masks[0])  # raises the DataError that explains the refusal
        self._take_samples(samples, unpaired, transforms, max_pixels, strict)
        self.info = DatasetInfo(
            classes=names,
            palette=list(palette) if palette else default_palette(len(names)),
            ignore_index=ignore_index,
            in_channels=_first_band_count(samples, max_pixels) if samples else 3,
        )
        self.binary_masks = binary_masks and len(names) == 2
        self._told_binary = False

    def map_values(self, raw: np.ndarray, path: Path) -> np.ndarray:
        mask = super().map_values(raw, path)
        if self.binary_masks and mask.max() == 255 and np.isin(mask, (0, 255)).all():
            if not self._told_binary:
                logger.info("%s: binary masks stored as 0/255, reading 255 as class 1", path.parent)
                self._told_binary = True
            mask = (mask == 255).astype(np.int64)
        return mask


def _class_names(classes: Sequence[str] | int) -> list[str]:
    """A folder dataset's class names: the names given, or `class_0, class_1, ...` for a count."""
    if is_integer(classes):
        check_int("classes", classes, minimum=1)
        return [f"class_{i}" for i in range(classes)]
    if isinstance(classes, str) or not isinstance(classes, Sequence) or not classes:
        raise ConfigError(
            f"classes must be the number of classes or their names, got {classes!r}; try "
            "classes=3 or classes=[background, road, car]"
        )
    return list(classes)


def _first_band_count(samples: list[Sample], max_pixels: int) -> int:
    """Channel count of the first readable image (3 when none can be read)."""
    for sample in samples:
        try:
            return io.read_image(sample.image, sample.page, max_pixels).shape[2]
        except DataError:
            continue
    return 3


class VOCSegmentation(FileDataset):
    """Pascal VOC 2012 (`root` = the `VOC2012` folder or the `VOCdevkit` above it).

    Layout: `JPEGImages/*.jpg`, `SegmentationClass/*.png` (palette PNGs whose values are the
    class ids, 255 on object borders = ignore), `ImageSets/Segmentation/{split}.txt`.
    21 classes (FCN §4.1's PASCAL VOC setting).
    """

    info = tables.VOC_INFO

    def find_samples(self) -> tuple[list[Sample], list[Path]]:
        root = self.root / "VOC2012" if (self.root / "VOC2012").is_dir() else self.root
        names = _read_split_list(root / "ImageSets" / "Segmentation" / f"{self.split}.txt")
        return _existing([
            Sample(root / "JPEGImages" / f"{name}.jpg", root / "SegmentationClass" / f"{name}.png")
            for name in names
        ])


def _read_split_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(
            f"{path}: the split list must exist, got no such file; try split='train' or 'val' "
            "and a root that holds ImageSets/Segmentation"
        )
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _existing(pairs: list[Sample]) -> tuple[list[Sample], list[Path]]:
    """The pairs whose files all exist, and the existing files whose partner is missing."""
    samples = [s for s in pairs if s.image.is_file() and (s.mask is None or s.mask.is_file())]
    unpaired = [
        path for s in pairs if s not in samples for path in (s.image, s.mask) if path is not None
    ]
    return samples, unpaired


class CamVid(FileDataset):
    """CamVid in the SegNet layout: `{split}/` RGB PNGs, `{split}annot/` 8-bit masks.

    11 classes (ids 0..10); value 11 (void / unlabelled) is mapped to the ignore index 255.
    Splits `train`, `val`, `test` (367 / 101 / 233 images at 360x480). `scale` resamples every
    image (bilinear, antialiased) and mask (nearest) when read: 0.5 gives the 180x240 half
    resolution of the CPU recipe `configs/camvid_cpu.yaml`.
    """

    info, value_map = tables.CAMVID_INFO, tables.CAMVID_VALUES

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        scale: float = 1.0,
        transforms: Transforms | None = None,
        max_pixels: int = io.MAX_PIXELS,
        strict: bool = True,
    ) -> None:
        if not (isinstance(scale, int | float) and scale > 0):
            raise ConfigError(f"scale must be a positive factor, got {scale!r}; try scale=0.5")
        self.scale = float(scale)
        super().__init__(root, split, transforms=transforms, max_pixels=max_pixels, strict=strict)

    def find_samples(self) -> tuple[list[Sample], list[Path]]:
        return pair_by_stem(self.root / self.split, self.root / f"{self.split}annot")


# Suggested local split of the 30 labelled slices (shared data README): train 0-24, val 25-29.
ISBI_DEFAULT_SLICES = {"train": range(0, 25), "val": range(25, 30), "trainval": None, "test": None}


class ISBI2012(FileDataset):
    """ISBI 2012 EM segmentation (U-Net §4): grey 512x512 slices, labels 255 = cell, 0 = membrane.

    Class 0 is the membrane (cell border) and class 1 the cell interior. Two layouts:
    `train/image/{i}.png`, `train/label/{i}.png`, `test/image/{i}.png`; or the challenge's
    multi-page TIFF stacks `train-volume.tif`, `train-labels.tif`, `test-volume.tif`.
    Splits: `train` = labelled slices 0-24, `val` = 25-29, `trainval` = all labelled slices,
    `test` = the test slices, which have no public labels (their masks are all ignore).
    `slices` (indices, a range, or a string "0-24") overrides the split's default selection.
    """

    info, value_map = tables.ISBI_INFO, tables.ISBI_VALUES

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        slices: Sequence[int] | int | str | None = None,
        transforms: Transforms | None = None,
        max_pixels: int = io.MAX_PIXELS,
        strict: bool = True,
    ) -> None:
        self.slices = slices
        super().__init__(root, split, transforms=transforms, max_pixels=max_pixels, strict=strict)

    def find_samples(self) -> tuple[list[Sample], list[Path]]:
        if self.split not in ISBI_DEFAULT_SLICES:
            raise DataError(
                f"split must be one of {', '.join(ISBI_DEFAULT_SLICES)}, got {self.split!r}; "
                "try 'train' (slices 0-24) or 'val' (25-29)"
            )
        samples, unpaired = _isbi_samples(self.root, "test" if self.split == "test" else "train")
        slices = self.slices
        chosen = _parse_slices(slices) if slices is not None else ISBI_DEFAULT_SLICES[self.split]
        if chosen is None:
            return samples, unpaired
        chosen = list(chosen)
        if any(not 0 <= i < len(samples) for i in chosen):
            raise DataError(
                f"{self.root}: slices must lie in 0..{len(samples) - 1}, got {chosen}; "
                "try slices='0-24'"
            )
        return [samples[i] for i in chosen], unpaired


def _isbi_samples(root: Path, part: str) -> tuple[list[Sample], list[Path]]:
    """Slices of `part` ("train" or "test") in slice order, from PNG folders or TIFF stacks."""
    volume = root / f"{part}-volume.tif"
    if volume.is_file():
        labels = root / "train-labels.tif" if part == "train" else None
        return [Sample(volume, labels, page) for page in range(io.tiff_pages(volume))], []
    if part == "test":
        images = _files_by_stem(root / "test" / "image", io.IMAGE_SUFFIXES)
        return [Sample(images[s], None) for s in sorted(images, key=_slice_order)], []
    samples, unpaired = pair_by_stem(root / "train" / "image", root / "train" / "label")
    return sorted(samples, key=lambda s: _slice_order(s.image.stem)), unpaired


def _slice_order(stem: str) -> tuple[int, str]:
    """Sort "2" before "10": by the number in the name, then the name."""
    digits = re.findall(r"\d+", stem)
    return (int(digits[-1]) if digits else -1, stem)


def _parse_slices(slices: Sequence[int] | int | str) -> list[int]:
    if isinstance(slices, int):  # a single slice, e.g. `slices=0` from a key=value override
        return [slices]
    if isinstance(slices, str):
        match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", slices)
        if not match:
            raise DataError(f"slices must look like '0-24', got {slices!r}; try slices='0-24'")
        return list(range(int(match[1]), int(match[2]) + 1))
    if not isinstance(slices, (list, tuple, range)) or not all(map(is_integer, slices)):
        raise DataError(
            f"slices must be slice indices, one index or a range like '0-24', got {slices!r}; "
            "try slices='0-24'"
        )
    return list(slices)


class Cityscapes(FileDataset):
    """Cityscapes fine annotations: `leftImg8bit/{split}/{city}/*_leftImg8bit.png` with
    `gtFine/{split}/{city}/*_gtFine_labelIds.png`.

    The 34 label ids (0..33, and -1 stored as 255) become the 19 train ids of the benchmark;
    all others are ignored (255), as in the official cityscapesScripts.
    """

    info, value_map = tables.CITYSCAPES_INFO, tables.CITYSCAPES_VALUES

    def find_samples(self) -> tuple[list[Sample], list[Path]]:
        image_root = self.root / "leftImg8bit" / self.split
        mask_root = self.root / "gtFine" / self.split
        if not image_root.is_dir():
            raise DataError(
                f"{image_root}: the folder must exist, got nothing there; try a root that "
                "holds leftImg8bit/ and gtFine/, and split 'train', 'val' or 'test'"
            )
        samples, unpaired = [], []
        for city in sorted(p.name for p in image_root.iterdir() if p.is_dir()):
            found, missing = pair_by_stem(
                image_root / city,
                mask_root / city,
                mask_stem=lambda stem: stem.replace("_gtFine_labelIds", "_leftImg8bit"),
            )
            samples += found
            # Only labelIds masks count: the other gtFine files (color, instanceIds) are ignored.
            unpaired += [p for p in missing if "_gtFine_" not in p.name or "_labelIds" in p.name]
        return samples, unpaired


KINDS = ("synthetic", "folder", "voc", "camvid", "isbi2012", "cityscapes")
_SYNTHETIC_SPLITS = {"train": (0, 256), "val": (1, 64), "test": (2, 64)}
_CONSTRUCTORS = {"synthetic": SyntheticShapes, "folder": FolderDataset, "voc": VOCSegmentation,
                 "camvid": CamVid, "isbi2012": ISBI2012, "cityscapes": Cityscapes}
_FIXED = {"root", "split", "transforms", "images", "masks"}  # set by open_dataset itself
_EXAMPLES = {"classes": 3}  # the value shown in "try classes=3" for a missing option


def dataset_options(kind: str) -> dict:
    """The options `open_dataset(kind, ...)` accepts, with their defaults (`REQUIRED` where
    there is none)."""
    if kind not in KINDS:
        raise ConfigError(f"dataset must be one of {', '.join(KINDS)}, got {kind!r}; "
                          f"{closest_hint(kind, KINDS) or 'try ' + repr('synthetic')}")
    return signature_options(_CONSTRUCTORS[kind], exclude=_FIXED)


def check_request(kind: str, root: str | Path | None, options: Mapping,
                  spelling: Spelling = PYTHON) -> None:
    """ConfigError unless `kind` is one of `KINDS` (a misspelling gets the closest), a file
    dataset has a `root`, and `options` are the kind's options with every required one given.

    Runs before any file is read: by `open_dataset`, and where a config or a command line is
    checked (with `spelling` saying how the user writes an option there, e.g. `--option`)."""
    check_options(f"dataset {kind!r}", options, dataset_options(kind), spelling, _EXAMPLES)
    if kind != "synthetic" and not root:
        raise ConfigError(
            f"dataset {kind!r} needs its folder, got no root; try "
            f"{spelling.root.format(value='PATH')} (see docs/datasets.md for the layout)"
        )


def open_dataset(
    kind: str,
    root: str | Path | None,
    split: str = "train",
    transforms: Transforms | None = None,
    **options,
) -> Dataset:
    """The dataset of one of `KINDS` at `root` (ignored for `synthetic`), for `split`.

    `options` go to the dataset's constructor (e.g. `slices` for ISBI 2012, `classes` and
    `colour_map` for folders, `max_pixels` for all file datasets); unknown ones raise
    `ConfigError` listing the valid ones (:func:`check_request`). Layouts:

    - `folder`: `root/{split}/images` and `root/{split}/masks` (FolderDataset, needs `classes`).
    - `synthetic`: SyntheticShapes; split `train` / `val` / `test` use seeds 0 / 1 / 2 (plus
      the `seed` option) and 256 / 64 / 64 images unless `n` is given.
    - `voc`, `camvid`, `isbi2012`, `cityscapes`: the published layouts (docs/datasets.md).
    """
    check_request(kind, root, options)
    if kind == "synthetic":
        if split not in _SYNTHETIC_SPLITS:
            raise ConfigError(
                f"split must be one of {', '.join(_SYNTHETIC_SPLITS)} for synthetic data, got "
                f"{split!r}; try 'train'"
            )
        seed_offset, n = _SYNTHETIC_SPLITS[split]
        check_int("seed", options.get("seed", 0), minimum=0)  # before the arithmetic below
        options = {"n": n, **options, "seed": options.get("seed", 0) * 1000 + seed_offset}
        return SyntheticShapes(transforms=transforms, **options)
    if kind == "folder":
        base = Path(root) / split
        return FolderDataset(base / "images", base / "masks", transforms=transforms, **options)
    return _CONSTRUCTORS[kind](root, split, transforms=transforms, **options)
