"""Evaluation: the FCN paper's metrics over a dataset, as numbers, a table, JSON and figures.

:func:`validate` is the inner pass the training loop also uses; :func:`evaluate` is the public
entry point behind ``pixelwise evaluate CKPT --data ...``: it rebuilds the model from one
``.safetensors`` file, normalises with the checkpoint's mean/std, and writes ``metrics.json``,
``confusion_matrix.png`` and ``per_class_iou.png``.

Under ``torchrun`` each rank scores images ``r, r + W, ...`` (nothing repeated) and the confusion
matrix is summed over ranks, so the scores equal a single process's exactly; rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pixelwise.checkpoint import ModelMeta, atomic_write_bytes, load_model
from pixelwise.device import SINGLE_PROCESS, DistInfo, pick_device
from pixelwise.engine.data_setup import batches_of, match_target
from pixelwise.engine.distributed import process_group, shard_without_padding
from pixelwise.errors import CheckpointError
from pixelwise.labels import class_ids

if TYPE_CHECKING:
    from pixelwise.data.info import DatasetInfo

log = logging.getLogger("pixelwise")


@torch.inference_mode()
def validate(model: nn.Module, loader: DataLoader, num_classes: int, ignore_index: int,
             device: torch.device, memory_format: torch.memory_format = torch.contiguous_format,
             dist_info: DistInfo = SINGLE_PROCESS, progress: bool = True,
             detailed: bool = False,
             observe: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
             ) -> dict[str, Any]:
    """Scores of ``model`` on ``loader`` (``ConfusionMatrix.compute()``, summed over ranks).

    Whole validation images of any size are scored at their full size: a ``padding="valid"``
    U-Net runs on the mirror-extended image (:class:`pixelwise.models.MirrorExtended`).
    ``observe(images, predictions, targets)`` sees every batch as scored (the report's gallery).
    ``detailed`` adds ``object_recall`` (``ObjectRecall.compute()``) and, with two classes,
    the ISBI 2012 measures with class 1 as the foreground: ``pixel_error`` (pooled, ``1 -
    pixel_accuracy``), ``adapted_rand_error`` (``MeanAdaptedRandError`` of the label maps'
    4-connected cell regions), ``watershed_rand_error`` (the same error of the cells
    ``pixelwise.postprocess.watershed_cells`` grows from the class-1 probability) and
    ``challenge_pixel_error`` (``MaxFScorePixelError`` of the class-1 probability: the ISBI
    challenge's definition, 1 - the best F-score of cell pixels over thresholds 0, 0.1, ..., 1)
    and ``challenge_rand_error`` (``MaxFScoreRandError``: the challenge's Rand error, 1 - the
    best F-score of the foreground-restricted Rand index over the same thresholds);
    they label connected components on the CPU, so ``evaluate`` asks for them and training
    does not.
    """
    from pixelwise.metrics import ConfusionMatrix, MeanAdaptedRandError, ObjectRecall
    from pixelwise.models import same_size_output

    was_training = model.training
    model.eval()
    net = same_size_output(model)
    matrix = ConfusionMatrix(num_classes, ignore_index)
    extra = {"object_recall": ObjectRecall(num_classes, ignore_index)} if detailed else {}
    of_proba = None
    if detailed and num_classes == 2:
        extra["adapted_rand_error"] = MeanAdaptedRandError(foreground=1)
        of_proba = _CellProbabilityScores(ignore_index)
    total = len(loader) if isinstance(loader, Sized) else None
    with batches_of(loader) as batches:
        for image, target in tqdm(batches, desc="validate", unit="batch", total=total,
                                  leave=False, disable=not (progress and dist_info.is_main),
                                  dynamic_ncols=True):
            image = image.to(device, memory_format=memory_format)
            logits = net(image)
            pred, target = class_ids(logits), match_target(target.to(device), logits)
            for meter in (matrix, *extra.values()):
                meter.update(pred, target)
            if of_proba is not None:
                of_proba.update(logits, target)
            if observe is not None:
                observe(image, pred, target)
    if of_proba is not None:
        extra.update(of_proba.meters)
    for meter in (matrix, *extra.values()):
        meter.all_reduce()
    model.train(was_training)
    scores = matrix.compute()
    scores.update({key: meter.compute() for key, meter in extra.items()})
    if "adapted_rand_error" in scores:
        scores["pixel_error"] = 1.0 - scores["pixel_accuracy"]
    return scores


class _CellProbabilityScores:
    """The two-class scores of the class-1 (cell) probability rather than of the label map:
    ``watershed_rand_error`` (Rand error of the watershed cells), ``challenge_pixel_error`` and
    ``challenge_rand_error`` (the ISBI challenge's pixel and Rand errors), by their keys in
    ``meters``."""

    def __init__(self, ignore_index: int) -> None:
        from pixelwise.metrics import MaxFScorePixelError, MaxFScoreRandError, MeanAdaptedRandError

        self.cells = MeanAdaptedRandError(foreground=1)
        self.pixels = MaxFScorePixelError(foreground=1, ignore_index=ignore_index)
        self.pairs = MaxFScoreRandError(foreground=1)
        self.meters = {"watershed_rand_error": self.cells, "challenge_pixel_error": self.pixels,
                       "challenge_rand_error": self.pairs}

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of two-class logits ``(N, 2, H, W)`` against label maps ``(N, H, W)``."""
        foreground = logits.float().softmax(1)[:, 1]
        self.cells.update_segments(_watershed_cells(foreground), target)
        self.pixels.update(foreground, target)
        self.pairs.update(foreground, target)


def _watershed_cells(foreground: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` cells of class-1 probabilities ``(N, H, W)``: ``watershed_cells`` of each
    image."""
    from pixelwise.postprocess import watershed_cells

    images = foreground.cpu().numpy()
    return torch.from_numpy(np.stack([watershed_cells(image) for image in images]))


def evaluate(checkpoint: str | Path, dataset: str, root: str = "", split: str = "val",
             out_dir: str | Path | None = None, tta: bool | str = False, batch_size: int = 1,
             device: str = "auto", progress: bool = True, tta_scales: tuple[float, ...] = (1.0,),
             report: bool | str | Path = False, backend: str | None = None,
             calibration: str | Path | None = None,
             strict: bool = False, **options: Any) -> dict[str, Any]:
    """Evaluate the model in ``checkpoint`` on ``dataset``/``split``; return the scores.

    ``tta`` averages the softmax of the image and its horizontal flip (True or "h"), or of its 8
    rotations and mirrors ("d4"), ``tta_scales`` over rescaled copies
    (:func:`pixelwise.inference.tta.tta_logits`). ``backend`` runs the model
    as :class:`~pixelwise.inference.predict.Segmenter` does (None: PyTorch fp32); "onnx-int8"
    and "auto" calibrate on the folder ``calibration``, default the split's first images.

    The returned dict is ``ConfusionMatrix.compute()`` plus ``classes``, ``table`` (the printed
    FCN metrics table), ``files`` (what was written under ``out_dir``, default: a folder named
    ``eval-<split>`` beside the checkpoint; written by rank 0 alone under torchrun) and
    ``rank``, ``evaluated`` (the checkpoint, dataset, split and TTA settings, also in the
    figures' titles; the default folder is ``eval-<split>-tta`` with TTA). Before any image is
    scored the checkpoint must match the data: its input channels and class count (else
    CheckpointError), and its class names (else a warning naming both lists, or CheckpointError
    with ``strict``). ``options`` go to ``open_dataset``. ``report`` (True: ``report.html`` in the
    output folder, or a path) also writes the HTML report of :mod:`pixelwise.report` and adds
    ``per_image_iou`` (dataset order; under torchrun, rank 0's share) to the scores.
    """
    from pixelwise.data import open_dataset
    from pixelwise.data.transforms import eval_preset
    from pixelwise.inference.tta import tta_views, with_tta
    from pixelwise.metrics import format_binary_scores, format_object_recall, format_table
    from pixelwise.models import same_size_output
    from pixelwise.postprocess import WATERSHED_SEED_THRESHOLD

    flips = list(tta_views(tta))
    with process_group(pick_device(device).type == "cuda") as dist_info:
        model, meta = load_model(checkpoint)
        torch_device = pick_device(device, dist_info)
        model.to(torch_device, memory_format=torch.channels_last)  # faster on CPU and CUDA alike
        data = open_dataset(dataset, root, split,
                            transforms=eval_preset(mean=meta.mean, std=meta.std), **options)
        check_matches_data(checkpoint, meta, data.info, dataset, strict)
        views = lambda module: with_tta(same_size_output(module), flips=flips, scales=tta_scales)  # noqa: E731
        if backend is not None:  # "auto" times each backend through the same views
            model = _with_backend(model, backend, torch_device, meta, data, calibration, views)
        model = views(model)
        loader = DataLoader(shard_without_padding(data, dist_info), batch_size=batch_size,
                            shuffle=False)
        gallery = None
        if report:
            from pixelwise.report import WorstImages

            gallery = WorstImages(meta.num_classes, meta.ignore_index, meta.mean, meta.std)
        scores = validate(model, loader, meta.num_classes, meta.ignore_index, torch_device,
                          torch.channels_last, dist_info, progress=progress, observe=gallery,
                          detailed=True)
        if gallery is not None:
            scores["per_image_iou"] = gallery.per_image_iou
        evaluated = {"checkpoint": str(checkpoint), "dataset": dataset, "root": str(root),
                     "split": split, "tta": {"flips": flips, "scales": list(tta_scales)}}
        scores["classes"] = list(meta.classes)
        scores["evaluated"] = evaluated
        tables = (format_table(scores, meta.classes),
                  format_binary_scores(scores, meta.classes, WATERSHED_SEED_THRESHOLD),
                  format_object_recall(scores["object_recall"], meta.classes))
        scores["table"] = "\n".join(table for table in tables if table)
        if dist_info.is_main:
            augmented = bool(flips) or tuple(tta_scales) != (1.0,)
            default_out = Path(checkpoint).parent / f"eval-{split}{'-tta' if augmented else ''}"
            out = Path(out_dir) if out_dir is not None else default_out
            _write_figures(scores, out, describe_evaluation(evaluated))
            if gallery is not None:
                from pixelwise.report import write_report

                about = {"checkpoint": f"{checkpoint} (epoch {meta.epoch}, step {meta.step})",
                         "model": f"{meta.name} {meta.options}",
                         "data": f"{dataset} {root}".strip(), "split": split, "options": options,
                         "TTA": f"flips {'+'.join(flips) or 'none'}, scales {list(tta_scales)}",
                         "device": str(torch_device)}
                names = ([Path(s.image).name for s in data.samples] if hasattr(data, "samples")
                         else None)
                path = out / "report.html" if report is True else Path(report)
                scores["files"]["report"] = str(write_report(
                    path, scores, meta.palette, about, gallery.worst, meta.ignore_index, names))
            atomic_write_bytes(out / "metrics.json",
                               json.dumps(json_safe(scores), indent=2).encode())
        scores["rank"] = dist_info.rank
        return scores


def _write_figures(scores: dict[str, Any], out: Path, subtitle: str) -> None:
    """The confusion matrix and per-class IoU figures into ``out``, titled with ``subtitle``;
    ``scores["files"]`` lists them with ``metrics.json``, which the caller writes last (it
    records every file)."""
    from pixelwise.plots import confusion_matrix_png, per_class_iou_png

    out.mkdir(parents=True, exist_ok=True)
    classes = scores["classes"]
    files = {
        "metrics": out / "metrics.json",
        "confusion_matrix": confusion_matrix_png(scores["matrix"], classes,
                                                 out / "confusion_matrix.png", subtitle),
        "per_class_iou": per_class_iou_png(scores["iou"], classes, out / "per_class_iou.png",
                                           subtitle),
    }
    scores["files"] = {key: str(path) for key, path in files.items()}


def _with_backend(model: nn.Module, backend: str, device: torch.device, meta: ModelMeta,
                  data: Dataset, calibration: str | Path | None,
                  views: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """``model`` run as ``backend`` (the "auto" choice is logged), calibrated on the folder
    ``calibration`` or the first ``CALIBRATION_IMAGES`` images of ``data`` (normalised; for a
    valid U-Net the centre tile prediction would give it); "auto" times each backend wrapped
    in ``views``, the test-time augmentation evaluation runs."""
    from pixelwise.inference.backends import CALIBRATED, build_backend, choose_backend
    from pixelwise.inference.predict import (
        CALIBRATION_IMAGES,
        TILE,
        Segmenter,
        calibration_images,
        centre_tile,
    )
    from pixelwise.models.geometry import geometry_of

    if backend not in CALIBRATED:
        return build_backend(backend, model, device, meta.in_channels)
    if calibration is not None:  # a folder of image files, prepared as prediction prepares them
        prepare = Segmenter(model, meta, device).calibration_input
        inputs = [prepare(image) for image in calibration_images(calibration)]
    else:
        geometry = geometry_of(model)
        inputs = [data[i][0] for i in range(min(CALIBRATION_IMAGES, len(data)))]
        if not geometry.same_size:
            inputs = [centre_tile(x, geometry.nearest_input_size(TILE)) for x in inputs]
        inputs = [x[None].to(device) for x in inputs]
    if backend == "auto":
        return choose_backend(model, device, meta.in_channels, inputs, wrap=views)[0]
    return build_backend(backend, model, device, meta.in_channels, inputs)


def check_matches_data(checkpoint: str | Path, meta: ModelMeta, info: DatasetInfo, dataset: str,
                       strict: bool) -> None:
    """CheckpointError unless the checkpoint takes the data's image channels and classes; class
    names that differ are a warning naming both lists (an error with ``strict``)."""
    if meta.in_channels != info.in_channels:
        raise CheckpointError(
            f"checkpoint {checkpoint} must take {info.in_channels}-channel images like the "
            f"{dataset} data's, got a model of {meta.in_channels}-channel images; try a "
            f"checkpoint trained on {info.in_channels}-channel images, or the data converted to "
            f"{meta.in_channels} channel(s)"
        )
    if info.num_classes != meta.num_classes:
        raise CheckpointError(
            f"checkpoint {checkpoint} must have the {dataset} data's {info.num_classes} "
            f"classes ({', '.join(info.classes)}), got {meta.num_classes} "
            f"({', '.join(meta.classes)}); try a checkpoint trained on this kind of data"
        )
    if list(meta.classes) != list(info.classes):
        if strict:
            raise CheckpointError(
                f"checkpoint {checkpoint} must name the {dataset} data's classes "
                f"{list(info.classes)}, got {list(meta.classes)}; try a checkpoint trained on "
                "this data, or leave out --strict (strict=False) to score class i as class i"
            )
        log.warning("checkpoint %s names its classes %s, the %s data %s: scoring class i of one "
                    "as class i of the other (--strict makes this an error)", checkpoint,
                    list(meta.classes), dataset, list(info.classes))


def describe_evaluation(evaluated: dict[str, Any]) -> str:
    """One line for the figures' titles: ``best.safetensors on camvid/val, TTA flips h ...``."""
    from pixelwise.inference.tta import DIHEDRAL

    tta = evaluated["tta"]
    scales = [scale for scale in tta["scales"] if scale != 1.0]
    views = ("8 rotations and mirrors" if tuple(tta["flips"]) == DIHEDRAL
             else f"flip {'+'.join(tta['flips'])}")
    parts = ([views] if tta["flips"] else []) + (
        [f"scales {' '.join(f'{s:g}' for s in tta['scales'])}"] if scales else [])
    return (f"{Path(evaluated['checkpoint']).name} on {evaluated['dataset']}/"
            f"{evaluated['split']}, {'TTA ' + ', '.join(parts) if parts else 'no TTA'}")


def json_safe(value: Any) -> Any:
    """NaN is not JSON: write it as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value
