"""`data.cache`: every pair read into memory once (`FileDataset.keep_in_memory`)."""

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.config import DataConfig
from pixelwise.data import CamVid
from pixelwise.device import SINGLE_PROCESS
from pixelwise.engine import data_setup
from pixelwise.engine.data_setup import batches_of, build_loader, open_split
from pixelwise.errors import ConfigError


def write_camvid(root, count=3, height=8, width=12):
    """`count` random val pairs of CamVid's layout, masks with every class and void (11)."""
    rng = np.random.default_rng(0)
    for i in range(count):
        for folder, array in (("val", rng.integers(0, 256, (height, width, 3), dtype=np.uint8)),
                              ("valannot", rng.integers(0, 12, (height, width), dtype=np.uint8))):
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / folder / f"{i}.png")


def test_kept_pairs_equal_the_pairs_read_from_the_files(tmp_path):
    write_camvid(tmp_path)
    plain, kept = CamVid(tmp_path, "val", scale=0.5), CamVid(tmp_path, "val", scale=0.5)
    kept.keep_in_memory()
    for _ in range(2):  # both reads come from memory, and equal the files'
        for index in range(len(plain)):
            (image, mask), (image_k, mask_k) = plain[index], kept[index]
            assert torch.equal(image, image_k) and torch.equal(mask, mask_k)
            assert mask_k.dtype == torch.int64 and image_k.dtype == torch.float32
    assert 255 in kept[0][1]  # void became the ignore index and survived the int16 store


def test_kept_pairs_are_read_once_and_not_from_disk_again(tmp_path):
    write_camvid(tmp_path)
    dataset = CamVid(tmp_path, "val")
    first = [dataset[i] for i in range(len(dataset))]
    dataset.keep_in_memory()
    for path in tmp_path.rglob("*.png"):
        path.unlink()
    for (image, mask), index in zip(first, range(len(dataset)), strict=True):
        image_again, mask_again = dataset[index]
        assert torch.equal(image, image_again) and torch.equal(mask, mask_again)


def test_a_transform_that_writes_into_its_input_cannot_change_the_kept_pair(tmp_path):
    write_camvid(tmp_path)
    dataset = CamVid(tmp_path, "val")
    dataset.keep_in_memory()
    reference = [t.clone() for t in dataset[0]]

    def scribble(image, mask):
        image.zero_()
        mask.fill_(3)
        return image, mask

    dataset.transforms = scribble
    dataset[0]
    dataset.transforms = None
    assert all(torch.equal(a, b) for a, b in zip(reference, dataset[0], strict=True))


def test_without_keep_in_memory_nothing_is_kept(tmp_path):
    write_camvid(tmp_path)
    dataset = CamVid(tmp_path, "val")
    dataset[0]
    assert dataset.cache is None


def test_data_cache_turns_the_cache_on_for_both_splits(tmp_path):
    write_camvid(tmp_path)
    config = DataConfig(dataset="camvid", root=str(tmp_path), cache=True, workers=0)
    assert open_split(config, "val", train=True).cache is not None
    assert open_split(config, "val", train=False).cache is not None
    config.cache = False
    assert open_split(config, "val", train=True).cache is None


def test_loader_workers_serve_the_kept_pairs_epoch_after_epoch(tmp_path):
    write_camvid(tmp_path, count=4)
    config = DataConfig(dataset="camvid", root=str(tmp_path), cache=True, workers=1,
                        val_batch_size=2)
    kept = open_split(config, "val", train=False)
    loader = build_loader(kept, config, SINGLE_PROCESS, train=False, seed=0)
    plain = [open_split(DataConfig(dataset="camvid", root=str(tmp_path)), "val", train=False)[i]
             for i in range(4)]
    for path in tmp_path.rglob("*.png"):
        path.unlink()  # the workers can only have the pairs from the process that read them
    for _ in range(2):
        with batches_of(loader) as batches:
            images, masks = zip(*batches, strict=True)
        assert torch.equal(torch.cat(images), torch.stack([p[0] for p in plain]))
        assert torch.equal(torch.cat(masks), torch.stack([p[1] for p in plain]))


def test_data_cache_is_refused_when_it_would_take_over_half_the_free_memory(tmp_path, monkeypatch):
    write_camvid(tmp_path, count=2, height=8, width=12)
    # Per pair: 3 * 8 * 12 float32 image values (4 bytes) + 8 * 12 mask pixels (2 bytes).
    need = 2 * (3 * 8 * 12 * 4 + 8 * 12 * 2)
    config = DataConfig(dataset="camvid", root=str(tmp_path), cache=True, workers=0)
    monkeypatch.setattr(data_setup, "available_memory", lambda: 2 * need)
    open_split(config, "val", train=False)  # exactly half: allowed
    monkeypatch.setattr(data_setup, "available_memory", lambda: 2 * need - 1)
    with pytest.raises(ConfigError, match=r"data.cache would keep .* of the 'val' split .*"
                                          r"0\.png.*1 process.*try data.cache=false"):
        open_split(config, "val", train=False)

