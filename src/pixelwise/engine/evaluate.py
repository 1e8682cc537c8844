"""Evaluation: the FCN paper's metrics over a dataset, as numbers, a table, JSON and figures.

:func:`validate` is the inner pass the training loop also uses; :func:`evaluate` is the public
entry point behind ``pixelwise evaluate CKPT --data ...``: it rebuilds the model from one
``.safetensors`` file, normalises with the checkpoint's mean/std, and writes ``metrics.json``,
``confusion_matrix.png`` and ``per_class_iou.png``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pixelwise.checkpoint import ModelMeta, atomic_write_bytes, load_model
from pixelwise.device import SINGLE_PROCESS, DistInfo, pick_device
from pixelwise.engine.data_setup import match_target
from pixelwise.errors import CheckpointError

if TYPE_CHECKING:
    from pixelwise.data.info import DatasetInfo

log = logging.getLogger("pixelwise")


@torch.inference_mode()
def validate(model: nn.Module, loader: DataLoader, num_classes: int, ignore_index: int,
             device: torch.device, memory_format: torch.memory_format = torch.contiguous_format,
             dist_info: DistInfo = SINGLE_PROCESS, progress: bool = True) -> dict[str, Any]:
    """Scores of ``model`` on ``loader`` (``ConfusionMatrix.compute()``, summed over ranks).

    Whole validation images of any size are scored at their full size: a ``padding="valid"``
    U-Net runs on the mirror-extended image (:class:`pixelwise.models.MirrorExtended`).
    """
    from pixelwise.metrics import ConfusionMatrix
    from pixelwise.models import same_size_output

    was_training = model.training
    model.eval()
    net = same_size_output(model)
    matrix = ConfusionMatrix(num_classes, ignore_index)
    bar = tqdm(loader, desc="validate", unit="batch", leave=False,
               disable=not (progress and dist_info.is_main), dynamic_ncols=True)
    for image, target in bar:
        image = image.to(device, memory_format=memory_format)
        logits = net(image)
        matrix.update(logits.argmax(1), match_target(target.to(device), logits))
    matrix.all_reduce()
    model.train(was_training)
    return matrix.compute()


def evaluate(checkpoint: str | Path, dataset: str, root: str = "", split: str = "val",
             out_dir: str | Path | None = None, tta: bool = False, batch_size: int = 1,
             device: str = "auto", progress: bool = True, tta_scales: tuple[float, ...] = (1.0,),
             strict: bool = False, **options: Any) -> dict[str, Any]:
    """Evaluate the model in ``checkpoint`` on ``dataset``/``split``; return the scores.

    ``tta`` averages the softmax of the image and its horizontal flip, ``tta_scales`` over
    rescaled copies (:func:`pixelwise.inference.tta.tta_logits`).

    Before any image is scored the checkpoint must match the data: its input channels and class
    count (else CheckpointError), and its class names (else a warning naming both lists, or
    CheckpointError with ``strict``).

    The returned dict is ``ConfusionMatrix.compute()`` plus ``classes``, ``evaluated`` (the
    checkpoint, dataset, split and TTA settings, also in the figures' titles), ``table`` (the
    printed FCN metrics table) and ``files`` (what was written under ``out_dir``, default: a
    folder ``eval-<split>``, or ``eval-<split>-tta`` with TTA, beside the checkpoint).
    ``options`` go to ``open_dataset``.
    """
    from pixelwise.data import open_dataset
    from pixelwise.data.transforms import eval_preset
    from pixelwise.metrics import format_table
    from pixelwise.plots import confusion_matrix_png, per_class_iou_png

    model, meta = load_model(checkpoint)
    torch_device = pick_device(device)
    model.to(torch_device, memory_format=torch.channels_last)  # faster on CPU and CUDA alike
    data = open_dataset(dataset, root, split, transforms=eval_preset(mean=meta.mean, std=meta.std),
                        **options)
    check_matches_data(checkpoint, meta, data.info, dataset, strict)
    from pixelwise.inference.tta import with_tta
    from pixelwise.models import same_size_output

    model = with_tta(same_size_output(model), flips=("h",) if tta else (), scales=tta_scales)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    scores = validate(model, loader, meta.num_classes, meta.ignore_index, torch_device,
                      torch.channels_last, progress=progress)
    flips = ["h"] if tta else []
    evaluated = {"checkpoint": str(checkpoint), "dataset": dataset, "root": str(root),
                 "split": split, "tta": {"flips": flips, "scales": list(tta_scales)}}
    scores["classes"] = list(meta.classes)
    scores["evaluated"] = evaluated
    scores["table"] = format_table(scores, meta.classes)
    with_tta = bool(flips) or tuple(tta_scales) != (1.0,)
    default_out = Path(checkpoint).parent / f"eval-{split}{'-tta' if with_tta else ''}"
    out = Path(out_dir) if out_dir is not None else default_out
    out.mkdir(parents=True, exist_ok=True)
    subtitle = describe_evaluation(evaluated)
    files = {
        "metrics": out / "metrics.json",
        "confusion_matrix": confusion_matrix_png(scores["matrix"], meta.classes,
                                                 out / "confusion_matrix.png", subtitle),
        "per_class_iou": per_class_iou_png(scores["iou"], meta.classes, out / "per_class_iou.png",
                                           subtitle),
    }
    scores["files"] = {key: str(path) for key, path in files.items()}
    atomic_write_bytes(files["metrics"], json.dumps(_json_safe(scores), indent=2).encode())
    return scores


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
    tta = evaluated["tta"]
    scales = [scale for scale in tta["scales"] if scale != 1.0]
    parts = ([f"flip {'+'.join(tta['flips'])}"] if tta["flips"] else []) + (
        [f"scales {' '.join(f'{s:g}' for s in tta['scales'])}"] if scales else [])
    return (f"{Path(evaluated['checkpoint']).name} on {evaluated['dataset']}/"
            f"{evaluated['split']}, {'TTA ' + ', '.join(parts) if parts else 'no TTA'}")


def _json_safe(value: Any) -> Any:
    """NaN is not JSON: write it as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value
