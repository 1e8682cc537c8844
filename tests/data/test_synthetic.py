"""SyntheticShapes: deterministic, exact masks, every class present, usable as a dataset."""

import numpy as np
import torch

from pixelwise.data import DatasetInfo, SyntheticShapes, default_palette


def test_item_depends_only_on_seed_and_index():
    first = SyntheticShapes(10, 32, seed=3)
    second = SyntheticShapes(10, 32, seed=3)
    image_late, mask_late = second[7]  # asked for in another order, another object
    image, mask = first[7]
    assert torch.equal(image, image_late) and torch.equal(mask, mask_late)
    assert not torch.equal(SyntheticShapes(10, 32, seed=4)[7][0], image)


def test_items_are_float_images_and_int64_masks_of_the_asked_size():
    image, mask = SyntheticShapes(2, (40, 56))[0]
    assert image.shape == (3, 40, 56) and image.dtype == torch.float32
    assert mask.shape == (40, 56) and mask.dtype == torch.int64
    assert 0.0 <= image.min() and image.max() <= 1.0


def test_every_class_appears_and_masks_hold_only_class_ids():
    data = SyntheticShapes(20, 48, seed=0)
    counts = sum(np.bincount(data[i][1].numpy().ravel(), minlength=6) for i in range(len(data)))
    assert counts[5] == 0  # no value beyond the 5 classes
    assert (counts[:5] > 0).all()
    assert counts[0] > counts[1:5].max()  # background dominates, as in real scenes


def test_mask_marks_exactly_the_pixels_painted_in_the_class_colour():
    # Without noise, every object pixel holds its object's jittered class colour (times a
    # shading within +-15 %); background texture is greyish. The channel order of the class
    # colours (red circles, green rectangles, blue triangles, yellow lines) must match the mask.
    image, mask = SyntheticShapes(1, 64, seed=1, noise=0.0, shapes=(8, 8))[0]
    dominant = {1: 0, 2: 1, 3: 2}
    for class_id, channel in dominant.items():
        pixels = image[:, mask == class_id]
        if pixels.numel():
            assert (pixels.argmax(0) == channel).float().mean() > 0.95


def test_info_describes_five_classes_with_voc_colours():
    info = SyntheticShapes(1).info
    assert isinstance(info, DatasetInfo)
    assert info.num_classes == 5 and info.classes[0] == "background"
    assert info.palette == default_palette(5) and info.in_channels == 3


def test_transforms_receive_and_return_the_pair():
    flip = SyntheticShapes(1, 32, transforms=lambda image, mask: (image.flip(-1), mask.flip(-1)))
    image, mask = SyntheticShapes(1, 32)[0]
    flipped_image, flipped_mask = flip[0]
    assert torch.equal(flipped_image, image.flip(-1)) and torch.equal(flipped_mask, mask.flip(-1))


def test_works_with_a_dataloader():
    loader = torch.utils.data.DataLoader(SyntheticShapes(6, 32), batch_size=3)
    images, masks = next(iter(loader))
    assert images.shape == (3, 3, 32, 32) and masks.shape == (3, 32, 32)
