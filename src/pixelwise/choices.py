"""Names a user chooses among: prediction output formats (with the file name each gives),
inference backends and test-time augmentation views. The one place that states them.

Kept apart from :mod:`pixelwise.outputs`, :mod:`pixelwise.inference.backends` and
:mod:`pixelwise.inference.tta`, which implement them, so that the command line offers the choices without importing torch
(``pixelwise --help`` stays quick).
"""

from __future__ import annotations

# What each format appends to the output stem: `out/slide1` -> `out/slide1_overlay.png`, ...
OUTPUT_SUFFIXES = {"png": ".png", "overlay": "_overlay.png", "geojson": ".geojson",
                   "coco": ".coco.json", "npy": ".npy", "geotiff": ".tif",
                   "cells": "_cells.tif"}  # two-class models: pixelwise.postprocess.watershed_cells
FORMATS = tuple(OUTPUT_SUFFIXES)

BACKENDS = ("torch", "torch-bf16", "onnx", "onnx-int8")  # pixelwise.inference.backends

# pixelwise.inference.tta: "h" the image and its mirror, "d4" its 8 rotations and mirrors
TTA_VIEWS = ("h", "d4")
