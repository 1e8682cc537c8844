"""Label maps from class scores: `class_ids` against numpy's argmax, ties included."""

import numpy as np
import torch

from pixelwise.labels import class_ids


def test_class_ids_are_numpys_argmax_with_ties_going_to_the_first_class():
    scores = torch.randint(0, 3, (2, 11, 37, 53)).float()  # many ties among 11 classes
    np.testing.assert_array_equal(class_ids(scores), np.argmax(scores.numpy(), axis=1))
    np.testing.assert_array_equal(class_ids(scores[0], 0), np.argmax(scores[0].numpy(), axis=0))
    channels_last = scores.contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(class_ids(channels_last), np.argmax(scores.numpy(), axis=1))
    assert class_ids(torch.zeros(1, 4, 2, 2)).eq(0).all()  # a full tie: the first class
