"""Prediction: `Segmenter` (predict.py), overlap-tile inference of large images (tiling.py)."""
