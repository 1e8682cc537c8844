"""Segmentation scores exactly as the FCN paper defines them, from one confusion matrix.

With `n_ij` the number of pixels of ground-truth class `i` predicted as class `j`, `n_cl` the
number of classes and `t_i = sum_j n_ij` the pixels of class `i` (FCN §5, "Metrics"):

- pixel accuracy           `sum_i n_ii / sum_i t_i`
- mean accuracy            `(1/n_cl) sum_i n_ii / t_i`
- mean IoU                 `(1/n_cl) sum_i n_ii / (t_i + sum_j n_ji - n_ii)`
- frequency-weighted IoU   `(sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)`

plus per-class IoU and Dice/F1 `2 n_ii / (t_i + sum_j n_ji)` and their mean. A per-class score
whose denominator is zero is NaN and left out of the means (numpy's `nanmean`, as the FCN
reference code's `score.py` does): IoU and Dice are NaN for classes absent from both prediction
and ground truth, accuracy for classes absent from the ground truth.

`ConfusionMatrix` pools every pixel of the dataset into one matrix (the FCN reference code's
way, the default). `averaging="per_image"` instead scores each image on its own and averages
the scores over images; the two give different numbers, so `compute()` says which was used.
Pixels whose target is `ignore_index` are not counted anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from scipy import ndimage

from pixelwise.errors import ConfigError
from pixelwise.labels import check_labels

Averaging = Literal["pooled", "per_image"]
# The scalar scores of `ConfusionMatrix.compute()`, each higher-is-better: what `train.metric` may
# name to pick the best checkpoint (checked when the config is loaded).
SCALAR_SCORES = ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou", "mean_dice")
_PER_CLASS = ("accuracy", "iou", "dice")


def scores_from_matrix(matrix: torch.Tensor) -> dict[str, torch.Tensor]:
    """FCN scores of a confusion matrix `(K, K)` or a batch of them `(B, K, K)`.

    Rows are ground truth, columns prediction. Returns float64 tensors: the `SCALAR_SCORES` with
    shape `()` / `(B,)` and the per-class `accuracy`, `iou`, `dice` with shape `(K,)` / `(B, K)`.
    """
    n = matrix.double()
    hits = torch.diagonal(n, dim1=-2, dim2=-1)
    truth = n.sum(-1)  # t_i
    predicted = n.sum(-2)  # sum_j n_ji
    total = truth.sum(-1)
    accuracy = hits / truth  # 0/0 -> NaN for classes absent from the ground truth
    iou = hits / (truth + predicted - hits)
    dice = 2 * hits / (truth + predicted)
    return {
        "pixel_accuracy": hits.sum(-1) / total,
        "mean_accuracy": accuracy.nanmean(-1),
        "mean_iou": iou.nanmean(-1),
        "fw_iou": (truth * iou.nan_to_num(0.0)).sum(-1) / total,
        "mean_dice": dice.nanmean(-1),
        "accuracy": accuracy,
        "iou": iou,
        "dice": dice,
    }


class ConfusionMatrix:
    """Streaming `(K, K)` confusion matrix (rows ground truth, columns prediction).

    Counts live on the device of the tensors given to `update` (one `bincount` per batch, as
    the torchvision reference scripts do), and `all_reduce()` sums them over torchrun processes.
    """

    def __init__(
        self, num_classes: int, ignore_index: int = 255, averaging: Averaging = "pooled"
    ) -> None:
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}; try 21 for VOC")
        if averaging not in ("pooled", "per_image"):
            raise ConfigError(
                f"averaging must be 'pooled' or 'per_image', got {averaging!r}; try 'pooled' "
                "(one matrix over the dataset, as FCN reports)"
            )
        self.num_classes, self.ignore_index, self.averaging = num_classes, ignore_index, averaging
        self.reset()

    def reset(self) -> None:
        """Forget every counted pixel and image."""
        k = self.num_classes
        device = getattr(self, "matrix", torch.empty(0)).device
        self.matrix = torch.zeros(k, k, dtype=torch.int64, device=device)
        # Per-image mode: row 0 sums of each score over images, row 1 how many were not NaN.
        self.image_scores = torch.zeros(
            2, len(SCALAR_SCORES) + len(_PER_CLASS) * k, dtype=torch.float64, device=device
        )
        self.num_images = torch.zeros((), dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Count a batch: integer label maps `pred` and `target`, both `(N, H, W)` or `(H, W)`.

        Raises `DataError` when `target` holds a value that is neither a class nor the ignore
        index, `ConfigError` when `pred` holds a value outside `0..K-1`.
        """
        pred, target = self._checked(pred, target)
        k = self.num_classes
        if self.matrix.device != pred.device:
            self.matrix, self.image_scores, self.num_images = (
                t.to(pred.device) for t in (self.matrix, self.image_scores, self.num_images)
            )
        valid = target != self.ignore_index
        image_index = torch.arange(len(pred), device=pred.device).view(-1, 1, 1).expand_as(pred)
        cell = (image_index * k + target) * k + pred
        per_image = torch.bincount(cell[valid], minlength=len(pred) * k * k).view(-1, k, k)
        self.matrix += per_image.sum(0)
        self.num_images += len(pred)
        if self.averaging == "per_image":
            self._add_image_scores(per_image)

    def _checked(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
        _check_label_map_shapes(pred, target)
        if pred.is_floating_point() or target.is_floating_point():
            raise ConfigError(
                f"pred and target must be integer label maps, got {pred.dtype} and "
                f"{target.dtype}; try logits.argmax(1) for pred"
            )
        pred, target = pred.long(), target.long().to(pred.device)
        if pred.dim() == 2:
            pred, target = pred[None], target[None]
        check_labels(target, self.num_classes, self.ignore_index)
        if pred.numel() and (pred.min() < 0 or pred.max() >= self.num_classes):
            raise ConfigError(
                f"pred values must be class ids 0..{self.num_classes - 1}, got "
                f"{int(pred.min())}..{int(pred.max())}; try a model with num_classes="
                f"{self.num_classes}"
            )
        return pred, target

    def _add_image_scores(self, per_image: torch.Tensor) -> None:
        labelled = per_image.sum((1, 2)) > 0  # an image with only ignore pixels has no score
        scores = scores_from_matrix(per_image[labelled])
        flat = torch.cat(
            [scores[key][:, None] for key in SCALAR_SCORES] + [scores[key] for key in _PER_CLASS], 1
        )
        self.image_scores[0] += flat.nan_to_num(0.0).sum(0)
        self.image_scores[1] += (~flat.isnan()).sum(0)

    def all_reduce(self) -> None:
        """Sum the counts over all torchrun processes; a no-op when not distributed."""
        _all_reduce_sum(self.matrix, self.image_scores, self.num_images)

    def compute(self) -> dict:
        """The scores as plain Python numbers and lists (NaN where undefined).

        Keys: `pixel_accuracy`, `mean_accuracy`, `mean_iou`, `fw_iou`, `mean_dice`; per class
        (lists of K floats) `iou`, `dice`, `accuracy`; `absent` (class ids with no pixel in
        prediction or ground truth); `averaging`, `num_images`, `num_pixels`, and `matrix`
        (the pooled confusion matrix as nested lists).
        """
        matrix = self.matrix.cpu()
        if self.averaging == "pooled":
            scores = {key: value.tolist() for key, value in scores_from_matrix(matrix).items()}
        else:
            sums, counts = self.image_scores.cpu()
            means = (sums / counts).tolist()  # 0/0 -> NaN when no image defines the score
            k = self.num_classes
            scores = dict(zip(SCALAR_SCORES, means[: len(SCALAR_SCORES)], strict=True))
            for offset, key in enumerate(_PER_CLASS):
                start = len(SCALAR_SCORES) + offset * k
                scores[key] = means[start : start + k]
        present = (matrix.sum(0) + matrix.sum(1)) > 0
        scores.update(
            absent=[i for i in range(self.num_classes) if not present[i]],
            averaging=self.averaging,
            num_images=int(self.num_images),
            num_pixels=int(matrix.sum()),
            matrix=matrix.tolist(),
        )
        return scores


def _check_label_map_shapes(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.dim() not in (2, 3):
        raise ConfigError(
            f"pred and target must both be (N, H, W) or (H, W) label maps of one shape, got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}; try logits.argmax(1) for pred"
        )


def _image_pairs(pred: torch.Tensor, target: torch.Tensor) -> zip:
    """`(pred, target)` numpy `(H, W)` pairs, one per image of `(N, H, W)` or `(H, W)` maps."""
    _check_label_map_shapes(pred, target)
    height, width = pred.shape[-2:]
    return zip(_numpy(pred).reshape(-1, height, width), _numpy(target).reshape(-1, height, width),
               strict=True)


def _all_reduce_sum(*states: torch.Tensor) -> None:
    """Sum each tensor in place over all torchrun processes; a no-op when not distributed.

    NCCL groups reduce CUDA tensors only, so a CPU count travels to the current CUDA device and
    back."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    for state in states:
        if dist.get_backend() == "nccl" and state.device.type != "cuda":
            cuda_state = state.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(cuda_state)
            state.copy_(cuda_state)
        else:
            dist.all_reduce(state)


def format_table(scores: dict, class_names: Sequence[str]) -> str:
    """A printable table of `ConfusionMatrix.compute()` output: overall scores, then per class.

    The first line says how the scores were computed (pooled or per-image, over how many images
    and pixels) and which classes were absent (NaN, left out of the means).
    """
    if len(class_names) != len(scores["iou"]):
        raise ConfigError(
            f"class_names must name each of the {len(scores['iou'])} classes, got "
            f"{len(class_names)}; try dataset.info.classes"
        )
    how = {
        "pooled": "pooled over the dataset (one confusion matrix, FCN definitions)",
        "per_image": "averaged over images (each image scored alone, FCN definitions)",
    }[scores["averaging"]]
    absent = ", ".join(class_names[i] for i in scores["absent"]) or "none"
    lines = [
        f"Scores {how}: {scores['num_images']} images, {scores['num_pixels']} labelled pixels; "
        f"absent classes (NaN, left out of means): {absent}",
        f"  pixel accuracy {_percent(scores['pixel_accuracy'])}   "
        f"mean accuracy {_percent(scores['mean_accuracy'])}   "
        f"mean IoU {_percent(scores['mean_iou'])}   "
        f"f.w. IoU {_percent(scores['fw_iou'])}   "
        f"mean Dice {_percent(scores['mean_dice'])}",
    ]
    width = max(12, *(len(name) for name in class_names))
    lines.append(f"  {'class':<{width}}  {'IoU':>7}  {'Dice':>7}  {'Acc':>7}")
    for i, name in enumerate(class_names):
        lines.append(
            f"  {name:<{width}}  {_percent(scores['iou'][i]):>7}  "
            f"{_percent(scores['dice'][i]):>7}  {_percent(scores['accuracy'][i]):>7}"
        )
    return "\n".join(lines)


def _percent(value: float) -> str:
    return "nan" if math.isnan(value) else f"{100 * value:.2f}"


def pixel_error(pred: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> float:
    """Fraction of labelled pixels whose predicted class is wrong (the plain pixel error; the
    ISBI 2012 challenge's pixel error is `MaxFScorePixelError`).

    `pred`, `target`: integer label maps of one shape; `ignore_index` pixels are not counted.
    """
    valid = target != ignore_index
    if not valid.any():
        return math.nan
    return float((pred[valid] != target[valid]).double().mean())


def adapted_rand_error(
    pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, foreground: int = 1
) -> float:
    """Foreground-restricted adapted Rand error of a binary segmentation `(H, W)`, as ISBI 2012.

    The predicted segments are the 4-connected regions of `foreground` pixels of the label map
    `pred` (`scipy.ndimage.label`'s default structure); `segment_rand_error` scores them, and
    says how the truth's segments are formed and which pixels count.
    """
    segments, _ = ndimage.label(_numpy(pred) == foreground)
    return segment_rand_error(segments, target, foreground)


def segment_rand_error(
    segments: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, foreground: int = 1
) -> float:
    """Foreground-restricted adapted Rand error of a segmentation `segments` `(H, W)` (one id per
    segment, 0 for pixels in none) against a binary label map `target`.

    The truth's segments are the 4-connected regions of its `foreground` pixels (for ISBI 2012
    the cell interiors, class 1). Only pixels that are foreground in `target` are scored (the
    "foreground-restricted" Rand error of Arganda-Carreras et al. 2015); among them, the pixels
    of `segments` 0 form one more predicted segment. With `n_ij` the scored pixels in true
    segment `i` and predicted segment `j`, `a_i`, `b_j` the row and column sums and `N` their
    total, the error is `1 - 2 P / (A + B)` with `P = sum n_ij^2 - N`, `A = sum a_i^2 - N`,
    `B = sum b_j^2 - N` (pairs of pixels in one segment), as `skimage.metrics.
    adapted_rand_error(ignore_labels=(0,))`. 0 is a perfect segmentation, 1 the worst; NaN
    when no pair of scored pixels shares a segment (e.g. no foreground in `target`).
    """
    truth, scored = _truth_segments(target, foreground)
    guess = _numpy(segments)[scored].astype(np.int64)
    n = truth.size
    _, joint = np.unique(truth * (int(guess.max(initial=0)) + 1) + guess, return_counts=True)
    truth_sizes, guess_sizes = np.bincount(truth), np.bincount(guess)
    same_both = float(joint @ joint) - n
    same_truth = float(truth_sizes @ truth_sizes) - n
    same_guess = float(guess_sizes @ guess_sizes) - n
    if same_truth + same_guess == 0:
        return math.nan
    return 1.0 - 2.0 * same_both / (same_truth + same_guess)


def _truth_segments(target: np.ndarray | torch.Tensor, foreground: int) -> tuple[np.ndarray, np.ndarray]:
    """The truth's segment id of each scored pixel and the mask `(H, W)` of those pixels: the
    4-connected regions of `foreground` in `target` (ignored pixels are never foreground)."""
    segments, _ = ndimage.label(_numpy(target) == foreground)
    scored = segments > 0
    return segments[scored].astype(np.int64), scored


def _numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    return array.cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


# ---- object-level scores: connected components, summed so they can be all-reduced ------------

# Area bins in pixels at the evaluated resolution, COCO's: small < 32^2, medium < 96^2, large.
SIZE_BINS = ("small", "medium", "large")
SIZE_LIMITS = (32**2, 96**2)


class ObjectRecall:
    """Per class and object size, the fraction of ground-truth objects the prediction finds.

    An object is a 4-connected component of one class in the target (pixels that share an edge;
    two pixels touching only at a corner are two objects; `scipy.ndimage.label`'s default
    structure, as `adapted_rand_error` and the U-Net weight map use). Its area is its pixel
    count at the evaluated resolution, binned as `SIZE_BINS` (small < 32², medium < 96², large).
    It is found when at least half of its pixels are predicted as its class. Ignored pixels
    belong to no object. Counts of objects and of found objects per (class, size) are sums, so
    per-image updates and `all_reduce()` over torchrun processes give the dataset's recall.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.reset()

    def reset(self) -> None:
        """Forget every counted object."""
        # counts[0]: objects, counts[1]: objects found; (class, size bin).
        self.counts = torch.zeros(2, self.num_classes, len(SIZE_BINS), dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Count the objects of integer label maps `target` and whether `pred` finds them,
        both `(N, H, W)` or `(H, W)`; each image is labelled on its own."""
        for image_pred, image_target in _image_pairs(pred, target):
            for class_id in np.unique(image_target):
                if 0 <= class_id < self.num_classes:
                    self._count_class(int(class_id), image_pred == class_id,
                                      image_target == class_id)

    def _count_class(self, class_id: int, predicted: np.ndarray, truth: np.ndarray) -> None:
        objects, n = ndimage.label(truth)
        area = np.bincount(objects.ravel(), minlength=n + 1)[1:]
        covered = np.bincount(objects.ravel(), weights=predicted.ravel(), minlength=n + 1)[1:]
        size = np.digitize(area, SIZE_LIMITS)  # 0 small, 1 medium, 2 large
        found = 2 * covered >= area  # at least half of the object's pixels
        self.counts[0, class_id] += torch.from_numpy(np.bincount(size, minlength=3))
        self.counts[1, class_id] += torch.from_numpy(np.bincount(size[found], minlength=3))

    def all_reduce(self) -> None:
        """Sum the counts over all torchrun processes; a no-op when not distributed."""
        _all_reduce_sum(self.counts)

    def compute(self) -> dict:
        """Plain lists in class order: `recall[size]` (found / objects, NaN where a class has no
        object of that size) for each of `SIZE_BINS` and `all` sizes, `objects[size]` and
        `found[size]` (the counts), `mean[size]` (the mean over classes that have objects),
        and the rule that formed the objects (`connectivity`, `min_cover`, `size_limits`)."""
        objects, found = self.counts.double()
        objects = torch.cat([objects, objects.sum(1, keepdim=True)], 1)
        found = torch.cat([found, found.sum(1, keepdim=True)], 1)
        recall = found / objects  # 0/0 -> NaN: no object of that class and size
        keys = (*SIZE_BINS, "all")
        return {
            "recall": {key: recall[:, i].tolist() for i, key in enumerate(keys)},
            "mean": {key: float(recall[:, i].nanmean()) for i, key in enumerate(keys)},
            "objects": {key: objects[:, i].long().tolist() for i, key in enumerate(keys)},
            "found": {key: found[:, i].long().tolist() for i, key in enumerate(keys)},
            "connectivity": 4,
            "min_cover": 0.5,
            "size_limits": list(SIZE_LIMITS),
        }


def format_object_recall(recall: dict, class_names: Sequence[str]) -> str:
    """A printable table of `ObjectRecall.compute()`: per class and size, recall (objects)."""
    width = max(12, *(len(name) for name in class_names))
    keys = (*SIZE_BINS, "all")
    lines = [
        "Object recall: ground-truth 4-connected components found (>= half their pixels "
        "predicted as their class), by area: small < 32^2, medium < 96^2, large",
        f"  {'class':<{width}}" + "".join(f"  {key:>14}" for key in keys),
    ]
    rows = [(name, i) for i, name in enumerate(class_names)] + [("mean", None)]
    for name, i in rows:
        cells = []
        for key in keys:
            if i is None:
                cells.append(_percent(recall["mean"][key]))
            else:
                cells.append(f"{_percent(recall['recall'][key][i])} ({recall['objects'][key][i]})")
        lines.append(f"  {name:<{width}}" + "".join(f"  {cell:>14}" for cell in cells))
    return "\n".join(lines)


def format_binary_scores(scores: dict, class_names: Sequence[str],
                         seed_threshold: float | None = None) -> str:
    """The ISBI 2012 line of a two-class evaluation (`pixel_error`, `adapted_rand_error`,
    `watershed_rand_error`, `challenge_pixel_error` and `challenge_rand_error` in `scores`, as `validate(detailed=True)`
    adds them); "" when they
    are not there. `seed_threshold`: the watershed seeds' probability threshold, to say how
    those cells were grown."""
    if "adapted_rand_error" not in scores:
        return ""
    cell = class_names[1]
    line = (
        f"ISBI 2012 measures: pixel error {scores['pixel_error']:.4f} (pooled); adapted Rand "
        f"error {scores['adapted_rand_error']:.4f} (mean over images; foreground-restricted: "
        f"segments are the 4-connected {cell!r} regions, scored on the truth's {cell!r} pixels)"
    )
    if "watershed_rand_error" in scores:
        seeds = f"where P({cell}) > {seed_threshold}" if seed_threshold else "seeds"
        line += (f"; of the watershed cells {scores['watershed_rand_error']:.4f} (grown from "
                 f"{seeds} over 1 - P({cell}))")
    if "challenge_pixel_error" in scores:
        line += (f"; the challenge's pixel error {scores['challenge_pixel_error']:.4f} (1 - the "
                 f"best F-score of {cell!r} pixels over thresholds 0, 0.1, ..., 1 of P({cell}))")
    if "challenge_rand_error" in scores:
        line += (f"; the challenge's Rand error {scores['challenge_rand_error']:.4f} (1 - the "
                 "best F-score of the foreground-restricted Rand index over those thresholds, "
                 "unassigned pixels as segments of their own)")
    return line


class MeanAdaptedRandError:
    """`adapted_rand_error` of each image, averaged over the images that define it.

    Sums of the per-image errors and of the images counted, so `all_reduce()` over torchrun
    processes gives the dataset's mean. `foreground` is the class whose 4-connected regions
    are the segments (ISBI 2012: 1, the cell interior)."""

    def __init__(self, foreground: int = 1) -> None:
        self.foreground = foreground
        self.state = torch.zeros(2, dtype=torch.float64)  # sum of errors, images counted

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Score integer label maps `(N, H, W)` or `(H, W)`, each image on its own: the
        segments are the 4-connected foreground regions of `pred` (`adapted_rand_error`)."""
        for image_pred, image_target in _image_pairs(pred, target):
            self._add(adapted_rand_error(image_pred, image_target, self.foreground))

    def update_segments(self, segments: torch.Tensor, target: torch.Tensor) -> None:
        """Score segmentations `(N, H, W)` or `(H, W)` (one id per segment, for example
        `pixelwise.postprocess.watershed_cells`) against label maps `target`, each image on
        its own (`segment_rand_error`)."""
        for image_segments, image_target in _image_pairs(segments, target):
            self._add(segment_rand_error(image_segments, image_target, self.foreground))

    def _add(self, error: float) -> None:
        if not math.isnan(error):
            self.state += torch.tensor([error, 1.0], dtype=torch.float64)

    def all_reduce(self) -> None:
        """Sum over all torchrun processes; a no-op when not distributed."""
        _all_reduce_sum(self.state)

    def compute(self) -> float:
        """The mean error over the images counted (NaN when none)."""
        total, count = self.state.tolist()
        return total / count if count else math.nan


# The ISBI 2012 challenge's thresholds of a probability map: 0, 0.1, ..., 1 (its Fiji script's
# `getPixelErrorMaximalFScore(0.0, 1.0, 0.1)`).
CHALLENGE_THRESHOLDS = tuple(step / 10 for step in range(11))


class MaxFScorePixelError:
    """The ISBI 2012 challenge's pixel error: 1 - the maximal F-score of foreground pixels over
    thresholds of the foreground probability (Arganda-Carreras et al. 2015, "Crowdsourcing the
    creation of image segmentation algorithms for connectomics"; the U-Net paper's 0.0611).

    At each threshold `t` a pixel is called foreground where its probability exceeds `t`; the
    true, false positives and false negatives are pooled over all images, the F-score is
    `2 TP / (2 TP + FP + FN)` (0 when nothing is foreground in either), and the error is 1 minus
    the best F-score over the thresholds. For ISBI 2012 the foreground is class 1, the cells
    (white, as in the challenge's label images); `ignore_index` pixels are not counted. Unlike
    `pixel_error` (the fraction of wrong pixels at the label map's own threshold), it ignores
    the true negatives and picks the best threshold, so it is the smaller of the two.
    """

    def __init__(self, foreground: int = 1, ignore_index: int = 255,
                 thresholds: Sequence[float] = CHALLENGE_THRESHOLDS) -> None:
        self.foreground, self.ignore_index = foreground, ignore_index
        self.thresholds = torch.tensor(sorted(thresholds), dtype=torch.float64)  # searchsorted
        self.state = torch.zeros(len(thresholds), 3, dtype=torch.float64)  # TP, FP, FN

    def update(self, probability: torch.Tensor, target: torch.Tensor) -> None:
        """Add foreground probabilities `(N, H, W)` or `(H, W)` against label maps `target` of
        the same shape."""
        valid = target != self.ignore_index
        truth = (target[valid] == self.foreground).cpu()
        # How many thresholds each pixel's probability exceeds: it is called foreground at the
        # thresholds below that count, so the positives at threshold k are the pixels whose
        # count is above k (a reversed cumulative sum; memory stays one value per pixel).
        exceeded = torch.searchsorted(self.thresholds, probability[valid].double().cpu())
        bins = len(self.thresholds) + 1
        called = [torch.bincount(exceeded[group], minlength=bins).double()
                  for group in (truth, ~truth)]
        true_positives, false_positives = (
            count.flip(0).cumsum(0).flip(0)[1:] for count in called)
        self.state[:, 0] += true_positives
        self.state[:, 1] += false_positives
        self.state[:, 2] += float(truth.sum()) - true_positives

    def all_reduce(self) -> None:
        """Sum over all torchrun processes; a no-op when not distributed."""
        _all_reduce_sum(self.state)

    def compute(self) -> float:
        """1 - the best F-score over the thresholds (NaN until some pixel is foreground in
        the truth or in a threshold's prediction)."""
        tp, fp, fn = self.state.unbind(1)
        if float(self.state.sum()) == 0:
            return math.nan
        denominator = 2 * tp + fp + fn
        f_score = torch.where(denominator > 0, 2 * tp / denominator.clamp_min(1), 0.0)
        return 1.0 - float(f_score.max())


def rand_pair_counts(segments: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor,
                     foreground: int = 1) -> tuple[float, float, float]:
    """Pair counts `(both, truth, guess)` of the ISBI 2012 challenge's foreground-restricted
    Rand index of a segmentation `segments` `(H, W)` (one id per segment, 0 for unassigned
    pixels, e.g. a predicted membrane) against a binary label map `target`.

    After the organisers' Fiji code (`trainableSegmentation.metrics.RandError`,
    `getForegroundRestrictedRandIndexStatsN2`): only pixels in the truth's `foreground`
    4-connected regions are scored; a scored pixel that `segments` leaves unassigned (0) is a
    segment of its own, not one big segment as in `segment_rand_error`. With `n_ij` the scored
    pixels in true segment `i` and predicted segment `j`: `both = sum n_ij^2`, `truth = sum_i
    a_i^2`, `guess = sum_j b_j^2` (ordered pairs, a pixel paired with itself included).
    """
    truth, scored = _truth_segments(target, foreground)
    return _pair_counts(truth, _numpy(segments)[scored].astype(np.int64))


def _pair_counts(truth: np.ndarray, guess: np.ndarray) -> tuple[float, float, float]:
    """`rand_pair_counts` of the scored pixels' true and predicted segment ids."""
    unassigned = float((guess == 0).sum())
    assigned = guess > 0
    _, joint = np.unique(truth[assigned] * (int(guess.max(initial=0)) + 1) + guess[assigned],
                         return_counts=True)
    truth_sizes, guess_sizes = np.bincount(truth), np.bincount(guess[assigned])
    return (float(joint @ joint) + unassigned, float(truth_sizes @ truth_sizes),
            float(guess_sizes @ guess_sizes) + unassigned)


class MaxFScoreRandError:
    """The ISBI 2012 challenge's Rand error: 1 - the maximal F-score of the foreground-restricted
    Rand index over thresholds of the foreground probability (the definition of the U-Net
    paper's 0.0382; Arganda-Carreras et al. 2015).

    At each threshold `t` the predicted segments are the 4-connected regions where the
    probability exceeds `t`, and the pixels at or below it are unassigned; `rand_pair_counts`
    scores them against the truth's foreground regions. The pair counts are pooled over all
    images (as `MaxFScorePixelError` pools pixels), the F-score is `2 both / (truth + guess)`
    (precision `both / guess`, recall `both / truth`), and the error is 1 minus the best F-score
    over the thresholds. The challenge later ranked by this score after thinning the predicted
    borders to one pixel, which this class does not do (thinning hands border pixels to the
    cells beside them, which tends to lower the error).
    """

    def __init__(self, foreground: int = 1,
                 thresholds: Sequence[float] = CHALLENGE_THRESHOLDS) -> None:
        self.foreground = foreground
        self.thresholds = tuple(sorted(thresholds))
        self.state = torch.zeros(len(self.thresholds), 3, dtype=torch.float64)  # both, truth, guess

    def update(self, probability: torch.Tensor, target: torch.Tensor) -> None:
        """Add foreground probabilities `(N, H, W)` or `(H, W)` against label maps `target` of
        the same shape, each image on its own."""
        for image_probability, image_target in _image_pairs(probability, target):
            truth, scored = _truth_segments(image_target, self.foreground)  # once per image
            for row, threshold in enumerate(self.thresholds):
                guess = ndimage.label(image_probability > threshold)[0][scored].astype(np.int64)
                self.state[row] += torch.tensor(_pair_counts(truth, guess), dtype=torch.float64)

    def all_reduce(self) -> None:
        """Sum over all torchrun processes; a no-op when not distributed."""
        _all_reduce_sum(self.state)

    def compute(self) -> float:
        """1 - the best F-score over the thresholds (NaN until some truth pixel is scored)."""
        both, truth, guess = self.state.unbind(1)
        if float(truth.max()) == 0:
            return math.nan
        return 1.0 - float((2 * both / (truth + guess)).max())
