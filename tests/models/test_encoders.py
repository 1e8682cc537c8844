"""Encoders from torchvision's classification zoo (one per family) and timm, on tiny inputs.

Each family's smallest member is built once, on the meta device (its ImageNet classifier is never
initialised: VGG's alone costs seconds), and its feature extractor then gets random CPU weights;
every check runs on that one backbone under an FCN-8s and a U-Net head.
"""

import copy
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from pixelwise.errors import CheckpointError, ConfigError, MissingExtraError, WeightsNotFoundError
from pixelwise.models import build
from pixelwise.models.backbones import build_backbone, encoder_families
from pixelwise.models.fcn import FCN
from pixelwise.models.unet import EncoderUNet, encoder_unet_widths

SMALLEST = {family: names[0] for family, names in encoder_families().items()}
SIZES = [(1, 1), (5, 7), (37, 70)]  # below the total stride, odd, not a multiple of 32
# Widths on which the stated grids (stride * i + offset) are mirror-symmetric at every stage:
# W - 1 = 2 * offset + stride * (n - 1). Centred encoders (offset 0 at every stride): W = 33, cells
# on pixels 0 and 32. ConvNeXt (4x4 stem: offsets 1.5, 3.5, 7.5, 15.5 = s / 2 - 0.5) and VGG-BN
# (2x2 pools: 0.5 ... 15.5): W = 64. DenseNet (2x2 average pools after stride 4: offsets 0, 0, 2,
# 6, 14): W = 61 (61 - 1 = 2 * 14 + 32 = 2 * 6 + 16 * 3 = 2 * 2 + 8 * 7 = 4 * 15 = 2 * 30).
SYMMETRIC_WIDTH = {family: 33 for family in SMALLEST} | {"ConvNeXt": 64, "DenseNet": 61, "VGG-BN": 64}
# Every kind of grid: centred with squeeze-excitation, a 4x4 stem, 2x2 average and max pools
OFFSET_SAMPLE = ("EfficientNet", "ConvNeXt", "DenseNet", "VGG-BN")


def with_random_weights(module: nn.Module) -> nn.Module:
    """``module`` moved from the meta device to the CPU with random weights: He-initialised
    convolutions (so features keep varying in space through a deep net), identity batch norm."""
    module = module.to_empty(device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for tensor in module.parameters():
            tensor.normal_(std=0.1)  # e.g. ConvNeXt's layer_scale, which no reset covers
    for layer in module.modules():
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    return module


@pytest.fixture(scope="module", params=list(SMALLEST))
def family(request):
    return request.param


@pytest.fixture(scope="module")
def backbone(family):
    with torch.device("meta"):
        meta = build_backbone(SMALLEST[family], in_channels=2)
    return with_random_weights(meta)


def unet_head(backbone) -> EncoderUNet:
    torch.manual_seed(0)
    return EncoderUNet(backbone, 3, encoder_unet_widths(4, None), batch_norm=True, up_mode="transpose")


def heads(backbone) -> dict[str, nn.Module]:
    """FCN-8s and the U-Net on one ``backbone`` (shared)."""
    return {"fcn8s": FCN(backbone, num_classes=3, skips=2), "unet": unet_head(backbone)}


def test_stated_channels_and_strides_match_real_output_shapes(backbone):
    with torch.no_grad():
        out = backbone.eval()(torch.randn(1, 2, 9, 40))
        wider = backbone(torch.randn(1, 2, 9, 40 + 32))
    assert [stage.name for stage in backbone.stages] == list(out)
    assert {8, 16, 32} <= {stage.stride for stage in backbone.stages}
    for stage in backbone.stages:
        assert out[stage.name].shape[1] == stage.channels, stage
        assert wider[stage.name].shape[-1] - out[stage.name].shape[-1] == 32 // stage.stride, stage


def test_logits_have_the_input_size_at_odd_and_tiny_sizes(backbone):
    for name, model in heads(backbone).items():
        with torch.no_grad():
            for size in SIZES:
                logits = model.eval()(torch.randn(1, 2, *size))
                assert logits.shape == (1, 3, *size), (name, size)
                assert torch.isfinite(logits).all(), (name, size)


def test_gradient_reaches_every_parameter(backbone):
    # Under the U-Net: FCN's head is the same code for every backbone (test_all_models). In eval
    # mode: in training mode a batch norm removes any per-channel constant, so a bias feeding only
    # batch norms (MobileNetV2's projection biases) rightly gets a zero gradient.
    model = unet_head(backbone).eval()
    x, target = torch.randn(2, 2, 13, 21), torch.randint(0, 3, (2, 13, 21))
    F.cross_entropy(model(x), target).backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert silent == []
    model.zero_grad(set_to_none=True)


def test_stated_offsets_predict_exact_flip_symmetry(backbone, family):
    # As in test_backbones: with left-right symmetric kernels, features of the flipped input are
    # the flipped features exactly when the cell grid is symmetric in the image.
    if family not in OFFSET_SAMPLE:
        pytest.skip("same layer arithmetic as a sampled family (test time)")
    # float64: in a deep random net float32 rounding grows to percents by stride 32
    symmetric = with_random_weights(copy.deepcopy(backbone)).double().eval()
    with torch.no_grad():
        for module in symmetric.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.copy_((module.weight + module.weight.flip(-1)) / 2)
    for width in (SYMMETRIC_WIDTH[family], SYMMETRIC_WIDTH[family] + 1):
        x = torch.randn(1, 2, 64, width, dtype=torch.float64)
        with torch.no_grad():  # the body: the bottom/right padding would break the symmetry
            both = symmetric.body(torch.cat([x, x.flip(-1)]))
        for stage in symmetric.stages:
            plain, flipped = both[stage.name]
            predicted = width - 1 == 2 * stage.offset + stage.stride * (plain.shape[-1] - 1)
            mismatch = (flipped - plain.flip(-1)).abs().max()
            variation = (plain - plain.mean(-1, keepdim=True)).abs().max()  # the scale that counts
            assert variation > 1e-3 * plain.abs().max(), stage  # else symmetry says nothing
            assert bool(mismatch <= 1e-4 * variation) == predicted, (stage, width)
            assert predicted == (width == SYMMETRIC_WIDTH[family]), (stage, width)


def test_the_unet_builder_takes_any_torchvision_classifier_name():
    model = build("unet", 2, encoder="mobilenet_v3_small", base_channels=4).eval()
    assert isinstance(model, EncoderUNet)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 19, 23)).shape == (1, 2, 19, 23)


def test_a_classifier_without_stride_8_16_32_maps_is_refused():
    with torch.device("meta"), pytest.raises(ConfigError, match="strides 8, 16 and 32, got"):
        build_backbone("squeezenet1_1", in_channels=3)


def test_fcn_vgg16_is_not_a_unet_encoder():
    with pytest.raises(ConfigError, match="try encoder='resnet34' or 'vgg16_bn'"):
        build("unet", 2, encoder="vgg16")


@pytest.fixture(scope="module")
def mobilenet_state():
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v3_small().state_dict()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_local_weights_file_is_loaded(tmp_path, mobilenet_state, suffix):
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(mobilenet_state, path)
    else:
        torch.save(mobilenet_state, path)
    torch.manual_seed(1)  # another random init, which the file must overwrite
    backbone = build_backbone("mobilenet_v3_small", in_channels=3, pretrained=str(path))
    loaded = backbone.body.state_dict()
    for key in ("features.0.0.weight", "features.12.1.running_var"):
        torch.testing.assert_close(loaded[key], mobilenet_state[key])


def test_a_local_weights_file_of_another_model_raises_naming_the_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(CheckpointError, match=r"match torchvision.models.mobilenet_v3_small, got \d+ missing"):
        build_backbone("mobilenet_v3_small", in_channels=3, pretrained=path)


def test_a_missing_local_weights_file_raises_naming_it(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=str(tmp_path / "absent.safetensors")):
        build("fcn32s", 2, backbone="mobilenet_v3_small", pretrained_backbone=str(tmp_path / "absent.safetensors"))


def test_pretrained_backbone_rejects_other_values():
    with pytest.raises(ConfigError, match="pretrained_backbone must be True, False or a path"):
        build("unet", 2, encoder="resnet18", pretrained_backbone="imagenet")


def test_without_timm_a_timm_name_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm then raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'pixelwise\[timm\]'"):
        build_backbone("timm:resnet18d", in_channels=3)


@pytest.fixture(scope="module")
def timm():
    return pytest.importorskip("timm")


def test_timm_encoder_states_its_feature_info_and_keeps_the_input_size(timm):
    torch.manual_seed(0)
    backbone = build_backbone("timm:resnet18d", in_channels=2).eval()
    info = timm.create_model("resnet18d", features_only=True).feature_info
    assert [(s.channels, s.stride) for s in backbone.stages] == list(
        zip(info.channels(), info.reduction(), strict=True)
    )
    with torch.no_grad():
        out = backbone(torch.randn(1, 2, 9, 40))
        assert [out[s.name].shape[1] for s in backbone.stages] == info.channels()
        for model in heads(backbone).values():
            for size in SIZES:
                assert model.eval()(torch.randn(1, 2, *size)).shape == (1, 3, *size)


def test_timm_model_torch_fx_cannot_trace_serves_the_unet_but_not_fcn(timm):
    # TF-style "same" padding depends on the input size: no offset can be stated, which FCN needs
    backbone = build_backbone("timm:tf_efficientnet_b0", in_channels=3).eval()
    assert all(stage.offset is None for stage in backbone.stages)
    with torch.no_grad():
        assert unet_head(backbone).eval()(torch.randn(1, 3, 13, 21)).shape == (1, 3, 13, 21)
    with pytest.raises(ConfigError, match="must state their offsets"):
        FCN(backbone, num_classes=3, skips=2)


def test_timm_local_weights_file_is_loaded(timm, tmp_path):
    torch.manual_seed(0)
    state = timm.create_model("resnet18d").state_dict()
    torch.save(state, tmp_path / "resnet18d.pth")
    model = build("unet", 2, encoder="timm:resnet18d", pretrained_backbone=str(tmp_path / "resnet18d.pth"))
    loaded = model.encoder.body.model.state_dict()
    torch.testing.assert_close(loaded["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])


def test_timm_weights_missing_offline_raise_naming_the_hub_cache(timm, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as info:
        build_backbone("timm:resnet18d", in_channels=3, pretrained=True)
    assert str(tmp_path / "models--timm--resnet18d.ra2_in1k") in str(info.value)
