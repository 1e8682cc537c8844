"""Copy-paste of rare classes between the samples of a batch (`ClassPaste`,
`data.augment.paste_classes`), checked against numpy's `np.roll` and hand-worked masks."""

import numpy as np
import pytest
import torch

from pixelwise.config import DataConfig
from pixelwise.data.transforms import ClassPaste, paste_classes, train_preset
from pixelwise.device import SINGLE_PROCESS
from pixelwise.engine.data_setup import build_loader, open_split
from pixelwise.errors import ConfigError


def pasted_by_hand(image: np.ndarray, mask: np.ndarray, donor_image: np.ndarray,
                   donor_mask: np.ndarray, classes: list[int], shift: int):
    """The rule written out with numpy: the donor rolled `shift` columns, its `classes`
    pixels copied over."""
    rolled_mask, rolled_image = np.roll(donor_mask, shift, -1), np.roll(donor_image, shift, -1)
    where = np.isin(rolled_mask, classes)
    image, mask = image.copy(), mask.copy()
    mask[where] = rolled_mask[where]
    image[:, where] = rolled_image[:, where]
    return image, mask


def two_samples() -> tuple[torch.Tensor, torch.Tensor]:
    masks = torch.tensor([[[0, 0, 0, 0], [0, 0, 1, 1]],
                          [[2, 0, 0, 0], [2, 0, 3, 0]]])  # (2, 2, 4): class 2 only in sample 1
    images = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).view(2, 3, 2, 4)
    return images, masks


def test_a_single_column_batch_pastes_exactly_the_hand_worked_pixels():
    masks = torch.tensor([[[0], [1], [0]], [[2], [2], [0]]])  # width 1: the shift is 0
    images = torch.tensor([[[[10.0], [11.0], [12.0]]], [[[20.0], [21.0], [22.0]]]])
    torch.manual_seed(0)
    out_images, out_masks = paste_classes(images, masks, torch.tensor([2]), p=1.0)
    assert out_masks.tolist() == [[[2], [2], [0]], [[2], [2], [0]]]
    assert out_images.flatten().tolist() == [20.0, 21.0, 12.0, 20.0, 21.0, 22.0]


@pytest.mark.parametrize("seed", range(5))
def test_each_sample_gets_the_other_ones_classes_at_some_shift_as_numpy_rolls_them(seed):
    images, masks = two_samples()
    before = images.clone(), masks.clone()
    torch.manual_seed(seed)
    out_images, out_masks = paste_classes(images, masks, torch.tensor([2, 3]), p=1.0)
    assert torch.equal(images, before[0]) and torch.equal(masks, before[1])  # inputs untouched
    for i, donor in ((0, 1), (1, 0)):  # two samples: the donor is always the other one
        candidates = [pasted_by_hand(images[i].numpy(), masks[i].numpy(), images[donor].numpy(),
                                     masks[donor].numpy(), [2, 3], shift) for shift in range(4)]
        assert any(np.array_equal(out_images[i].numpy(), image)
                   and np.array_equal(out_masks[i].numpy(), mask) for image, mask in candidates)
    assert (out_masks[0] == 2).sum() == 2 and (out_masks[0] == 3).sum() == 1  # all of sample 1's


def test_probability_zero_and_single_sample_batches_leave_the_batch_alone():
    images, masks = two_samples()
    unchanged = paste_classes(images, masks, torch.tensor([2]), p=0.0)
    assert torch.equal(unchanged[0], images) and torch.equal(unchanged[1], masks)
    one = paste_classes(images[:1], masks[:1], torch.tensor([2]), p=1.0)
    assert torch.equal(one[1], masks[:1])


def test_about_p_of_the_samples_receive_pixels():
    masks = torch.zeros(400, 1, 1, dtype=torch.int64)
    masks[::2] = 5  # every other sample holds the class; a receiver is one without it
    torch.manual_seed(0)
    _, out = paste_classes(torch.zeros(400, 1, 1, 1), masks, torch.tensor([5]), p=0.3)
    receivers = (out[1::2] == 5).float().mean().item()  # donor holds it half the time
    assert 0.08 < receivers < 0.22  # expected 0.3 * 0.5 = 0.15


def test_the_collate_stacks_the_pairs_and_pastes():
    images, masks = two_samples()
    collate = ClassPaste([2], p=1.0)
    out_images, out_masks = collate([(images[0], masks[0]), (images[1], masks[1])])
    assert out_images.shape == (2, 3, 2, 4) and (out_masks[0] == 2).sum() == 2
    assert "ClassPaste(classes=[2], p=1.0)" in repr(train_preset(4, mean=(0.5,) * 3,
                                                                 std=(0.5,) * 3,
                                                                 paste_classes=[2], paste=1.0))


def test_paste_needs_a_crop_and_a_probability():
    with pytest.raises(ConfigError, match="paste_classes pastes between samples of one size"):
        train_preset(None, mean=(0.5,), std=(0.5,), paste_classes=[1])
    with pytest.raises(ConfigError, match=r"paste must be a probability in \[0, 1\], got 2"):
        train_preset(8, mean=(0.5,), std=(0.5,), paste_classes=[1], paste=2)


def test_the_config_names_classes_and_the_training_loader_pastes_them():
    config = DataConfig(dataset="synthetic", crop_size=16, batch_size=8, workers=0,
                        options={"n": 8, "size": 16},
                        augment={"paste_classes": ["line"], "paste": 1.0, "hflip": 0.0})
    train = open_split(config, "train", train=True)
    plain = DataConfig(dataset="synthetic", crop_size=16, batch_size=8, workers=0,
                       options={"n": 8, "size": 16}, augment={"hflip": 0.0})
    counts = []
    for cfg, dataset in ((config, train), (plain, open_split(plain, "train", train=True))):
        torch.manual_seed(0)
        _, masks = next(iter(build_loader(dataset, cfg, SINGLE_PROCESS, train=True, seed=0)))
        counts.append(int((masks == 4).sum()))  # "line" is class 4
    assert counts[0] > counts[1] > 0
    val = build_loader(open_split(config, "val", train=False), config, SINGLE_PROCESS,
                       train=False, seed=0)
    assert not isinstance(val.collate_fn, ClassPaste)  # evaluation never pastes
    config.augment["paste_classes"] = ["lines"]
    with pytest.raises(ConfigError, match="data.augment.paste_classes .* got 'lines'; try 'line'"):
        open_split(config, "train", train=True)
