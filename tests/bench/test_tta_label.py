"""bench/_side_by_side.py: how pixelwise's test-time augmentation is chosen and named in a row."""

from __future__ import annotations

import argparse

import pytest


def task(side_by_side, **tta):
    return side_by_side.Task("isbi2012", "recipe.yaml", "root", "root", "val", 256, 4, vflip=0.5,
                             scores=dict, **tta)


def options(side_by_side, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    side_by_side.add_common_arguments(parser, budget=600.0, crop="256", batch_size=4)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize(("recipe", "argv", "label", "scales"), [
    ({"tta": "d4"}, [], "d4", (1.0,)),  # no scales: the views' name alone, as before
    ({"tta": "d4", "tta_scales": (1.0, 1.25)}, [], "d4 x1,1.25", (1.0, 1.25)),
    ({"tta": "d4", "tta_scales": (1.0, 1.25)}, ["--tta-scales", "1"], "d4", (1.0,)),
    ({"tta": "h"}, ["--tta", "none", "--tta-scales", "0.75", "1"], "none x0.75,1", (0.75, 1.0)),
])
def test_the_recipes_tta_unless_the_command_line_says_otherwise(side_by_side, recipe, argv,
                                                                label, scales):
    chosen, args = task(side_by_side, **recipe), options(side_by_side, *argv)
    assert side_by_side.tta_label(*side_by_side.scoring_tta("pixelwise", chosen, args)) == label
    assert side_by_side.scoring_tta("pixelwise", chosen, args)[1] == scales


@pytest.mark.parametrize(("argv", "views", "scales"), [
    ([], "none", (1.0,)),  # the peers' plain loop: no test-time augmentation
    (["--peer-tta"], "d4", (1.0, 1.25)),  # pixelwise's, for a like-for-like score
    (["--peer-tta", "--tta-scales", "1"], "d4", (1.0,)),
])
def test_the_peers_are_scored_with_pixelwises_tta_only_when_asked(side_by_side, argv, views,
                                                                  scales, monkeypatch):
    from torch import nn

    from pixelwise.inference.tta import DIHEDRAL, TestTimeAugmented

    chosen, args = task(side_by_side, tta="d4", tta_scales=(1.0, 1.25)), options(side_by_side, *argv)
    assert side_by_side.scoring_tta("smp-unet-r34", chosen, args) == (views, scales)
    scored = []
    monkeypatch.setattr(side_by_side, "open_dataset", lambda *a, **k: type(
        "Data", (list,), {"info": type("Info", (), {"num_classes": 2, "ignore_index": 255})})())
    monkeypatch.setattr(side_by_side, "validate", lambda model, *a, **k: scored.append(model))
    peer = nn.Conv2d(1, 2, 3, padding=1)
    how = side_by_side.scoring_tta("smp-unet-r34", chosen, args)
    side_by_side.score_peer(peer, chosen, "cpu", *how)
    if views == "none":
        assert scored == [peer]
    else:
        assert isinstance(scored[0], TestTimeAugmented) and scored[0].model is peer
        assert (scored[0].flips, scored[0].scales) == (DIHEDRAL, scales)


@pytest.mark.parametrize("scale", ["0", "-1", "nan"])
def test_a_scale_that_is_not_positive_is_refused_before_any_training(side_by_side, scale, capsys):
    with pytest.raises(SystemExit):
        options(side_by_side, "--tta-scales", "1", scale)
    assert f"scales must be positive, got {scale}" in capsys.readouterr().err
