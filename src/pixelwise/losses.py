"""Losses for semantic segmentation, all mapping `(logits (N, K, H, W), target (N, H, W) int64)`
to a scalar and all skipping `ignore_index` pixels the same way: an ignored pixel adds nothing
to the loss and nothing to the normaliser. A batch with no labelled pixel gives a loss of 0.

- `ce`: cross-entropy with optional class weights (e.g. SegNet's median-frequency weights,
  `pixelwise.data.stats.median_frequency_weights`).
- `dice`: soft multi-class Dice loss, `1 - mean_c (2 sum p g + s) / (sum p + sum g + s)`.
- `ce_dice`: the sum of the two.
- `focal`: focal loss `-(1 - p_t)^gamma log p_t` (Lin et al. 2017), class weights as alpha.
- `lovasz`: the Lovász-softmax loss (Berman, Rannen Triki, Blaschko, CVPR 2018), a convex
  surrogate of `1 - IoU` per class, so it trains the score it is judged by (mean IoU: each
  class counts alike however few its pixels are).
- `ce_lovasz`: cross-entropy plus Lovász-softmax.
- `unet_weighted_ce`: cross-entropy weighted per pixel by the U-Net paper's weight map (§3),
  computed from the target's connected components, so touching cells get separated; option
  `cldice` adds a soft-clDice term (Shit et al., CVPR 2021) that keeps class 0 continuous.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from pixelwise.errors import ConfigError
from pixelwise.labels import check_labels
from pixelwise.options import Spelling, check_choice, check_options, check_real, signature_options


def build_loss(
    name: str,
    num_classes: int,
    ignore_index: int = 255,
    class_weights: Sequence[float] | torch.Tensor | None = None,
    **options: Any,
) -> nn.Module:
    """The loss called `name` (one of `LOSSES`) for `num_classes` classes.

    `class_weights` gives one weight per class (None: all 1). The `auto` setting of the
    configuration is resolved by the caller with `check_dataset(dataset).class_weights`
    (`pixelwise.data.checks`: SegNet's median-frequency weights from a scan of the data).
    `options` are the loss's own keywords (`optim.loss_options`), e.g. `w0=3` for
    `unet_weighted_ce`; see `loss_options`.
    """
    weights = _class_weight_tensor(class_weights, num_classes)
    check_options(f"loss {name!r}", options, loss_options(name), LOSS_SPELLING)
    return LOSS_CLASSES[name](num_classes, ignore_index, weights, **options)


def loss_options(name: str) -> dict[str, Any]:
    """The keyword options loss `name` takes, with their defaults (`{}`: none)."""
    check_choice("optim.loss", name, LOSSES)
    return signature_options(LOSS_CLASSES[name].__init__,
                             exclude={"self", "num_classes", "ignore_index", "class_weights"})


def _class_weight_tensor(
    class_weights: Sequence[float] | torch.Tensor | None, num_classes: int
) -> torch.Tensor:
    if class_weights is None:
        return torch.ones(num_classes)
    weights = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
    if len(weights) != num_classes or not torch.isfinite(weights).all() or (weights < 0).any():
        raise ConfigError(
            f"class_weights must be {num_classes} finite non-negative numbers (one per class), "
            f"got {weights.tolist()}; try class_weights=None or 'auto'"
        )
    return weights


class _SegmentationLoss(nn.Module):
    """Shared checks: logits `(N, K, H, W)`, target `(N, H, W)` of class ids or ignore."""

    def __init__(self, num_classes: int, ignore_index: int, class_weights: torch.Tensor) -> None:
        super().__init__()
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.register_buffer("class_weights", class_weights)

    def _valid(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mask `(N, H, W)` of labelled pixels; raises `DataError` on values outside the classes."""
        if logits.dim() != 4 or logits.shape[1] != self.num_classes:
            raise ConfigError(
                f"logits must be (N, {self.num_classes}, H, W), got {tuple(logits.shape)}; "
                f"try a model built with num_classes={self.num_classes}"
            )
        if target.shape != (logits.shape[0], *logits.shape[2:]):
            raise ConfigError(
                f"target must be (N, H, W) = {(logits.shape[0], *logits.shape[2:])} to match the "
                f"logits, got {tuple(target.shape)}; try cropping the mask like the output "
                "(U-Net 'valid' padding returns a smaller map)"
            )
        check_labels(target, self.num_classes, self.ignore_index)
        return target != self.ignore_index

    def _weighted_mean(self, per_pixel: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """`sum w l / sum w`, 0 when no pixel has weight (every pixel ignored)."""
        return (per_pixel * weights).sum() / weights.sum().clamp_min(1e-12)


class CrossEntropyLoss(_SegmentationLoss):
    """Cross-entropy averaged over labelled pixels, each weighted by its class weight."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = self._valid(logits, target)
        safe = torch.where(valid, target, 0)
        per_pixel = F.cross_entropy(logits, safe, reduction="none")
        return self._weighted_mean(per_pixel, self.class_weights[safe] * valid)


class DiceLoss(_SegmentationLoss):
    """Soft Dice over the batch, one term per class, `1 -` their class-weighted mean.

    `p` is the softmax probability and `g` the one-hot target over labelled pixels; `smooth`
    (1) keeps classes absent from a batch defined (their term rewards predicting none of them).
    """

    smooth = 1.0

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = self._valid(logits, target)
        probs = logits.float().softmax(1)
        classes = torch.where(valid, target, 0)
        # sum p g per class without the one-hot target: each labelled pixel's probability of its
        # true class, added up by class (0.6x the one-hot product's time: bench/train_step.py)
        labelled = classes[valid]
        truth_probs = probs.gather(1, classes[:, None])[:, 0][valid]
        overlap = probs.new_zeros(self.num_classes).index_add_(0, labelled, truth_probs)
        truth_total = torch.bincount(labelled, minlength=self.num_classes)
        total = (probs * valid[:, None]).sum((0, 2, 3)) + truth_total.to(probs.dtype)
        dice = (2 * overlap + self.smooth) / (total + self.smooth)
        return 1 - (dice * self.class_weights).sum() / self.class_weights.sum().clamp_min(1e-12)


class _SumLoss(_SegmentationLoss):
    """The sum of the losses in `terms`, each built with the same class weights and ignore
    index."""

    terms: tuple[type[_SegmentationLoss], ...] = ()

    def __init__(self, num_classes: int, ignore_index: int, class_weights: torch.Tensor) -> None:
        super().__init__(num_classes, ignore_index, class_weights)
        self.parts = nn.ModuleList(term(num_classes, ignore_index, class_weights)
                                   for term in self.terms)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(part(logits, target) for part in self.parts)


class CEDiceLoss(_SumLoss):
    """Cross-entropy plus soft Dice, with the same class weights and ignore index."""

    terms = (CrossEntropyLoss, DiceLoss)


class LovaszSoftmaxLoss(_SegmentationLoss):
    """Lovász-softmax (Berman et al. 2018, eq. 12 and Alg. 1): per class `c`, the Lovász
    extension of the Jaccard loss at the pixel errors `m_i = |[y_i = c] - p_i(c)|`, i.e. the
    errors sorted in decreasing order dotted with the Jaccard loss's increments
    (:func:`lovasz_gradient`); the class-weighted mean over the classes present in the batch's
    labelled pixels (the paper's "present" classes). With one-hot probabilities it is exactly
    `1 - IoU` of each class, so its minimum is the mean IoU's maximum.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = self._valid(logits, target)
        probs = logits.float().softmax(1).permute(0, 2, 3, 1)[valid]  # (P, K), labelled only
        truth = target[valid]
        total, weight = logits.sum() * 0.0, logits.new_zeros(())  # 0, with a gradient
        for c in truth.unique().tolist():
            fg = (truth == c).float()
            errors, order = (fg - probs[:, c]).abs().sort(descending=True)
            total = total + self.class_weights[c] * (errors @ lovasz_gradient(fg[order]))
            weight = weight + self.class_weights[c]
        return total / weight.clamp_min(1e-12)


def lovasz_gradient(fg_sorted: torch.Tensor) -> torch.Tensor:
    """The increments of the Jaccard loss `1 - |fg & errors| / |fg | errors|` as the pixels of
    one class are marked wrong one by one in the given order (Berman et al. 2018, Alg. 1):
    `fg_sorted` (P,) is 1 for the class's pixels, in the order of decreasing error."""
    present = fg_sorted.sum()
    intersection = present - fg_sorted.cumsum(0)
    union = present + (1 - fg_sorted).cumsum(0)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


class CELovaszLoss(_SumLoss):
    """Cross-entropy plus Lovász-softmax, with the same class weights and ignore index."""

    terms = (CrossEntropyLoss, LovaszSoftmaxLoss)


class FocalLoss(_SegmentationLoss):
    """Focal loss `-alpha_c (1 - p_t)^gamma log p_t` (Lin et al. 2017, eq. 5), gamma = 2,
    averaged over labelled pixels weighted by `alpha_c` (the class weights)."""

    gamma = 2.0

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = self._valid(logits, target)
        safe = torch.where(valid, target, 0)
        log_pt = -F.cross_entropy(logits, safe, reduction="none")
        per_pixel = -((1 - log_pt.exp()) ** self.gamma) * log_pt
        return self._weighted_mean(per_pixel, self.class_weights[safe] * valid)


class UNetWeightedCELoss(_SegmentationLoss):
    """Cross-entropy weighted per pixel by `w(x) = w_c(x) + w0 exp(-(d1 + d2)^2 / (2 sigma^2))`.

    U-Net §3: `w_c` is the class weight of the pixel's class; the border term is computed from
    the target by `unet_border_weights`, taking each 4-connected region of one non-background
    class (class 0 is the background, e.g. ISBI's membrane) as one instance. Runs on the CPU
    (scipy distance transforms) for each image of the batch. `cldice > 0` adds that multiple of
    `soft_cldice_loss` on class 0's probability (beyond the paper): the separating background
    must stay continuous, since one missing membrane pixel joins two cells.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int,
        class_weights: torch.Tensor,
        w0: float = 10.0,
        sigma: float = 5.0,
        cldice: float = 0.0,
    ) -> None:
        super().__init__(num_classes, ignore_index, class_weights)
        check_real("optim.loss_options.w0", w0, minimum=0.0)
        check_real("optim.loss_options.sigma", sigma, minimum=0.0, inclusive=False)
        check_real("optim.loss_options.cldice", cldice, minimum=0.0)
        self.w0, self.sigma, self.cldice = float(w0), float(sigma), float(cldice)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = self._valid(logits, target)
        safe = torch.where(valid, target, 0)
        labels = torch.where(valid, target, 0).cpu().numpy()
        border = np.stack(
            [
                unet_border_weights(instances_from_classes(image), self.w0, self.sigma)
                for image in labels
            ]
        )
        weights = self.class_weights[safe] + torch.from_numpy(border).to(logits.device)
        per_pixel = F.cross_entropy(logits, safe, reduction="none")
        loss = self._weighted_mean(per_pixel, weights * valid)
        if self.cldice:
            separator = logits.float().softmax(1)[:, 0] * valid
            loss = loss + self.cldice * soft_cldice_loss(separator, ((target == 0) & valid).float())
        return loss


def soft_erode(image: torch.Tensor) -> torch.Tensor:
    """Grey-value erosion `(N, H, W)` by the 4-neighbour cross (the min of a 3x1 and a 1x3
    min-pool); outside the image counts as foreground, so the border erodes nothing."""
    batch = image[:, None]
    vertical = -F.max_pool2d(-batch, (3, 1), 1, (1, 0))
    horizontal = -F.max_pool2d(-batch, (1, 3), 1, (0, 1))
    return torch.minimum(vertical, horizontal)[:, 0]


def soft_dilate(image: torch.Tensor) -> torch.Tensor:
    """Grey-value dilation `(N, H, W)` by the 3x3 square (outside the image is background)."""
    return F.max_pool2d(image[:, None], 3, 1, 1)[:, 0]


def soft_skeleton(image: torch.Tensor, iterations: int = 5) -> torch.Tensor:
    """The soft morphological skeleton of probabilities `(N, H, W)` in [0, 1] (Shit et al.,
    "clDice", CVPR 2021, Alg. 1): what each of `iterations + 1` successive erosions holds that
    its opening removes, united softly. On a binary map it is Lantuéjoul's skeleton (cross
    erosion, 3x3 opening) of the parts at most `iterations` erosions thick."""
    skeleton = F.relu(image - soft_dilate(soft_erode(image)))
    for _ in range(iterations):
        image = soft_erode(image)
        delta = F.relu(image - soft_dilate(soft_erode(image)))
        skeleton = skeleton + F.relu(delta - skeleton * delta)
    return skeleton


def soft_cldice_loss(prediction: torch.Tensor, truth: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """`1 - clDice` of a probability map and a binary truth, both `(N, H, W)` (Shit et al. 2021,
    eq. 1-3): the harmonic mean of topology precision (the predicted skeleton's share inside the
    truth) and topology sensitivity (the true skeleton's share the prediction covers). A gap in a
    thin structure cuts the true skeleton, so it costs sensitivity however few pixels it has."""
    predicted_skeleton, true_skeleton = soft_skeleton(prediction), soft_skeleton(truth)
    precision = ((predicted_skeleton * truth).sum() + smooth) / (predicted_skeleton.sum() + smooth)
    sensitivity = ((true_skeleton * prediction).sum() + smooth) / (true_skeleton.sum() + smooth)
    return 1 - 2 * precision * sensitivity / (precision + sensitivity)


def instances_from_classes(label: np.ndarray) -> np.ndarray:
    """Instance labelling `(H, W)` int32 of a class map: each 4-connected region of one class
    other than 0 gets its own id 1, 2, ...; class-0 pixels stay 0."""
    instances = np.zeros(label.shape, dtype=np.int32)
    for class_id in np.unique(label):
        if class_id == 0:
            continue
        regions, count = ndimage.label(label == class_id)
        instances[regions > 0] = regions[regions > 0] + instances.max()
    return instances


def unet_border_weights(instances: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """The U-Net border term `w0 exp(-(d1 + d2)^2 / (2 sigma^2))` on background pixels.

    `instances`: `(H, W)` int labelling, 0 = background, 1..M = cells. `d1` / `d2` are the
    Euclidean distances (pixel centre to pixel centre) to the nearest and second-nearest cell,
    from one scipy distance transform per cell. Cell pixels get 0 (U-Net §3 uses the term to
    weight the separating background). Each transform only covers the cell's bounding box
    grown by `6 sigma`: beyond it `d2 > 6 sigma`, so the term is below `w0 * 1.6e-8` and is 0.
    Returns `(H, W)` float32.
    """
    instances = np.asarray(instances)
    margin = int(math.ceil(6 * sigma))
    d1 = np.full(instances.shape, np.inf)
    d2 = np.full(instances.shape, np.inf)
    for cell, box in enumerate(ndimage.find_objects(instances), start=1):
        if box is None:
            continue
        grown = tuple(
            slice(max(s.start - margin, 0), min(s.stop + margin, size))
            for s, size in zip(box, instances.shape, strict=True)
        )
        distance = ndimage.distance_transform_edt(instances[grown] != cell)
        nearest, second = d1[grown], d2[grown]
        d2[grown] = np.minimum(second, np.maximum(nearest, distance))
        d1[grown] = np.minimum(nearest, distance)
    border = np.zeros(instances.shape, dtype=np.float32)
    background = (instances == 0) & np.isfinite(d2)
    border[background] = w0 * np.exp(-((d1[background] + d2[background]) ** 2) / (2 * sigma**2))
    return border


def unet_weight_map(
    instances: np.ndarray,
    class_weights: tuple[float, float] | None = None,
    w0: float = 10.0,
    sigma: float = 5.0,
) -> np.ndarray:
    """The U-Net paper's weight map (§3, eq. 2) of an instance labelling `(H, W)` (0 = background).

    `w(x) = w_c(x) + w0 exp(-(d1(x) + d2(x))^2 / (2 sigma^2))`, with `w_c` the weight of the
    pixel's class: `class_weights = (background, cell)`, or None to balance the two classes'
    frequencies in this map (`w_c = H W / (2 * pixels of the class)`, 1 if a class is missing).
    Defaults `w0 = 10`, `sigma = 5` px as in the paper. Returns `(H, W)` float32.
    """
    instances = np.asarray(instances)
    foreground = instances > 0
    if class_weights is None:
        counts = np.array([(~foreground).sum(), foreground.sum()])
        class_weights = tuple(instances.size / (2 * counts) if counts.all() else (1.0, 1.0))
    class_term = np.where(foreground, class_weights[1], class_weights[0]).astype(np.float32)
    return class_term + unet_border_weights(instances, w0, sigma)


# The loss class of each name in LOSSES; their own keywords are the loss options.
LOSS_CLASSES: dict[str, type[_SegmentationLoss]] = {
    "ce": CrossEntropyLoss,
    "dice": DiceLoss,
    "ce_dice": CEDiceLoss,
    "focal": FocalLoss,
    "lovasz": LovaszSoftmaxLoss,
    "ce_lovasz": CELovaszLoss,
    "unet_weighted_ce": UNetWeightedCELoss,
}
LOSSES = tuple(LOSS_CLASSES)
LOSS_SPELLING = Spelling("optim.loss_options.{name}={value}")
