"""``pixelwise demo``: train, evaluate and predict on built-in synthetic data, no download.

A small U-Net learns SyntheticShapes (background + circle, rectangle, triangle, line) for a fixed
number of epochs sized for about a minute and a half on an idle 2-core CPU (fixed epochs rather than a time
budget, so the result does not depend on how busy the machine is). The loss is cross-entropy plus
Dice: with plain cross-entropy the thin, rare "line" class is learnt late or not at all. Everything lands in one
folder::

    pixelwise-demo/
      run/                 checkpoints, config.yaml, run.json, metrics.csv (from train)
      eval/                metrics.json, confusion_matrix.png, per_class_iou.png
      training_curves.png  loss and validation mean IoU per epoch
      predictions.png      image / ground truth / prediction for a few validation images
      predictions/         sample_NN.png (palette label map), sample_NN_overlay.png
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pixelwise.config import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig, validate

DEMO_SAMPLES = 6  # validation images written as predictions


def demo_config(out_dir: str | Path = "pixelwise-demo") -> Config:
    """The demo's training configuration (also shipped as ``configs/synthetic_demo.yaml``)."""
    config = Config(
        model=ModelConfig(name="unet", options={"base_channels": 16, "depth": 3}),
        data=DataConfig(dataset="synthetic", batch_size=16, val_batch_size=32),
        optim=OptimConfig(name="adamw", lr=0.003, weight_decay=0.0001, schedule="cosine",
                          warmup_steps=20, loss="ce_dice"),
        train=TrainConfig(epochs=30, seed=0, out_dir=str(Path(out_dir) / "run"),
                          overwrite=True),  # `make demo` twice replaces the first demo
    )
    validate(config)
    return config


def run_demo(config: Config, out_dir: str | Path,
             argv: list[str] | None = None) -> dict[str, Any]:
    """Train with ``config``, then evaluate, plot and predict into ``out_dir``; return the scores
    of :func:`pixelwise.engine.evaluate.evaluate` plus ``out_dir``."""
    from pixelwise.data import open_dataset
    from pixelwise.engine.evaluate import evaluate
    from pixelwise.engine.train import train
    from pixelwise.inference.predict import Segmenter
    from pixelwise.outputs import display_image, predict_to_files
    from pixelwise.plots import prediction_grid_png, training_curves_png

    out_dir = Path(out_dir)
    result = train(config, argv=argv)
    run_dir = Path(result["run_dir"])
    best = run_dir / "best.safetensors"
    scores = evaluate(best, config.data.dataset, config.data.root, config.data.val_split,
                      out_dir=out_dir / "eval", batch_size=config.data.val_batch_size,
                      progress=config.train.progress, **config.data.options)
    scores["files"]["training_curves"] = str(
        training_curves_png(run_dir / "metrics.csv", out_dir / "training_curves.png"))
    segmenter = Segmenter.from_checkpoint(best)
    samples = open_dataset(config.data.dataset, config.data.root, config.data.val_split,
                           **config.data.options)
    shown, targets, predicted = [], [], []
    for index in range(min(DEMO_SAMPLES, len(samples))):
        image, target = samples[index]
        written = predict_to_files(segmenter, image,
                                   out_dir / "predictions" / f"sample_{index:02d}")
        shown.append(display_image(image))
        targets.append(target.numpy())
        predicted.append(np.asarray(Image.open(written["png"])))
    scores["files"]["predictions"] = str(out_dir / "predictions")
    scores["files"]["prediction_grid"] = str(prediction_grid_png(
        shown, targets, predicted, segmenter.palette, segmenter.classes,
        out_dir / "predictions.png", ignore_index=segmenter.meta.ignore_index))
    scores["out_dir"] = str(out_dir)
    return scores
