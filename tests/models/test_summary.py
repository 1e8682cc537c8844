from pixelwise.models import describe_models
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
