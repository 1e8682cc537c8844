"""Evaluation: the FCN paper's metrics over a dataset, as numbers, a table, JSON and figures.

:func:`validate` is the inner pass the training loop also uses; :func:`evaluate` is the public
entry point behind ``pixelwise evaluate CKPT --data ...``: it rebuilds the model from one
``.safetensors`` file, normalises with the checkpoint's mean/std, and writes ``metrics.json``,
``confusion_matrix.png`` and ``per_class_iou.png``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pixelwise.checkpoint import atomic_write_bytes, load_model
from pixelwise.device import SINGLE_PROCESS, DistInfo, pick_device
from pixelwise.engine.data_setup import match_target
from pixelwise.errors import CheckpointError


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
    pixel_accuracy``) and ``adapted_rand_error`` (``MeanAdaptedRandError``); they label
    connected components on the CPU, so ``evaluate`` asks for them and training does not.
    """
    from pixelwise.metrics import ConfusionMatrix, MeanAdaptedRandError, ObjectRecall
    from pixelwise.models import same_size_output

    was_training = model.training
    model.eval()
    net = same_size_output(model)
    matrix = ConfusionMatrix(num_classes, ignore_index)
    extra = {"object_recall": ObjectRecall(num_classes, ignore_index)} if detailed else {}
    if detailed and num_classes == 2:
        extra["adapted_rand_error"] = MeanAdaptedRandError(foreground=1)
    bar = tqdm(loader, desc="validate", unit="batch", leave=False,
               disable=not (progress and dist_info.is_main), dynamic_ncols=True)
    for image, target in bar:
        image = image.to(device, memory_format=memory_format)
        logits = net(image)
        pred, target = logits.argmax(1), match_target(target.to(device), logits)
        for meter in (matrix, *extra.values()):
            meter.update(pred, target)
        if observe is not None:
            observe(image, pred, target)
    for meter in (matrix, *extra.values()):
        meter.all_reduce()
    model.train(was_training)
    scores = matrix.compute()
    scores.update({key: meter.compute() for key, meter in extra.items()})
    if "adapted_rand_error" in scores:
        scores["pixel_error"] = 1.0 - scores["pixel_accuracy"]
    return scores


def evaluate(checkpoint: str | Path, dataset: str, root: str = "", split: str = "val",
             out_dir: str | Path | None = None, tta: bool = False, batch_size: int = 1,
             device: str = "auto", progress: bool = True, tta_scales: tuple[float, ...] = (1.0,),
             report: bool | str | Path = False, **options: Any) -> dict[str, Any]:
    """Evaluate the model in ``checkpoint`` on ``dataset``/``split``; return the scores.

    ``tta`` averages the softmax of the image and its horizontal flip, ``tta_scales`` over
    rescaled copies (:func:`pixelwise.inference.tta.tta_logits`).

    The returned dict is ``ConfusionMatrix.compute()`` plus ``classes``, ``table`` (the printed
    FCN metrics table) and ``files`` (what was written under ``out_dir``, default: a folder named
    ``eval-<split>`` beside the checkpoint). ``options`` go to ``open_dataset``. ``report``
    (True: ``report.html`` in the output folder, or a path) also writes the HTML report of
    :mod:`pixelwise.report` and adds ``per_image_iou`` (dataset order) to the scores.
    """
    from pixelwise.data import open_dataset
    from pixelwise.data.transforms import eval_preset
    from pixelwise.metrics import format_binary_scores, format_object_recall, format_table
    from pixelwise.plots import confusion_matrix_png, per_class_iou_png

    model, meta = load_model(checkpoint)
    torch_device = pick_device(device)
    model.to(torch_device, memory_format=torch.channels_last)  # faster on CPU and CUDA alike
    data = open_dataset(dataset, root, split, transforms=eval_preset(mean=meta.mean, std=meta.std),
                        **options)
    if data.info.num_classes != meta.num_classes:
        raise CheckpointError(
            f"checkpoint {checkpoint} must have the {dataset} data's {data.info.num_classes} "
            f"classes ({', '.join(data.info.classes)}), got {meta.num_classes} "
            f"({', '.join(meta.classes)}); try a checkpoint trained on this kind of data"
        )
    from pixelwise.inference.tta import with_tta
    from pixelwise.models import same_size_output

    model = with_tta(same_size_output(model), flips=("h",) if tta else (), scales=tta_scales)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    gallery = None
    if report:
        from pixelwise.report import WorstImages

        gallery = WorstImages(meta.num_classes, meta.ignore_index, meta.mean, meta.std)
    scores = validate(model, loader, meta.num_classes, meta.ignore_index, torch_device,
                      torch.channels_last, progress=progress, observe=gallery, detailed=True)
    if gallery is not None:
        scores["per_image_iou"] = gallery.per_image_iou
    scores["classes"] = list(meta.classes)
    tables = (format_table(scores, meta.classes), format_binary_scores(scores, meta.classes),
              format_object_recall(scores["object_recall"], meta.classes))
    scores["table"] = "\n".join(table for table in tables if table)
    out = Path(out_dir) if out_dir is not None else Path(checkpoint).parent / f"eval-{split}"
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "metrics": out / "metrics.json",
        "confusion_matrix": confusion_matrix_png(scores["matrix"], meta.classes,
                                                 out / "confusion_matrix.png"),
        "per_class_iou": per_class_iou_png(scores["iou"], meta.classes, out / "per_class_iou.png"),
    }
    scores["files"] = {key: str(path) for key, path in files.items()}
    if gallery is not None:
        from pixelwise.report import write_report

        about = {"checkpoint": f"{checkpoint} (epoch {meta.epoch}, step {meta.step})",
                 "model": f"{meta.name} {meta.options}",
                 "data": f"{dataset} {root}".strip(), "split": split, "options": options,
                 "TTA": f"flips {'h' if tta else 'none'}, scales {list(tta_scales)}",
                 "device": str(torch_device)}
        names = [Path(s.image).name for s in data.samples] if hasattr(data, "samples") else None
        path = out / "report.html" if report is True else Path(report)
        scores["files"]["report"] = str(write_report(
            path, scores, meta.palette, about, gallery.worst, meta.ignore_index, names))
    atomic_write_bytes(files["metrics"], json.dumps(json_safe(scores), indent=2).encode())
    return scores


def json_safe(value: Any) -> Any:
    """NaN is not JSON: write it as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value
