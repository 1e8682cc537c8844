"""Every dataset class on tiny files written in its own layout; real copies when present."""

import logging

import numpy as np
import pytest
import tifffile
import torch
from conftest import require_shared, rgb, write_png
from PIL import Image

from pixelwise.data import (
    ISBI2012,
    CamVid,
    Cityscapes,
    FolderDataset,
    SyntheticShapes,
    VOCSegmentation,
    open_dataset,
)
from pixelwise.errors import ConfigError, DataError

MASK = np.array([[0, 1, 1, 2], [0, 0, 2, 2], [1, 1, 0, 255]], dtype=np.uint8)


def make_folder(tmp_path, mask=MASK, mask_name="a.png", image_name="a.png", palette=None):
    write_png(tmp_path / "images" / image_name, rgb(*mask.shape[:2]))
    write_png(tmp_path / "masks" / mask_name, mask, palette)
    return tmp_path / "images", tmp_path / "masks"


def test_folder_index_png_mask_gives_class_ids_and_scaled_image(tmp_path):
    images, masks = make_folder(tmp_path)
    image, mask = FolderDataset(images, masks, classes=3)[0]
    assert mask.dtype == torch.int64 and mask.tolist() == MASK.tolist()
    expected = rgb(3, 4).transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(image.numpy(), expected, rtol=1e-6)


def test_folder_palette_png_gives_indices_not_colours(tmp_path):
    images, masks = make_folder(tmp_path, palette=[0, 0, 0, 200, 10, 10, 10, 200, 10] * 85 + [1])
    assert FolderDataset(images, masks, classes=3)[0][1].tolist() == MASK.tolist()


def test_folder_pairs_jpeg_image_with_png_mask_by_stem(tmp_path):
    write_png(tmp_path / "masks" / "b.png", MASK)
    (tmp_path / "images").mkdir()
    Image.fromarray(rgb(3, 4)).save(tmp_path / "images" / "b.jpg", quality=95)
    data = FolderDataset(tmp_path / "images", tmp_path / "masks", classes=["x", "y", "z"])
    assert len(data) == 1 and data.samples[0].image.name == "b.jpg"
    assert data.info.classes == ["x", "y", "z"] and data.info.in_channels == 3


def test_folder_rgb_mask_decoded_with_colour_map(tmp_path):
    colours = {(0, 0, 0): 0, (255, 0, 0): 1, (0, 255, 0): 2, (255, 255, 255): 255}
    lookup = {v: k for k, v in colours.items()}
    coloured = np.array([[lookup[v] for v in row] for row in MASK.tolist()], dtype=np.uint8)
    images, masks = make_folder(tmp_path, mask=coloured)
    data = FolderDataset(images, masks, classes=3, colour_map=colours)
    assert data[0][1].tolist() == MASK.tolist()


def test_folder_rgb_mask_with_unknown_colour_names_file_and_colour(tmp_path):
    coloured = np.zeros((3, 4, 3), dtype=np.uint8)
    coloured[0, 0] = (9, 8, 7)
    images, masks = make_folder(tmp_path, mask=coloured)
    data = FolderDataset(images, masks, classes=3, colour_map={(0, 0, 0): 0})
    with pytest.raises(DataError, match=r"a\.png.*unknown colours \[\(9, 8, 7\)\]"):
        data[0]


def test_folder_binary_0_255_masks_are_mapped_with_one_log_line(tmp_path, caplog):
    binary = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    for name in ("a.png", "b.png"):
        write_png(tmp_path / "images" / name, rgb(2, 2))
        write_png(tmp_path / "masks" / name, binary)
    data = FolderDataset(tmp_path / "images", tmp_path / "masks", classes=["bg", "fg"])
    with caplog.at_level(logging.INFO, logger="pixelwise.data"):
        masks = [data[i][1].tolist() for i in range(2)]
    assert masks == [[[0, 1], [1, 0]]] * 2
    assert len([r for r in caplog.records if "binary masks stored as 0/255" in r.message]) == 1


def test_folder_one_bit_png_mask_is_read_as_binary(tmp_path):
    write_png(tmp_path / "images" / "a.png", rgb(2, 2))
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).convert("1").save(
        tmp_path / "masks" / "a.png"
    )
    data = FolderDataset(tmp_path / "images", tmp_path / "masks", classes=2)
    assert data[0][1].tolist() == [[0, 1], [1, 0]]


def test_folder_binary_mapping_can_be_turned_off(tmp_path):
    images, masks = make_folder(tmp_path, mask=np.array([[0, 255]], dtype=np.uint8))
    data = FolderDataset(images, masks, classes=2, binary_masks=False)
    assert data[0][1].tolist() == [[0, 255]]


def test_folder_refuses_jpeg_masks(tmp_path):
    write_png(tmp_path / "images" / "a.png", rgb(3, 4))
    (tmp_path / "masks").mkdir()
    Image.fromarray(MASK).save(tmp_path / "masks" / "a.jpg")
    with pytest.raises(DataError, match=r"a\.jpg: masks must be lossless.*got JPEG"):
        FolderDataset(tmp_path / "images", tmp_path / "masks", classes=3)


def test_folder_missing_pair_names_the_file(tmp_path):
    images, masks = make_folder(tmp_path)
    write_png(images / "lonely.png", rgb(3, 4))
    with pytest.raises(DataError, match=r"1 without a partner: .*lonely\.png"):
        FolderDataset(images, masks, classes=3)
    assert [p.name for p in FolderDataset(images, masks, 3, strict=False).unpaired] == [
        "lonely.png"
    ]


def test_folder_mask_value_outside_classes_raises_with_file(tmp_path):
    images, masks = make_folder(tmp_path)
    with pytest.raises(DataError, match=r"a\.png: mask values must be class ids 0\.\.1.*\[2\]"):
        FolderDataset(images, masks, classes=2, binary_masks=False)[0]


def test_folder_size_mismatch_raises_with_both_files(tmp_path):
    write_png(tmp_path / "images" / "a.png", rgb(5, 4))
    write_png(tmp_path / "masks" / "a.png", MASK)
    with pytest.raises(DataError, match=r"masks/a\.png: a mask must have its image's size"):
        FolderDataset(tmp_path / "images", tmp_path / "masks", classes=3)[0]


def test_folder_grey_image_has_one_channel(tmp_path):
    write_png(tmp_path / "images" / "a.png", np.full((3, 4), 51, dtype=np.uint8))
    write_png(tmp_path / "masks" / "a.png", MASK)
    data = FolderDataset(tmp_path / "images", tmp_path / "masks", classes=3)
    image = data[0][0]
    assert data.info.in_channels == 1 and image.shape == (1, 3, 4)
    assert torch.allclose(image, torch.full((1, 3, 4), 0.2))


def test_folder_16_bit_multiband_tiff_is_scaled_per_band(tmp_path):
    rng = np.random.default_rng(0)
    bands = np.stack(
        [rng.integers(0, 1000, (3, 4)), rng.integers(20000, 60000, (3, 4))] * 2
    ).astype(np.uint16)  # (4, H, W) bands first, as many remote-sensing files store them
    (tmp_path / "images").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", bands, photometric="minisblack")
    write_png(tmp_path / "masks" / "a.png", MASK)
    data = FolderDataset(tmp_path / "images", tmp_path / "masks", classes=3)
    image = data[0][0].numpy()
    assert data.info.in_channels == 4 and image.shape == (4, 3, 4)
    for band in range(4):
        low, high = np.percentile(bands[band].astype(float), [1, 99])
        np.testing.assert_allclose(image[band], (bands[band] - low) / (high - low), rtol=1e-5)


def test_folder_band_range_fixes_the_scaling(tmp_path):
    (tmp_path / "images").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.full((3, 4), 300, dtype=np.uint16))
    write_png(tmp_path / "masks" / "a.png", MASK)
    data = FolderDataset(
        tmp_path / "images", tmp_path / "masks", classes=3, band_range=[(100, 500)]
    )
    assert torch.allclose(data[0][0], torch.full((1, 3, 4), 0.5))


def test_decompression_bomb_guard_refuses_large_images_unless_raised(tmp_path):
    images, masks = make_folder(tmp_path)
    with pytest.raises(DataError, match="at most max_pixels=10 pixels.*got 12"):
        FolderDataset(images, masks, classes=3, max_pixels=10)[0]
    assert FolderDataset(images, masks, classes=3, max_pixels=12)[0][1].shape == (3, 4)


def write_voc(root, names, split="train"):
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253
    for name in names:
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb(3, 4)).save(root / "JPEGImages" / f"{name}.jpg")
        write_png(root / "SegmentationClass" / f"{name}.png", MASK, palette)
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / f"{split}.txt").write_text("".join(f"{name}\n" for name in names))


def test_voc_reads_split_list_and_palette_masks_with_255_ignore(tmp_path):
    write_voc(tmp_path / "VOCdevkit" / "VOC2012", ["2007_000032", "2007_000039"])
    data = VOCSegmentation(tmp_path / "VOCdevkit", "train")
    assert len(data) == 2 and data.info.num_classes == 21 and data.info.ignore_index == 255
    assert data.info.classes[15] == "person"
    assert data[1][1].tolist() == MASK.tolist()


def test_voc_missing_split_list_says_which_file(tmp_path):
    write_voc(tmp_path, ["a"])
    with pytest.raises(DataError, match=r"Segmentation/val\.txt: the split list must exist"):
        VOCSegmentation(tmp_path, "val")


def test_camvid_maps_void_11_to_ignore(tmp_path):
    annot = np.array([[0, 10, 11], [3, 11, 8]], dtype=np.uint8)
    write_png(tmp_path / "val" / "0001TP_000001.png", rgb(2, 3))
    write_png(tmp_path / "valannot" / "0001TP_000001.png", annot)
    data = CamVid(tmp_path, "val")
    assert data[0][1].tolist() == [[0, 10, 255], [3, 255, 8]]
    assert data.info.classes[10] == "Bicyclist" and data.info.num_classes == 11


def test_camvid_value_beyond_void_is_reported_as_stored(tmp_path):
    write_png(tmp_path / "train" / "x.png", rgb(1, 2))
    write_png(tmp_path / "trainannot" / "x.png", np.array([[1, 12]], dtype=np.uint8))
    with pytest.raises(DataError, match=r"x\.png: mask values .* got \[12\]"):
        CamVid(tmp_path, "train")[0]


def write_isbi_pngs(root, count=12):
    for i in range(count):
        write_png(root / "train" / "image" / f"{i}.png", np.full((4, 4), i, dtype=np.uint8))
        label = np.zeros((4, 4), dtype=np.uint8)
        label[1:3, 1:3] = 255
        write_png(root / "train" / "label" / f"{i}.png", label)
        write_png(root / "test" / "image" / f"{i}.png", np.full((4, 4), 100 + i, dtype=np.uint8))


def test_isbi_png_slices_in_numeric_order_with_255_as_cell(tmp_path):
    write_isbi_pngs(tmp_path)
    data = ISBI2012(tmp_path, "trainval")
    assert [s.image.stem for s in data.samples] == [str(i) for i in range(12)]
    image, mask = data[10]
    assert image.shape == (1, 4, 4) and torch.allclose(image, torch.full((1, 4, 4), 10 / 255))
    assert mask.tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert data.info.classes == ["membrane", "cell"]


def test_isbi_slices_option_and_string_range(tmp_path):
    write_isbi_pngs(tmp_path)
    picked = ISBI2012(tmp_path, "trainval", slices="2-4")
    assert [s.image.stem for s in picked.samples] == ["2", "3", "4"]
    assert [s.image.stem for s in ISBI2012(tmp_path, "train", slices=[0, 11]).samples] == [
        "0",
        "11",
    ]
    assert [s.image.stem for s in ISBI2012(tmp_path, "train", slices=7).samples] == ["7"]


def test_isbi_test_split_has_all_ignore_masks(tmp_path):
    write_isbi_pngs(tmp_path)
    image, mask = ISBI2012(tmp_path, "test")[3]
    assert torch.allclose(image, torch.full((1, 4, 4), 103 / 255))
    assert (mask == 255).all()


def test_isbi_multipage_tiff_stacks(tmp_path):
    volume = np.stack([np.full((4, 4), 8 * i, dtype=np.uint8) for i in range(30)])
    labels = np.zeros_like(volume)
    labels[:, :2] = 255
    tifffile.imwrite(tmp_path / "train-volume.tif", volume, photometric="minisblack")
    tifffile.imwrite(tmp_path / "train-labels.tif", labels, photometric="minisblack")
    val = ISBI2012(tmp_path, "val")
    assert len(val) == 5 and len(ISBI2012(tmp_path, "train")) == 25
    image, mask = val[0]  # slice 25
    assert torch.allclose(image, torch.full((1, 4, 4), 200 / 255))
    assert mask[:2].eq(1).all() and mask[2:].eq(0).all()


def test_isbi_label_value_other_than_0_or_255_is_an_error(tmp_path):
    write_isbi_pngs(tmp_path, count=1)
    write_png(tmp_path / "train" / "label" / "0.png", np.full((4, 4), 1, dtype=np.uint8))
    with pytest.raises(DataError, match=r"0\.png: mask values .* got \[1\]"):
        ISBI2012(tmp_path, "trainval")[0]


def test_cityscapes_label_ids_become_train_ids(tmp_path):
    city = "aachen"
    stem = f"{city}_000000_000019"
    write_png(tmp_path / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png", rgb(2, 3))
    ids = np.array([[7, 26, 0], [33, 4, 24]], dtype=np.uint8)  # road, car, unlabeled; ...
    write_png(tmp_path / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png", ids)
    write_png(tmp_path / "gtFine" / "val" / city / f"{stem}_gtFine_color.png", rgb(2, 3))
    data = Cityscapes(tmp_path, "val")
    assert data[0][1].tolist() == [[0, 13, 255], [18, 255, 11]]
    assert data.info.num_classes == 19 and data.info.classes[13] == "car"


def test_open_dataset_builds_each_kind(tmp_path):
    make_folder(tmp_path / "train")
    folder = open_dataset("folder", tmp_path, "train", classes=3)
    assert isinstance(folder, FolderDataset) and len(folder) == 1
    synthetic = open_dataset("synthetic", None, "val", n=3, size=32)
    assert isinstance(synthetic, SyntheticShapes) and len(synthetic) == 3
    train = open_dataset("synthetic", None, "train", n=3, size=32)
    assert not torch.equal(train[0][0], synthetic[0][0])  # splits do not share images


def test_open_dataset_rejects_unknown_kind_and_options():
    with pytest.raises(ConfigError, match="dataset must be one of synthetic, folder"):
        open_dataset("coco", "x", "train")
    with pytest.raises(ConfigError, match=r"got unknown \['slice'\]"):
        open_dataset("isbi2012", "x", "train", slice="0-24")
    with pytest.raises(ConfigError, match="'folder' needs the option.*classes"):
        open_dataset("folder", "x", "train")


def test_two_files_of_one_stem_are_refused(tmp_path):
    images, masks = make_folder(tmp_path)
    write_png(masks / "a.bmp", MASK)
    with pytest.raises(DataError, match=r"masks: file names must differ .*\['a\.bmp', 'a\.png'\]"):
        FolderDataset(images, masks, classes=3)


@pytest.mark.shared_data
def test_real_isbi2012_loads_with_suggested_split():
    root = require_shared("isbi2012")
    train, val = ISBI2012(root, "train"), ISBI2012(root, "val")
    assert (len(train), len(val)) == (25, 5)
    image, mask = val[0]
    assert val.samples[0].image.name == "25.png"
    assert image.shape == (1, 512, 512) and set(mask.unique().tolist()) == {0, 1}


@pytest.mark.shared_data
def test_real_camvid_loads_both_splits():
    root = require_shared("camvid")
    train, val = CamVid(root, "train"), CamVid(root, "val")
    assert (len(train), len(val)) == (367, 101)
    image, mask = train[0]
    assert image.shape == (3, 360, 480) and mask.shape == (360, 480)
    assert set(mask.unique().tolist()) <= set(range(11)) | {255}


def test_float_tiff_is_taken_as_already_scaled(tmp_path):
    (tmp_path / "images").mkdir()
    values = np.linspace(0.1, 0.7, 12, dtype=np.float32).reshape(3, 4)
    tifffile.imwrite(tmp_path / "images" / "a.tif", values)
    write_png(tmp_path / "masks" / "a.png", MASK)
    image = FolderDataset(tmp_path / "images", tmp_path / "masks", classes=3)[0][0]
    assert torch.equal(image[0], torch.from_numpy(values))


def test_decompression_bomb_guard_covers_tiff_pages(tmp_path):
    (tmp_path / "images").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.zeros((3, 4), dtype=np.uint16))
    write_png(tmp_path / "masks" / "a.png", MASK)
    with pytest.raises(DataError, match=r"a\.tif: images must have at most max_pixels=11"):
        FolderDataset(tmp_path / "images", tmp_path / "masks", classes=3, max_pixels=11)[0]


def test_grey_image_in_an_rgb_dataset_is_repeated_to_three_channels(tmp_path):
    images, masks = make_folder(tmp_path)  # a.png is RGB and sets in_channels = 3
    write_png(images / "b.png", np.full((3, 4), 102, dtype=np.uint8))
    write_png(masks / "b.png", MASK)
    image = FolderDataset(images, masks, classes=3)[1][0]
    assert image.shape == (3, 3, 4) and torch.allclose(image, torch.full((3, 3, 4), 0.4))
