"""Geometry: the size rules a model states about itself, checked by hand on the paper's U-Net."""

import pytest
from torch import nn

from pixelwise.errors import ConfigError
from pixelwise.models import SAME_SIZE, Geometry, geometry_of

PAPER_UNET = Geometry(align=16, border=92, smallest_input=188)  # depth 4: 572 -> 388


def test_valid_geometry_maps_572_to_388_and_accepts_188_plus_16k():
    assert not PAPER_UNET.same_size
    assert PAPER_UNET.output_size(572) == 388
    assert [s for s in range(180, 230) if PAPER_UNET.accepts(s)] == [188, 204, 220]


def test_valid_geometry_rejects_other_sizes_naming_the_nearest():
    with pytest.raises(ConfigError, match=r"188 \+ 16 \* k .* got 575; try 572"):
        PAPER_UNET.output_size(575)


def test_nearest_and_next_input_sizes_by_hand():
    assert PAPER_UNET.nearest_input_size(512) == 508  # 508 is 4 away, 524 is 12
    assert PAPER_UNET.nearest_input_size(516) == 524  # a tie: the larger
    assert PAPER_UNET.nearest_input_size(1) == 188
    assert PAPER_UNET.input_size_at_least(509) == 524
    assert PAPER_UNET.input_size_at_least(508) == 508


def test_same_size_geometry_accepts_every_size_whatever_its_alignment():
    geometry = Geometry(align=32)
    assert geometry.same_size
    assert [geometry.output_size(s) for s in (1, 33, 97)] == [1, 33, 97]
    assert geometry.nearest_input_size(37) == geometry.input_size_at_least(37) == 37


def test_a_module_without_geometry_is_same_size_with_alignment_one():
    assert geometry_of(nn.Conv2d(1, 2, 1)) == SAME_SIZE == Geometry(align=1)


@pytest.mark.parametrize("fields", [{"align": 0}, {"border": -1}, {"border": 3, "smallest_input": 6}])
def test_inconsistent_geometry_raises_config_error(fields):
    with pytest.raises(ConfigError, match="geometry must have"):
        Geometry(**fields)
