"""`pixelwise predict` instance outputs (GeoJSON, COCO) and overlays, through `cli.main`: which
classes are background, COCO read back by pycocotools, overlay colours and legend."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from pixelwise.checkpoint import METADATA_KEY, ModelMeta, save_weights
from pixelwise.cli import main
from pixelwise.inference.predict import Segmenter
from pixelwise.models import build

pytest.importorskip("shapely")

OPTIONS = {"base_channels": 4, "depth": 1, "in_channels": 3}


def street() -> np.ndarray:
    """What the model is made to predict: Sky (0) on top, a Building (1), a Car (2)."""
    label = np.full((16, 24), 1, np.uint8)
    label[:5] = 0
    label[10:14, 3:9] = 2
    return label


def checkpoint(path: Path, classes: list[str], background: tuple[int, ...] | None = None, *,
               recorded: bool = True, palette: list | None = None) -> Path:
    """A tiny U-Net checkpoint with these classes; `recorded=False` writes metadata without the
    background field, as checkpoints were written before it existed."""
    meta = ModelMeta(name="unet", num_classes=len(classes), options=OPTIONS, classes=classes,
                     palette=palette or [(128, 128, 128), (128, 0, 0), (64, 0, 128)],
                     ignore_index=255, in_channels=3, mean=[0.5] * 3, std=[0.25] * 3,
                     background=background)
    model = build("unet", len(classes), **OPTIONS)
    if recorded:
        save_weights(path, model, meta)
    else:
        stored = asdict(meta)
        del stored["background"]
        tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(stored)})
    return path


@pytest.fixture
def image(tmp_path, monkeypatch) -> Path:
    """An input image; every Segmenter predicts `street()` for it."""
    monkeypatch.setattr(Segmenter, "predict", lambda self, chw: street())
    path = tmp_path / "street.png"
    Image.fromarray(np.full((16, 24, 3), 90, np.uint8)).save(path)
    return path


def predicted_classes(ckpt: Path, image: Path, out: Path, *extra: str) -> list[str]:
    assert main(["predict", str(ckpt), str(image), "--out", str(out),
                 "--format", "geojson", *extra]) == 0
    features = json.loads((out / "street.geojson").read_text())["features"]
    return [f["properties"]["class_name"] for f in features]


CAMVID = ["Sky", "Building", "Car"]


def test_camvid_sky_is_an_object_of_geojson(tmp_path, image):
    ckpt = checkpoint(tmp_path / "camvid.safetensors", CAMVID, background=())
    assert predicted_classes(ckpt, image, tmp_path / "o") == CAMVID


def test_background_option_overrides_the_checkpoint(tmp_path, image):
    camvid = checkpoint(tmp_path / "camvid.safetensors", CAMVID, background=())
    assert predicted_classes(camvid, image, tmp_path / "a", "--background", "0", "2") == [
        "Building"]
    voc_like = checkpoint(tmp_path / "bg.safetensors", ["background", "house", "car"], (0,))
    assert predicted_classes(voc_like, image, tmp_path / "b") == ["house", "car"]
    assert predicted_classes(voc_like, image, tmp_path / "c", "--background", "none") == [
        "background", "house", "car"]


def test_old_checkpoint_takes_the_class_named_background(tmp_path, image):
    named = checkpoint(tmp_path / "named.safetensors", ["background", "house", "car"],
                       recorded=False)
    assert predicted_classes(named, image, tmp_path / "a") == ["house", "car"]
    unnamed = checkpoint(tmp_path / "old.safetensors", CAMVID, recorded=False)
    assert predicted_classes(unnamed, image, tmp_path / "b") == CAMVID


@pytest.mark.parametrize(("ids", "message"), [
    (["3"], r"background must be class ids 0\.\.2, got \[3\]"),
    (["sky"], "--background must be class ids or none, got sky")])
def test_background_option_must_name_class_ids(tmp_path, image, capsys, ids, message):
    ckpt = checkpoint(tmp_path / "camvid.safetensors", CAMVID, background=())
    assert main(["predict", str(ckpt), str(image), "--out", str(tmp_path / "o"),
                 "--format", "geojson", "--background", *ids]) == 2
    assert re.match(f"error: {message}", capsys.readouterr().err)


def holed() -> np.ndarray:
    """A Building (1) with a hole showing Sky (0), beside a Car (2) without one."""
    label = np.zeros((16, 24), np.uint8)
    label[2:12, 2:12] = 1
    label[5:8, 5:8] = 0
    label[3:9, 15:21] = 2
    return label


@pytest.mark.parametrize(("option", "kinds"), [([], ["dict", "list"]),
                                                (["--coco-rle"], ["dict", "dict"])])
def test_coco_holes_as_rle_and_rle_for_all_on_request(tmp_path, image, monkeypatch, option,
                                                      kinds):
    from pycocotools.coco import COCO

    monkeypatch.setattr(Segmenter, "predict", lambda self, chw: holed())
    ckpt = checkpoint(tmp_path / "camvid.safetensors", CAMVID, background=(0,))
    assert main(["predict", str(ckpt), str(image), "--out", str(tmp_path / "o"),
                 "--format", "coco", *option]) == 0
    reader = COCO(str(tmp_path / "o" / "street.coco.json"))
    annotations = reader.loadAnns(reader.getAnnIds())
    assert [type(a["segmentation"]).__name__ for a in annotations] == kinds
    building = reader.annToMask(annotations[0])
    np.testing.assert_array_equal(building, holed() == 1)
    assert annotations[0]["area"] == 100 - 9 and annotations[0]["category_id"] == 2
    assert reader.loadCats(2) == [{"id": 2, "name": "Building"}]


def test_isbi_overlay_shows_the_cells_in_colour_with_a_legend(tmp_path, image, monkeypatch):
    cells = street() != 0  # membrane (0) on top, cells below
    monkeypatch.setattr(Segmenter, "predict", lambda self, chw: cells.astype(np.uint8))
    isbi = checkpoint(tmp_path / "isbi.safetensors", ["membrane", "cell"], background=(0,),
                      palette=[(0, 0, 0), (255, 255, 255)])  # ISBI's black and white
    assert main(["predict", str(isbi), str(image), "--out", str(tmp_path / "o"),
                 "--format", "overlay"]) == 0
    with Image.open(tmp_path / "o" / "street_overlay.png") as png:
        overlay, legend = np.asarray(png).astype(int), json.loads(png.text["legend"])
    assert (overlay[~cells] == 90).all()  # the grey input, untinted
    assert (overlay[cells].max(1) - overlay[cells].min(1) > 50).all()  # clearly coloured
    assert [e["name"] for e in legend] == ["membrane", "cell"]
    assert (tmp_path / "o" / "street_legend.png").is_file()


def leaky_membrane_proba() -> np.ndarray:
    """(2, 16, 24) probabilities: two cells (columns 0-10 and 13-23) split by a membrane in
    columns 11-12 that has a gap in rows 7-8, where the label map calls it cell."""
    cell = np.full((16, 24), 0.99, np.float32)
    cell[:, 11:13] = 0.05
    cell[7:9, 11:13] = 0.6
    return np.stack([1 - cell, cell])


def test_predict_cells_keeps_cells_apart_that_the_label_map_joins(tmp_path, image, monkeypatch):
    tifffile = pytest.importorskip("tifffile")
    proba = leaky_membrane_proba()
    monkeypatch.setattr(Segmenter, "_whole", lambda self, batch: torch.from_numpy(proba)[None])
    isbi = checkpoint(tmp_path / "isbi.safetensors", ["membrane", "cell"], background=(0,))
    assert main(["predict", str(isbi), str(image), "--out", str(tmp_path / "o"),
                 "--format", "png", "cells"]) == 0
    cells = tifffile.imread(tmp_path / "o" / "street_cells.tif")
    with Image.open(tmp_path / "o" / "street.png") as png:
        label = np.asarray(png)
    assert (label == proba.argmax(0)).all()  # the label map from the same probabilities
    assert len(np.unique(label[label == 1])) == 1 and label[7, 11] == 1  # one joined region
    assert cells.dtype == np.uint16 and sorted(np.unique(cells)) == [1, 2]
    assert len(np.unique(cells[:, :11])) == 1 and len(np.unique(cells[:, 13:])) == 1
    assert cells[0, 0] != cells[0, 23]


def test_predict_cells_needs_a_two_class_model(tmp_path, image, capsys):
    camvid = checkpoint(tmp_path / "camvid.safetensors", CAMVID)
    assert main(["predict", str(camvid), str(image), "--out", str(tmp_path / "o"),
                 "--format", "cells"]) != 0
    assert "the cells format needs a two-class model (cells: class 1), got 3 classes" in (
        capsys.readouterr().err)
    assert not (tmp_path / "o" / "street_cells.tif").exists()
