import pytest
import torch
from torch import nn

from pixelwise.errors import CheckpointError, ConfigError
from pixelwise.models import build, init_from
from pixelwise.models.backbones import Backbone, Stage
from pixelwise.models.fcn import FCN


def tiny_fcn(name: str, num_classes: int = 3, **options):
    return build(name, num_classes, backbone="resnet18", **options)


@pytest.mark.parametrize(
    ("name", "crops"),
    [("fcn32s", [19]), ("fcn16s", [5, 27]), ("fcn8s", [5, 9, 31])],
)
def test_vgg16_alignment_reproduces_the_reference_crop_offsets(name, crops):
    # Crop layers of the reference voc-fcn{32,16,8}s nets (skip crops, then the final crop);
    # a negative shift here means the skip map is cropped.
    with torch.device("meta"):
        model = build(name, 21, fc_channels=8)
    assert [abs(s) for s in model.shifts] == crops
    assert all(s < 0 for s in model.shifts[:-1])
    assert [m.kernel_size[0] for m in model.upsample.values()] == [4] * (len(crops) - 1) + [
        64 // 2 ** (len(crops) - 1)
    ]


class RampBody(nn.Module):
    """Fake backbone: channel 0 holds each cell's row position, channel 1 its column position."""

    def __init__(self, stages: tuple[Stage, ...]) -> None:
        super().__init__()
        self.stages = stages

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for stage in self.stages:
            # enough cells to reach two strides past the image's end
            cells_h = int((x.shape[-2] - 1 + 2 * stage.stride - stage.offset) // stage.stride) + 1
            cells_w = int((x.shape[-1] - 1 + 2 * stage.stride - stage.offset) // stage.stride) + 1
            rows = torch.arange(cells_h) * stage.stride + stage.offset
            cols = torch.arange(cells_w) * stage.stride + stage.offset
            out[stage.name] = torch.stack(torch.broadcast_tensors(rows[:, None], cols[None, :]))[
                None
            ]
        return out


@pytest.mark.parametrize(
    "offsets", [(-95.5, -91.5, -51.5), (0.0, 0.0, 0.0)], ids=["vgg16-pad100", "torchvision"]
)
@pytest.mark.parametrize("path", [32, 16, 8])
def test_every_fcn8s_path_lands_on_the_input_pixel_grid(offsets, path):
    # Feed the head cells whose value is their own input position; with only the score layer of
    # one path switched on (identity), bilinear upsampling reproduces this linear ramp, so the
    # output at pixel (y, x) must be exactly (y, x) if the crops align the grids, and off by
    # whole pixels otherwise. The fake grids reach two cells past the image on both sides, so no
    # pixel sees the faded border of a transposed convolution (VGG16's fc7 really starts at 12.5;
    # -51.5 is the same grid phase, and the reference crops are checked above).
    stages = tuple(
        Stage(f"s{stride}", 2, stride, offset)
        for stride, offset in zip((8, 16, 32), offsets, strict=True)
    )
    model = FCN(Backbone(RampBody(stages), stages), num_classes=2, skips=2)
    with torch.no_grad():
        model.score[str(path)].weight.copy_(torch.eye(2)[:, :, None, None])
    height, width = 37, 50
    with torch.no_grad():
        out = model(torch.zeros(1, 3, height, width))[0]
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    torch.testing.assert_close(out, torch.stack([ys, xs]).float(), atol=1e-3, rtol=0)


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (31, 32), (97, 131), (200, 3)])
@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s"])
def test_vgg16_fcn_output_matches_input_size_for_any_size(name, size):
    with torch.device("meta"):
        model = build(name, 21, fc_channels=8)
        out = model(torch.empty(1, 3, *size))
    assert out.shape == (1, 21, *size)


def test_fcn8s_vgg16_has_134m_parameters_for_21_classes():
    # Independent count: VGG16 convs, fc6 (7x7x512 -> 4096), fc7, three 1x1 score layers and the
    # 21x21 bilinear deconvolutions (4x4, 4x4, 16x16). FCN paper Table 1 / reference: ~134M.
    widths = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256)] + [(256, 256)] * 2
    widths += [(256, 512)] + [(512, 512)] * 5
    convs = sum(9 * a * b + b for a, b in widths)
    fc = (7 * 7 * 512 * 4096 + 4096) + (4096 * 4096 + 4096)
    scores = sum(c * 21 + 21 for c in (4096, 512, 256))
    deconvs = 21 * 21 * (16 + 16 + 256)
    with torch.device("meta"):
        model = build("fcn8s", 21)
    count = sum(p.numel() for p in model.parameters())
    assert count == convs + fc + scores + deconvs
    assert 133.5e6 < count < 135e6


def test_score_layers_start_at_zero_so_only_they_get_the_first_gradient():
    # FCN §4.2-4.3: zero-initialised scores. The first backward therefore reaches the score layers
    # only; everything behind them is reached after one optimiser step (see test_all_models).
    torch.manual_seed(0)
    model = tiny_fcn("fcn8s").train()
    out = model(torch.randn(2, 3, 40, 40))
    assert out.abs().max() == 0
    out.sum().backward()
    for name, param in model.named_parameters():
        has_gradient = param.grad is not None and bool(param.grad.abs().sum() > 0)
        assert has_gradient == name.startswith("score."), name


def test_at_once_scales_the_pool4_and_pool3_skips_by_1e_2_and_1e_4():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 40, 48)
    contributions = {}
    for at_once in (False, True):
        torch.manual_seed(1)
        model = tiny_fcn("fcn8s", at_once=at_once).eval()
        for stride in (16, 8):
            with torch.no_grad():
                model.score[str(stride)].weight.normal_()
                base = model(x)
                model.score[str(stride)].weight.zero_()
                contributions[at_once, stride] = base - model(x)
    torch.testing.assert_close(contributions[True, 16], 0.01 * contributions[False, 16])
    torch.testing.assert_close(contributions[True, 8], 1e-4 * contributions[False, 8])


def test_at_once_without_skips_raises_config_error():
    with pytest.raises(ConfigError, match="at_once must be False for fcn32s"):
        tiny_fcn("fcn32s", at_once=True)


def test_staged_init_copies_the_coarser_net_and_keeps_new_scores_at_zero():
    torch.manual_seed(0)
    fcn32s = tiny_fcn("fcn32s")
    with torch.no_grad():  # stand-in for training
        for param in fcn32s.parameters():
            param.add_(torch.randn_like(param))
    fcn16s = tiny_fcn("fcn16s")
    copied = init_from(fcn16s, fcn32s)
    assert "score.32.weight" in copied and "upsample.32to1.weight" not in copied
    torch.testing.assert_close(fcn16s.score["32"].weight, fcn32s.score["32"].weight)
    torch.testing.assert_close(fcn16s.backbone.body.conv1.weight, fcn32s.backbone.body.conv1.weight)
    assert fcn16s.score["16"].weight.abs().max() == 0
    fcn8s = tiny_fcn("fcn8s")
    copied = init_from(fcn8s, fcn16s.state_dict())
    assert {"score.16.weight", "upsample.32to16.weight"} <= set(copied)
    assert fcn8s.score["8"].weight.abs().max() == 0


def test_staged_init_from_another_num_classes_raises_checkpoint_error():
    with pytest.raises(
        CheckpointError, match=r"'score.32.bias' must have shape \(3,\), got \(5,\)"
    ):
        init_from(tiny_fcn("fcn16s"), tiny_fcn("fcn32s", num_classes=5))


@pytest.mark.parametrize("path", [32, 16, 8, 4])
def test_every_fcn4s_path_lands_on_the_input_pixel_grid(path):
    # As for FCN-8s above, with torchvision's grids (offset 0) and the stride-4 skip added.
    stages = tuple(Stage(f"s{stride}", 2, stride, 0.0) for stride in (4, 8, 16, 32))
    model = FCN(Backbone(RampBody(stages), stages), num_classes=2, skips=3)
    with torch.no_grad():
        model.score[str(path)].weight.copy_(torch.eye(2)[:, :, None, None])
        out = model(torch.zeros(1, 3, 37, 50))[0]
    ys, xs = torch.meshgrid(torch.arange(37), torch.arange(50), indexing="ij")
    torch.testing.assert_close(out, torch.stack([ys, xs]).float(), atol=1e-3, rtol=0)


def test_fcn4s_on_mobilenet_v3_scores_the_stride_4_map_at_any_size():
    model = build("fcn4s", 3, backbone="mobilenet_v3_small").eval()
    assert model.output_stride == 4 and set(model.score) == {"32", "16", "8", "4"}
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 45, 61)).shape == (1, 3, 45, 61)


def test_vgg16_fcn4s_adds_pool2_with_whole_pixel_crops():
    # pool2's grid (-97.5) lies 2 px before pool3's (-95.5): one half stride-4 cell, so the
    # 2x upsampling of the stride-8 sum takes the half-pixel kernel 4 and the crops stay whole.
    with torch.device("meta"):
        model = build("fcn4s", 21, fc_channels=8)
    assert set(model.score) == {"32", "16", "8", "4"} and model.output_stride == 4
    assert all(float(s).is_integer() for s in model.shifts)


def test_fcn4s_has_no_at_once_variant():
    with pytest.raises(ConfigError, match="at_once must be False for fcn4s"):
        build("fcn4s", 3, backbone="mobilenet_v3_small", at_once=True)


def test_the_fcn_class_refuses_at_once_with_a_stride_4_skip_as_the_builder_does():
    from pixelwise.models.backbones import build_backbone

    features = build_backbone("mobilenet_v3_small", in_channels=3, pretrained=False)
    with pytest.raises(ConfigError, match=r"at_once must be False for fcn4s .*not \[4\]"):
        FCN(features, 3, skips=3, at_once=True)


def test_refine_feeds_the_finest_map_and_the_upsampled_scores_on_the_same_grid():
    # The refine block sees [finest features, coarser scores upsampled] side by side: with the
    # stride-32 score switched to identity on ramp features, the scores upsampled onto the stride-4
    # grid must hold the same positions as the stride-4 features, cell for cell (away from the
    # faded border of the transposed convolutions).
    stages = tuple(Stage(f"s{stride}", 2, stride, 0.0) for stride in (4, 8, 16, 32))
    model = FCN(Backbone(RampBody(stages), stages), num_classes=2, skips=3, refine=4)
    seen = []
    model.refine.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    with torch.no_grad():
        model.score["32"].weight.copy_(torch.eye(2)[:, :, None, None])
        out = model(torch.zeros(1, 3, 64, 96))
    assert out.shape == (1, 2, 64, 96)
    (refine_input,) = seen
    assert refine_input.shape[1] == 2 + 2  # stride-4 channels + num_classes
    inner = refine_input[0, :, 8:-8, 8:-8]
    torch.testing.assert_close(inner[2:], inner[:2], atol=1e-3, rtol=0)
    assert inner[0].max() > inner[0].min()  # the ramp really varies over the compared cells


def test_refine_starts_as_the_plain_fcn_and_first_trains_the_score_layers():
    torch.manual_seed(0)
    model = build("fcn4s", 3, backbone="mobilenet_v3_small", refine=8).train()
    out = model(torch.randn(2, 3, 45, 61))
    assert out.shape == (2, 3, 45, 61) and out.abs().max() == 0
    out.sum().backward()
    for name, param in model.named_parameters():
        has_gradient = param.grad is not None and bool(param.grad.abs().sum() > 0)
        assert has_gradient == name.startswith("score."), name
    assert model.score["4"].in_channels == 8 and model.score["8"].in_channels == 24


def test_refine_zero_is_the_papers_linear_skip():
    model = build("fcn8s", 3, backbone="mobilenet_v3_small")
    assert model.refine is None and not any(k.startswith("refine.") for k in model.state_dict())


@pytest.mark.parametrize(("name", "refine", "match"), [
    ("fcn32s", 8, "refine must be 0 for fcn32s"),
    ("fcn8s", -1, "refine"),
])
def test_bad_refine_raises_config_error(name, refine, match):
    with pytest.raises(ConfigError, match=match):
        build(name, 3, backbone="mobilenet_v3_small", refine=refine)
