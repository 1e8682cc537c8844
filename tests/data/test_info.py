"""DatasetInfo: which classes are background (not objects) for each dataset."""

import numpy as np
import pytest
from conftest import rgb, write_png

from pixelwise.data import ISBI2012, CamVid, DatasetInfo, FolderDataset, SyntheticShapes
from pixelwise.data.palette import default_palette
from pixelwise.errors import ConfigError


def test_background_defaults_to_the_classes_named_background():
    assert DatasetInfo(["sea", "Background"], default_palette(2)).background == (1,)
    assert DatasetInfo(["road", "car"], default_palette(2)).background == ()


def test_background_can_be_stated_and_must_be_class_ids():
    assert DatasetInfo(["a", "b", "c"], default_palette(3), background=[2, 0]).background == (0, 2)
    with pytest.raises(ConfigError, match=r"background must be class ids 0\.\.1, got \[5\]"):
        DatasetInfo(["a", "b"], default_palette(2), background=(5,))


def test_camvid_has_no_background_so_sky_is_an_object(tmp_path):
    write_png(tmp_path / "val" / "x.png", rgb(2, 3))
    write_png(tmp_path / "valannot" / "x.png", np.zeros((2, 3), np.uint8))
    info = CamVid(tmp_path, "val").info
    assert info.classes[0] == "Sky" and info.background == ()


def test_isbi_membrane_is_the_background_of_the_cells(tmp_path):
    write_png(tmp_path / "train" / "image" / "0.png", np.zeros((4, 4), np.uint8))
    write_png(tmp_path / "train" / "label" / "0.png", np.zeros((4, 4), np.uint8))
    info = ISBI2012(tmp_path, "trainval").info
    assert info.classes[info.background[0]] == "membrane" and info.background == (0,)


def test_synthetic_and_named_folder_classes_have_background_zero(tmp_path):
    write_png(tmp_path / "images" / "a.png", rgb(2, 2))
    write_png(tmp_path / "masks" / "a.png", np.zeros((2, 2), np.uint8))
    named = FolderDataset(tmp_path / "images", tmp_path / "masks", ["background", "roof"])
    numbered = FolderDataset(tmp_path / "images", tmp_path / "masks", 2)
    assert (named.info.background, numbered.info.background) == ((0,), ())
    assert SyntheticShapes(n=1).info.background == (0,)
