import pytest
import torch
from torch import nn

from pixelwise.errors import ConfigError
from pixelwise.models import backbones, build
from pixelwise.models.backbones import BACKBONES, build_backbone

# Input widths on which each backbone's feature grids (stride * i + offset) are mirror-symmetric,
# from the stated offsets: W - 1 = 2 * offset + stride * (n - 1) for every stage. VGG16 (pad 100):
# W = 26 gives pool3 28 cells (-95.5 ... 120.5), pool4 14, fc7 1 (at 12.5 = 25 / 2).
# Offset-0 backbones: W = 33 puts the first and last cells on pixels 0 and 32 at every stride.
SYMMETRIC_WIDTH = {"vgg16": 26, "resnet18": 33, "resnet34": 33, "resnet50": 33}
SYMMETRIC_WIDTH["mobilenet_v3_large"] = 33


def tiny_backbone(name: str, in_channels: int = 3):
    fc_channels = 8 if name == "vgg16" else 4096
    return build_backbone(name, in_channels=in_channels, pretrained=False, fc_channels=fc_channels)


@pytest.mark.parametrize("name", BACKBONES)
def test_stated_channels_and_strides_match_real_output_shapes(name):
    # Shapes only, so on the meta device (no compute): 32 more input pixels add 32 / stride cells.
    with torch.device("meta"):
        backbone = tiny_backbone(name, in_channels=2)
        out = backbone(torch.empty(1, 2, 9, 40))
        wider = backbone(torch.empty(1, 2, 9, 40 + 32))
    assert [stage.name for stage in backbone.stages] == list(out)
    for stage in backbone.stages:
        assert out[stage.name].shape[1] == stage.channels, stage
        assert wider[stage.name].shape[-1] - out[stage.name].shape[-1] == 32 // stage.stride, stage


@pytest.mark.parametrize("name", BACKBONES)
def test_stated_offsets_predict_exact_flip_symmetry(name):
    # With left-right symmetric kernels, features of the flipped input are the flipped features
    # exactly when the cell grid is symmetric in the image, i.e. when the stated offset is right.
    torch.manual_seed(0)
    backbone = tiny_backbone(name).eval()
    with torch.no_grad():
        for module in backbone.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.copy_((module.weight + module.weight.flip(-1)) / 2)
    for width in (SYMMETRIC_WIDTH[name], SYMMETRIC_WIDTH[name] + 1):
        x = torch.randn(1, 3, 5, width)
        with torch.no_grad():
            both = backbone(torch.cat([x, x.flip(-1)]))
        for stage in backbone.stages:
            plain, flipped = both[stage.name]
            cells = plain.shape[-1]
            predicted = width - 1 == 2 * stage.offset + stage.stride * (cells - 1)
            mismatch = (flipped - plain.flip(-1)).abs().max()
            symmetric = bool(mismatch <= 1e-4 * plain.abs().max())  # scale-free
            assert symmetric == predicted, (stage, width)
            assert symmetric == (width == SYMMETRIC_WIDTH[name]), (stage, width)


def test_in_channels_adapts_the_first_convolution_by_averaging_rgb():
    torch.manual_seed(0)
    rgb = tiny_backbone("resnet18")
    torch.manual_seed(0)
    gray = tiny_backbone("resnet18", in_channels=1)
    conv_rgb = rgb.body.conv1.weight
    torch.testing.assert_close(gray.body.conv1.weight, conv_rgb.mean(1, keepdim=True) * 3)


def test_unknown_backbone_raises_config_error_naming_close_names():
    with pytest.raises(ConfigError, match=r"backbone must be a torchvision .* try one of \['resnet1"):
        build_backbone("resnet19", in_channels=3, pretrained=False)


def test_fc_channels_with_a_non_vgg_backbone_raises():
    with pytest.raises(ConfigError, match="fc_channels only applies to backbone='vgg16'"):
        build_backbone("resnet18", in_channels=3, pretrained=False, fc_channels=8)


def test_a_second_build_reuses_the_traced_graphs_and_computes_the_same(monkeypatch):
    def body(model):  # the traced feature extractor inside the model
        return next(m for m in model.modules() if isinstance(m, torch.fx.GraphModule))

    backbones._EXTRACTOR_GRAPHS.clear()
    torch.manual_seed(0)
    first = build("unet", 3, encoder="resnet18")  # a decoder with weights: outputs not constant
    traced = []
    monkeypatch.setattr(backbones, "create_feature_extractor",
                        lambda *args, **kwargs: traced.append(args))
    torch.manual_seed(0)
    second = build("unet", 3, encoder="resnet18")
    assert traced == []  # no second trace
    assert body(second).graph is not body(first).graph  # each its own copy
    x = torch.randn(2, 3, 37, 45)
    for training in (True, False):  # batch statistics in one mode, running ones in the other
        first.train(training)
        second.train(training)
        out = first(x)
        assert out.std() > 0 and torch.equal(out, second(x)), training
