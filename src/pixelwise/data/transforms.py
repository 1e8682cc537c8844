"""Joint image + mask augmentation on `torchvision.transforms.v2`.

The image travels as a `tv_tensors.Image` and the mask as a `tv_tensors.Mask`, so every
geometric transform moves both the same way and torchvision resamples masks with nearest
neighbour (no invented class values). Areas a transform brings in from outside the image are
filled with 0 in the image and `ignore_index` in the mask, so losses and metrics skip them.

`train_preset` / `eval_preset` take and return `(image float (C, H, W), mask int64 (H, W))` and
end with mean/std normalisation; the presets record that mean/std in `.mean` / `.std` so a
checkpoint can store them and prediction can normalise the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as nnf
from torch.utils.data import default_collate
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from pixelwise.errors import ConfigError
from pixelwise.options import signature_options

Size = int | tuple[int, int]


class JointTransform:
    """A `v2.Compose` applied to an `(image, mask)` pair of plain tensors.

    `image` float `(C, H, W)`, `mask` int64 `(H, W)` in; the same types out.
    """

    def __init__(
        self,
        transforms: Sequence[v2.Transform],
        mean: Sequence[float] = (),
        std: Sequence[float] = (),
        collate: ClassPaste | None = None,
    ) -> None:
        self.pipeline = v2.Compose(list(transforms))
        self.mean, self.std = list(mean), list(std)
        self.collate = collate  # a batch-level step (the loader's collate_fn), or None

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.pipeline(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)

    def __repr__(self) -> str:
        paste = f", collate={self.collate}" if self.collate is not None else ""
        return f"JointTransform({self.pipeline}{paste})"


def _image_size(flat_inputs: list[Any]) -> tuple[int, int]:
    for inpt in flat_inputs:
        if isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            return tuple(inpt.shape[-2:])
    raise TypeError("the inputs must contain a tv_tensors.Image or tv_tensors.Mask")


class RandomScale(v2.Transform):
    """Resize by a factor drawn uniformly from `scale` (image bilinear with antialiasing, mask
    nearest neighbour at pixel centres)."""

    def __init__(self, scale: tuple[float, float]) -> None:
        super().__init__()
        if not 0 < scale[0] <= scale[1]:
            raise ConfigError(
                f"scale must be a range (low, high) with 0 < low <= high, got {scale}"
            )
        self.scale = scale

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = _image_size(flat_inputs)
        factor = float(torch.empty(()).uniform_(*self.scale))
        return {"size": [max(1, round(height * factor)), max(1, round(width * factor))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            resized = resize_mask(inpt.as_subclass(torch.Tensor), params["size"])
            return tv_tensors.wrap(resized, like=inpt)
        return self._call_kernel(F.resize, inpt, params["size"], antialias=True)


def resize_mask(mask: torch.Tensor, size: list[int]) -> torch.Tensor:
    """`mask (H, W)` resized to `size` by nearest neighbour at pixel centres.

    torchvision resizes masks with legacy "nearest", which samples source pixel floor(i /
    factor) and so drifts up to a pixel towards the top left of the bilinearly resized image;
    "nearest-exact" samples pixel centres like bilinear."""
    return F.resize_image(mask[None], size, interpolation=InterpolationMode.NEAREST_EXACT)[0]


def rescale_pair(image: torch.Tensor, mask: torch.Tensor,
                 factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`image (C, H, W)` (bilinear, antialiased) and `mask (H, W)` (`resize_mask`) resized by
    `factor`: `RandomScale`'s resampling at a fixed factor."""
    height, width = image.shape[-2:]
    size = [max(1, round(height * factor)), max(1, round(width * factor))]
    return F.resize_image(image, size, antialias=True), resize_mask(mask, size)


class FocusCrop(v2.RandomCrop):
    """A random crop of ``size`` (padded as ``v2.RandomCrop(pad_if_needed=True)`` when the image
    is smaller) that, with probability ``focus``, is placed to hold a pixel of one of
    ``classes``: rare-class-aware crop sampling. One of the listed classes present in the mask
    is drawn uniformly (so a class seldom seen gets as many crops as a common one), then one of
    its pixels, then where in the crop that pixel lands. Masks without any of ``classes``, and
    the other ``1 - focus`` of crops, are placed uniformly as ``v2.RandomCrop`` places them.
    """

    def __init__(self, size: Size, classes: Sequence[int], focus: float,
                 fill: dict[type, float | int]) -> None:
        super().__init__(size, pad_if_needed=True, fill=fill)
        check_focus(focus)
        self.classes, self.focus = torch.tensor(list(classes), dtype=torch.int64), focus

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        params = super().make_params(flat_inputs)
        masks = [i.as_subclass(torch.Tensor) for i in flat_inputs if isinstance(i, tv_tensors.Mask)]
        if not (params["needs_crop"] and masks) or float(torch.rand(())) >= self.focus:
            return params
        mask = masks[0]
        present = self.classes[torch.isin(self.classes, mask.unique())]
        if not len(present):
            return params
        chosen = present[int(torch.randint(len(present), ()))]
        rows, cols = (mask == chosen).nonzero(as_tuple=True)
        pick = int(torch.randint(len(rows), ()))
        left, top, right, bottom = params["padding"]
        params["top"] = _window_start(int(rows[pick]) + top, params["height"],
                                      mask.shape[-2] + top + bottom)
        params["left"] = _window_start(int(cols[pick]) + left, params["width"],
                                       mask.shape[-1] + left + right)
        return params


def check_focus(focus: float) -> None:
    """ConfigError unless ``focus``, the share of focused crops, is a probability."""
    check_probability("focus", focus)


def _window_start(position: int, window: int, extent: int) -> int:
    """Start of a ``window`` inside ``0..extent`` that holds ``position`` at a uniformly drawn
    place, shifted inwards where it would leave the extent."""
    start = position - int(torch.randint(window, ()))
    return min(max(start, 0), extent - window)


class ClassPaste:
    """Copy-paste of rare classes between the samples of a batch, as the loader's collate_fn.

    With probability ``p`` each sample receives the pixels of ``classes`` from another sample of
    the batch (image and mask alike), shifted sideways by a random number of columns (wrapping
    round): a pole or a pedestrian seen against a street it never stood in. The idea is "Simple
    Copy-Paste" (Ghiasi et al., CVPR 2021) and ClassMix (Olsson et al., WACV 2021), restricted to
    the listed classes so that their pixels become more frequent and appear in new contexts; the
    rows are kept, so an object keeps its height in the frame. Pasted pixels replace what was
    there, in the image and in the mask. Needs samples of one size (a crop); batches of one
    sample are left alone.
    """

    def __init__(self, classes: Sequence[int], p: float) -> None:
        check_probability("paste", p)
        self.classes, self.p = torch.tensor(list(classes), dtype=torch.int64), p

    def __call__(self, batch: list[tuple[torch.Tensor, torch.Tensor]]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        images, masks = default_collate(batch)
        return paste_classes(images, masks, self.classes, self.p)

    def __repr__(self) -> str:
        return f"ClassPaste(classes={self.classes.tolist()}, p={self.p})"


def paste_classes(images: torch.Tensor, masks: torch.Tensor, classes: torch.Tensor,
                  p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`ClassPaste` on a collated batch, ``images (N, C, H, W)``, ``masks (N, H, W)``: new
    tensors, the inputs untouched. Donor ``(i + k) % N`` with ``k`` drawn from ``1..N-1`` (never
    the sample itself), shift drawn from ``0..W-1``, all from torch's global generator."""
    count, width = len(images), images.shape[-1]
    if count < 2:
        return images, masks
    donors = (torch.arange(count) + torch.randint(1, count, (count,))) % count
    chosen = torch.rand(count) < p
    shifts = torch.randint(width, (count,))
    out_images, out_masks = images.clone(), masks.clone()  # donors are read from the inputs
    for i in chosen.nonzero().flatten().tolist():
        donor, shift = int(donors[i]), int(shifts[i])
        source_mask = masks[donor].roll(shift, dims=-1)
        where = torch.isin(source_mask, classes)
        out_masks[i][where] = source_mask[where]
        out_images[i][:, where] = images[donor].roll(shift, dims=-1)[:, where]
    return out_images, out_masks


def check_probability(name: str, value: float) -> None:
    """ConfigError unless ``value`` is a probability."""
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {value}; try 0.5")


class UNetElasticDeform(v2.Transform):
    """The U-Net paper's elastic deformation (§3.1).

    "Random displacement vectors on a coarse 3 by 3 grid", each drawn from a Gaussian with
    `sigma` = 10 pixels standard deviation; "per-pixel displacements are then computed using
    bicubic interpolation". The image is resampled bilinearly, the mask with nearest neighbour;
    pixels pulled from outside the image get `fill` (image) and `mask_fill` (mask).
    """

    def __init__(
        self, grid: int = 3, sigma: float = 10.0, fill: float = 0.0, mask_fill: int = 255
    ) -> None:
        super().__init__()
        self.grid, self.sigma, self.fill, self.mask_fill = grid, sigma, fill, mask_fill

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = _image_size(flat_inputs)
        coarse = torch.randn(1, 2, self.grid, self.grid) * self.sigma  # pixels, (dx, dy)
        dense = nnf.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
        # torchvision's elastic kernel adds the displacement to a grid in [-1, 1] units.
        dense = dense * torch.tensor([2.0 / width, 2.0 / height]).view(1, 2, 1, 1)
        return {"displacement": dense.permute(0, 2, 3, 1)}  # (1, H, W, 2)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        fill = self.mask_fill if isinstance(inpt, tv_tensors.Mask) else self.fill
        return self._call_kernel(F.elastic, inpt, params["displacement"], fill=fill)


def train_preset(
    crop_size: Size | None,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    ignore_index: int = 255,
    scale: tuple[float, float] | None = (0.5, 2.0),
    hflip: float = 0.5,
    vflip: float = 0.0,
    rotation: float = 0.0,
    elastic: bool = False,
    colour_jitter: float = 0.0,
    focus_classes: Sequence[int] = (),
    focus: float = 0.5,
    paste_classes: Sequence[int] = (),
    paste: float = 0.5,
) -> JointTransform:
    """Training augmentation, in this order: random scale, rotation (+-`rotation` degrees),
    U-Net elastic deformation, random crop of `crop_size` (padding small images with 0 /
    `ignore_index`; with `focus_classes`, class ids, a `FocusCrop` that holds one of them in a
    `focus` share of crops), horizontal / vertical flips with the given probabilities, colour
    jitter (brightness, contrast, saturation `colour_jitter`, hue a quarter of it; only for 1-
    or 3-channel images), then `(x - mean) / std` per channel. With `paste_classes`, class ids,
    batches are collated by a `ClassPaste` that pastes those classes' pixels into a `paste`
    share of the samples from another sample of the batch (the loader's ``collate_fn``: the
    returned transform's ``.collate``).
    """
    fill = {tv_tensors.Image: 0.0, tv_tensors.Mask: ignore_index}
    steps: list[v2.Transform] = []
    if scale is not None:
        steps.append(RandomScale(scale))
    if rotation:
        steps.append(v2.RandomRotation(rotation, fill=fill))
    if elastic:
        steps.append(UNetElasticDeform(mask_fill=ignore_index))
    check_focus(focus)  # also without focus_classes: a wrong value is refused, not ignored
    if focus_classes and crop_size is None:
        raise ConfigError(f"focus_classes places crops, so it needs a crop size, got "
                          f"{list(focus_classes)} without one; try data.crop_size=256")
    if crop_size is not None and focus_classes:
        steps.append(FocusCrop(crop_size, focus_classes, focus, fill))
    elif crop_size is not None:
        steps.append(v2.RandomCrop(crop_size, pad_if_needed=True, fill=fill))
    if hflip:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if vflip:
        steps.append(v2.RandomVerticalFlip(vflip))
    if colour_jitter:
        if len(mean) not in (1, 3):
            raise ConfigError(
                f"colour_jitter needs 1- or 3-channel images, got {len(mean)} channels; try "
                "colour_jitter=0 for multi-band images"
            )
        strength = colour_jitter
        steps.append(v2.ColorJitter(strength, strength, strength, min(strength / 4, 0.5)))
    steps.append(v2.Normalize(mean, std))
    check_probability("paste", paste)
    if paste_classes and crop_size is None:
        raise ConfigError(f"paste_classes pastes between samples of one size, so it needs a crop "
                          f"size, got {list(paste_classes)} without one; try data.crop_size=256")
    collate = ClassPaste(paste_classes, paste) if paste_classes else None
    return JointTransform(steps, mean, std, collate=collate)


def eval_preset(mean: Sequence[float], std: Sequence[float]) -> JointTransform:
    """Evaluation: only `(x - mean) / std` per channel, the image size is kept."""
    return JointTransform([v2.Normalize(mean, std)], mean, std)


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
def augment_options() -> dict[str, Any]:
    """The augmentation settings of `train_preset` a config may override (`data.augment`),
    with their defaults; crop size, mean/std and ignore index are set apart."""
    return signature_options(train_preset, exclude={"mean", "std", "ignore_index"},
                             keyword_only=True)


# Settings per dataset kind for `train_preset(**RECOMMENDED[kind])`. RGB data uses ImageNet
# statistics (pretrained backbones expect them); ISBI 2012 follows U-Net §3.1 (shifts,
# rotations, elastic deformation, grey-value variation; flips and any rotation are valid for
# EM slices). Crops are sized for a single GPU; see docs/datasets.md.
_PHOTOS = dict(scale=(0.5, 2.0), hflip=0.5, mean=IMAGENET_MEAN, std=IMAGENET_STD)
RECOMMENDED: dict[str, dict[str, Any]] = {
    "synthetic": dict(
        crop_size=None, scale=None, hflip=0.5, vflip=0.5, mean=(0.5,) * 3, std=(0.25,) * 3
    ),
    "folder": {**_PHOTOS, "crop_size": 256},
    "voc": {**_PHOTOS, "crop_size": 320, "colour_jitter": 0.2},
    "camvid": {**_PHOTOS, "crop_size": (352, 480), "colour_jitter": 0.2},
    "cityscapes": {**_PHOTOS, "crop_size": 512, "colour_jitter": 0.2},
    "isbi2012": dict(
        crop_size=256,
        scale=None,
        hflip=0.5,
        vflip=0.5,
        rotation=180.0,
        elastic=True,
        colour_jitter=0.1,
        mean=(0.5,),
        std=(0.25,),
    ),
}
