import numpy as np
import pytest
import torch

from pixelwise.errors import ConfigError
from pixelwise.models import (
    build,
    unet_nearest_valid_input_size,
    unet_valid_input_sizes,
    unet_valid_output_size,
)
from pixelwise.models.unet import SMP_DECODER_CHANNELS


def tiny_unet(**options):
    defaults = dict(in_channels=1, base_channels=4, depth=3)
    return build("unet", 3, **{**defaults, **options})


@pytest.mark.parametrize("up_mode", ["transpose", "bilinear"])
@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("size", [(5, 7), (1, 1), (33, 64), (97, 131)])
def test_same_padding_keeps_any_input_size(size, batch_norm, up_mode):
    model = tiny_unet(batch_norm=batch_norm, up_mode=up_mode).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, *size))
    assert out.shape == (2, 3, *size)


def test_train_mode_output_and_every_parameter_gets_a_gradient():
    model = tiny_unet().train()
    out = model(torch.randn(2, 1, 13, 21))
    assert out.shape == (2, 3, 13, 21)
    out.square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_paper_valid_unet_maps_572_to_388():
    # Paper Fig. 1: 572x572 input tile, 388x388 output segmentation map. Meta device: no compute.
    with torch.device("meta"):
        model = build("unet", 2, in_channels=1, padding="valid", batch_norm=False)
        out = model(torch.empty(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)


def test_valid_output_size_matches_hand_worked_sizes():
    # 572 -568-284-280-140-136-68-64-32-28 | 56-52-104-100-200-196-392-388 (paper Fig. 1)
    assert unet_valid_output_size(572, depth=4) == 388
    # depth 1: 20 -> 16 -> 8 -> 4 -> 8 -> 4
    assert unet_valid_output_size(20, depth=1) == 4


def test_valid_input_sizes_are_sixteen_k_plus_sixty_at_depth_4():
    # x0 = 16 * x4 + 60 where x4 is the bottleneck input; x4 >= 8 keeps every map >= 1 pixel.
    assert unet_valid_input_sizes(depth=4, max_size=600) == list(range(188, 601, 16))


def test_nearest_valid_input_size():
    assert unet_nearest_valid_input_size(570, depth=4) == 572
    assert unet_nearest_valid_input_size(580, depth=4) == 588  # tie 572/588 -> larger
    assert unet_nearest_valid_input_size(10, depth=4) == 188


def test_invalid_valid_size_raises_config_error_naming_the_nearest_size():
    model = tiny_unet(padding="valid", depth=2)  # valid sizes 4k + 12: ..., 56, 60, 64, ...
    with pytest.raises(ConfigError, match=r"got 61; try 60 or padding='same'"):
        model(torch.randn(1, 1, 60, 61))


def test_valid_unet_returns_the_centre_map_on_a_small_tile():
    model = tiny_unet(padding="valid", depth=2).eval()
    size = 4 * 12 + 12  # x0 = 2**depth * x2 + 4 * (2**depth - 1) with bottleneck input x2 = 12
    out_size = unet_valid_output_size(size, depth=2)
    assert out_size == 2 * (2 * (12 - 4) - 4) - 4  # = 20
    with torch.no_grad():
        out = model(torch.randn(1, 1, size, size))
    assert out.shape == (1, 3, out_size, out_size)


def test_paper_unet_has_31m_parameters():
    # Independent count: 3x3 convs (9*cin*cout + cout), 2x2 up-convs (4*cin*cout + cout), 1x1 head.
    widths = [64, 128, 256, 512, 1024]
    down = sum(
        9 * a * b + b + 9 * b * b + b for a, b in zip([1, *widths[:-1]], widths, strict=True)
    )
    up = sum(4 * widths[i + 1] * widths[i] + widths[i] for i in range(4))
    decode = sum(9 * 2 * w * w + w + 9 * w * w + w for w in widths[:-1])
    expected = down + up + decode + 64 * 2 + 2
    with torch.device("meta"):
        model = build("unet", 2, in_channels=1, padding="valid", batch_norm=False)
    count = sum(p.numel() for p in model.parameters())
    assert count == expected
    assert 30.5e6 < count < 31.5e6


def test_same_padding_pooling_and_upsampling_are_pixel_aligned():
    # Depth 1, 15 rows, change only the last row (14). Hand-worked reach of that change:
    # encoder convs (radius 2) -> rows 12-14; ceil-mode pool -> cells 6-7; bottleneck convs
    # (radius 2) -> cells 4-7; 2x2 up-conv -> rows 8-15, cropped at the end to 15 rows;
    # decoder convs (radius 2) -> rows 6-14. So rows 0-5 are untouched and row 6 changes;
    # cropping the up-sampled map at its start instead would shift this to row 5.
    torch.manual_seed(0)
    model = tiny_unet(depth=1, batch_norm=False).eval()
    x = torch.randn(1, 1, 15, 15)
    y = x.clone()
    y[..., -1, :] += 5.0
    with torch.no_grad():
        diff = (model(x) - model(y)).abs().amax(dim=(0, 1, 3))
    assert diff[:6].max() == 0
    assert diff[6] > 0


def test_pretrained_backbone_without_an_encoder_raises_config_error():
    with pytest.raises(ConfigError, match="try encoder='resnet34'"):
        build("unet", 2, pretrained_backbone=True)


@pytest.mark.parametrize("options", [{"padding": "valid"}, {"depth": 3}])
def test_resnet_encoder_rejects_valid_padding_and_other_depths(options):
    with pytest.raises(ConfigError, match="an encoder must have padding='same' and depth 5"):
        build("unet", 2, encoder="resnet18", **options)


def test_resnet_encoder_decoder_widths_follow_base_channels():
    # strides 16, 8, 4, 2 -> base * stride / 2, then base at full resolution (hand-worked for 8)
    with torch.device("meta"):
        model = build("unet", 2, encoder="resnet34", base_channels=8)
    assert [block[0].out_channels for block in model.decode] == [64, 32, 16, 8, 8]
    # first decoder block sees resnet34 layer3 (256 channels) + the up-sampled 64
    assert model.decode[0][0].in_channels == 256 + 64


def test_default_decoder_widths_are_those_of_checkpoints_saved_before_decoder_channels():
    # a checkpoint stores only the options its config set, so an old one rebuilds these widths
    with torch.device("meta"):
        model = build("unet", 2, encoder="resnet34")
    assert [block[0].out_channels for block in model.decode] == [512, 256, 128, 64, 64]


def test_decoder_channels_set_each_decoder_width_and_the_head_input():
    with torch.device("meta"):
        model = build("unet", 2, encoder="resnet34", decoder_channels=[256, 128, 64, 32, 16])
    assert [block[0].out_channels for block in model.decode] == [256, 128, 64, 32, 16]
    assert model.decode[0][0].in_channels == 256 + 256  # layer3 + the up-sampled 512 -> 256
    assert model.decode[4][0].in_channels == 16  # full resolution: no skip
    assert model.head.in_channels == 16


def test_smp_decoder_widths_cost_under_half_the_default():
    from torch.utils.flop_counter import FlopCounterMode

    def gflop(**options):
        with torch.device("meta"):
            model = build("unet", 2, encoder="resnet34", **options).eval()
            with FlopCounterMode(display=False) as counter:
                model(torch.randn(1, 3, 256, 256))
        return counter.get_total_flops() / 1e9

    assert gflop(decoder_channels=SMP_DECODER_CHANNELS) < 0.5 * gflop()


def test_decoder_channels_keep_any_input_size():
    model = build("unet", 3, encoder="resnet18", decoder_channels=[8, 8, 4, 4, 2]).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 37, 53)).shape == (1, 3, 37, 53)


@pytest.mark.parametrize("options, message", [
    ({"decoder_channels": [256, 128, 64, 32, 16]}, "need an encoder"),
    ({"encoder": "resnet18", "decoder_channels": [256, 128, 64, 32]}, "must be 5 widths"),
    ({"encoder": "resnet18", "decoder_channels": 64}, "must be 5 widths"),
    ({"encoder": "resnet18", "decoder_channels": [64] * 5, "base_channels": 32},
     "base_channels left at 64"),
    ({"encoder": "resnet18", "decoder_channels": [64, 64, 64, 64, 0]}, "width must be an integer"),
])
def test_bad_decoder_channels_raise_config_error(options, message):
    with torch.device("meta"), pytest.raises(ConfigError, match=message):
        build("unet", 2, **options)


def test_convolutions_are_he_initialised_as_in_the_paper():
    # U-Net §3: std sqrt(2 / N), N = 9 * C_in for a 3x3 convolution (the paper: 9 * 64).
    torch.manual_seed(0)
    model = build("unet", 2, in_channels=1, base_channels=64, depth=1, batch_norm=False)
    conv = model.down[1][2]  # second 3x3 convolution of the bottom level: 128 -> 128
    assert conv.in_channels == 128
    expected = (2 / (9 * 128)) ** 0.5
    assert abs(conv.weight.std().item() - expected) / expected < 0.02
    assert conv.bias.abs().max() == 0


@pytest.mark.parametrize(("depth", "size"), [(2, (37, 50)), (2, (9, 14)), (3, (61, 45))])
def test_mirror_extended_valid_unet_equals_the_net_on_numpy_reflect_padded_input(depth, size):
    from pixelwise.models import MirrorExtended, unet_valid_border

    torch.manual_seed(0)
    net = build("unet", 3, in_channels=2, base_channels=4, depth=depth, padding="valid",
                batch_norm=False).eval()
    x = torch.randn(1, 2, *size)
    border = unet_valid_border(depth)
    # Independently: numpy reflect padding to a valid size, the raw net, then the top-left crop.
    valid = [next(s for s in range(n + 2 * border, n + 2 * border + 2**depth + 1)
                  if s in unet_valid_input_sizes(depth, 4096)) for n in size]
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (border, valid[0] - size[0] - border),
                                (border, valid[1] - size[1] - border)), mode="reflect")
    with torch.no_grad():
        expected = net(torch.from_numpy(padded))[..., : size[0], : size[1]]
        got = MirrorExtended(net)(x)
    assert got.shape == (1, 3, *size)
    torch.testing.assert_close(got, expected)


def test_valid_unet_border_is_92_pixels_at_depth_4():
    from pixelwise.models import unet_valid_border

    assert unet_valid_border(4) == (572 - 388) // 2 == 92
