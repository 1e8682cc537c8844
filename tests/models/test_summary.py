import sys

import pytest
import torch

from pixelwise.models import describe_encoders, describe_models
from pixelwise.models.summary import STANDARD_CONFIGURATIONS


def test_table_has_one_row_per_configuration_with_strides_and_counts():
    table = describe_models(
        [("fcn32s", 21, {"backbone": "resnet18"}), ("fcn8s", 21, {}), ("unet", 2, {"depth": 2})]
    )
    assert [row.output_stride for row in table.rows] == [32, 8, 1]
    assert [row.backbone for row in table.rows] == ["resnet18", "vgg16", "-"]
    assert 133.5e6 < table.rows[1].parameters < 135e6
    lines = str(table).splitlines()
    assert lines[0].split() == ["model", "classes", "backbone", "stride", "parameters", "options"]
    assert lines[2].split()[:5] == ["fcn8s", "21", "vgg16", "8", "134.49M"]
    assert lines[3].split()[-1] == "depth=2"


def test_standard_configurations_include_the_papers_networks():
    assert ("fcn8s", 21, {"backbone": "vgg16"}) in STANDARD_CONFIGURATIONS
    assert ("unet", 2, {"in_channels": 1, "padding": "valid", "batch_norm": False}) in (
        STANDARD_CONFIGURATIONS
    )


def test_encoder_table_states_classifier_parameters_and_whether_weights_are_cached(
    tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "timm", None)  # torchvision's only (timm's: built to count)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save({}, tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    rows = {row.name: row for row in describe_encoders("resnet").rows}
    # the name or the family matches: ResNeXt and Wide ResNet are torchvision ResNets
    assert {"resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2"} <= set(rows)
    assert "mobilenet_v2" not in rows and rows["wide_resnet50_2"].family == "ResNet"
    assert rows["resnet18"].cached and not rows["resnet34"].cached
    assert rows["resnet18"].family == "ResNet" and rows["resnet18"].parameters == 11_689_512
    text = str(describe_encoders("resnet")).splitlines()
    assert text[0].split()[:2] == ["encoder", "family"]
    assert text[-1] == "timm:NAME encoders need pip install 'pixelwise[timm]'"


def test_timm_parameters_are_counted_only_for_a_narrow_filter(monkeypatch):
    timm = pytest.importorskip("timm")
    import pixelwise.models.summary as summary

    narrow = {row.name: row for row in describe_encoders("timm:resnet18d").rows}
    built = timm.create_model("resnet18d")
    assert narrow["timm:resnet18d"].parameters == sum(p.numel() for p in built.parameters())
    monkeypatch.setattr(summary, "TIMM_COUNT_LIMIT", 0)  # every filter is now too broad
    table = describe_encoders("timm:resnet18d")
    assert table.rows[0].parameters is None and "narrow --filter" in table.note
    assert str(table).splitlines()[1].split()[2] == "?"
