"""`pixelwise data check` on a folder seeded with each kind of problem."""

import numpy as np
import pytest
import tifffile
from conftest import require_shared, rgb, write_png
from PIL import Image

from pixelwise.data import FolderDataset, SyntheticShapes
from pixelwise.data.checks import check_dataset, quick_check, run_data_check
from pixelwise.errors import DataError

GOOD = np.array([[0, 0, 1, 1], [0, 2, 2, 255]], dtype=np.uint8)


def seeded_folder(root):
    """`root/train/{images,masks}` with two good pairs and one file for each problem."""
    images, masks = root / "train" / "images", root / "train" / "masks"
    for name in ("good1", "good2"):
        write_png(images / f"{name}.png", rgb(2, 4))
        write_png(masks / f"{name}.png", GOOD)
    write_png(images / "no_mask.png", rgb(2, 4))  # missing pair
    write_png(masks / "no_image.png", GOOD)  # missing pair, the other way round
    (images / "broken.png").write_bytes(b"this is not a PNG")  # unreadable image
    write_png(masks / "broken.png", GOOD)
    write_png(images / "bad_mask.png", rgb(2, 4))
    (masks / "bad_mask.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # unreadable mask
    write_png(images / "jpeg_mask.png", rgb(2, 4))
    Image.fromarray(GOOD).save(masks / "jpeg_mask.jpg")  # lossy mask
    write_png(images / "wrong_size.png", rgb(3, 4))  # size mismatch
    write_png(masks / "wrong_size.png", GOOD)
    write_png(images / "bad_values.png", rgb(2, 4))
    write_png(masks / "bad_values.png", np.array([[0, 7, 1, 1], [0, 9, 2, 2]], dtype=np.uint8))
    bands = np.zeros((5, 2, 4), dtype=np.uint16)  # five bands in an RGB dataset
    tifffile.imwrite(images / "five_bands.tif", bands, photometric="minisblack")
    write_png(masks / "five_bands.png", GOOD)
    return root


EXPECTED = {
    ("missing pair", "no_mask.png"),
    ("missing pair", "no_image.png"),
    ("unreadable image", "broken.png"),
    ("unreadable mask", "bad_mask.png"),
    ("unreadable mask", "jpeg_mask.jpg"),
    ("size mismatch", "wrong_size.png"),
    ("mask values", "bad_values.png"),
    ("wrong channel count", "five_bands.tif"),
}


def test_every_seeded_problem_is_reported_with_its_file(tmp_path):
    report = check_dataset(seeded_folder(tmp_path), "folder", classes=3, progress=False)
    assert {(p.kind, p.path.name) for p in report.problems} == EXPECTED
    for problem in report.problems:
        assert problem.path.name in problem.message


def test_mask_value_problem_lists_the_values(tmp_path):
    report = check_dataset(seeded_folder(tmp_path), "folder", classes=3, progress=False)
    (problem,) = [p for p in report.problems if p.kind == "mask values"]
    assert "got [7, 9]" in problem.message


def test_run_data_check_prints_every_problem_then_raises(tmp_path, capsys):
    with pytest.raises(DataError, match="must find no problem, got 8; try fixing the files"):
        run_data_check(seeded_folder(tmp_path), "folder", classes=3)
    out = capsys.readouterr().out
    assert "8 problem(s):" in out
    for kind, name in EXPECTED:
        assert any(kind in line and name in line for line in out.splitlines()), (kind, name)


def test_clean_folder_reports_counts_frequencies_and_weights(tmp_path, capsys):
    for name in ("a", "b"):
        write_png(tmp_path / "train" / "images" / f"{name}.png", rgb(2, 4))
        write_png(tmp_path / "train" / "masks" / f"{name}.png", GOOD)
    assert run_data_check(tmp_path, "folder", classes=["sky", "road", "car"]).ok
    out = capsys.readouterr().out
    assert "2 image/mask pairs" in out and "2x4 (2)" in out and "No problems found." in out
    # Per image 3 sky, 2 road, 2 car, 1 ignored; all classes in both 8-pixel images:
    # frequencies 6/16, 4/16, 4/16, median 4/16 -> weights 2/3, 1, 1.
    report = check_dataset(tmp_path, "folder", classes=3, progress=False)
    assert report.class_counts == [6, 4, 4] and report.ignored_pixels == 2
    assert report.class_weights == pytest.approx([2 / 3, 1.0, 1.0])
    assert "sky" in out and "0.6667" in out


def test_missing_root_is_our_error_naming_the_folder(tmp_path):
    with pytest.raises(DataError, match="nowhere.*the folder must exist"):
        run_data_check(tmp_path / "nowhere", "camvid")


def test_quick_check_refuses_bad_data_with_the_file_name(tmp_path):
    seeded = seeded_folder(tmp_path) / "train"
    loose = FolderDataset(seeded / "images", seeded / "masks", 3, strict=False)
    with pytest.raises(DataError, match=r"(no_image|no_mask)\.png"):
        quick_check(loose)


def test_quick_check_reads_the_first_samples(tmp_path):
    write_png(tmp_path / "images" / "a.png", rgb(2, 4))
    write_png(tmp_path / "masks" / "a.png", np.full((2, 4), 5, dtype=np.uint8))
    with pytest.raises(DataError, match=r"a\.png: mask values must be class ids"):
        quick_check(FolderDataset(tmp_path / "images", tmp_path / "masks", classes=3))


def test_synthetic_data_is_scanned_through_its_items():
    data = SyntheticShapes(4, 32)
    counts = check_dataset(data, progress=False).class_counts
    expected = sum(np.bincount(data[i][1].numpy().ravel(), minlength=5) for i in range(4))
    assert counts == expected.tolist()
    quick_check(data)


@pytest.mark.shared_data
def test_real_camvid_train_counts_match_the_published_pixel_counts():
    root = require_shared("camvid")
    report = check_dataset(root, "camvid", "train", progress=False)
    # Pixel counts per class over trainannot, from ../shared/data/README.md (11 = void).
    published = [10682767, 14750079, 623349, 20076880, 2845085, 6166762, 743859, 714595,
                 3719877, 405385, 184967]  # fmt: skip
    assert report.ok and report.num_samples == 367
    assert report.class_counts == published and report.ignored_pixels == 2503995
