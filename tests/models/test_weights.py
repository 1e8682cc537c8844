from urllib.error import URLError

import pytest
import torch
import torchvision

from pixelwise.errors import ConfigError, WeightsNotFoundError
from pixelwise.models import backbones, build


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """A fresh torch hub cache under tmp_path, and every download refused."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def refuse(*args, **kwargs):
        raise URLError("network disabled by the test")

    monkeypatch.setattr(torch.hub, "urlopen", refuse)
    return tmp_path / "hub" / "checkpoints"


@pytest.mark.parametrize(
    ("name", "options", "filename"),
    [
        ("fcn32s", {"backbone": "resnet18"}, "resnet18-f37072fd.pth"),
        ("fcn8s", {"backbone": "mobilenet_v3_large"}, "mobilenet_v3_large-5c1a4163.pth"),
        ("unet", {"encoder": "resnet34"}, "resnet34-b627a593.pth"),
    ],
)
def test_missing_weights_raise_weights_not_found_naming_the_file_and_cache(
    offline_hub, name, options, filename
):
    with pytest.raises(WeightsNotFoundError) as info:
        build(name, 2, pretrained_backbone=True, **options)
    message = str(info.value)
    assert str(offline_hub / filename) in message
    assert f"https://download.pytorch.org/models/{filename}" in message
    assert isinstance(info.value, FileNotFoundError)


def test_weights_in_the_cache_are_loaded_without_network(offline_hub):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    offline_hub.mkdir(parents=True)
    torch.save(reference.state_dict(), offline_hub / "resnet18-f37072fd.pth")
    model = build("fcn8s", 2, backbone="resnet18", pretrained_backbone=True)
    loaded, saved = model.backbone.body.state_dict(), reference.state_dict()
    for key in ("conv1.weight", "layer4.1.conv2.weight", "layer4.1.bn2.running_var"):
        torch.testing.assert_close(loaded[key], saved[key])


@pytest.mark.heavy
def test_pretrained_vgg16_gets_fc6_fc7_from_the_imagenet_classifier(monkeypatch):
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16()
    monkeypatch.setattr(backbones, "load_imagenet_state_dict", lambda name: vgg.state_dict())
    model = build("fcn32s", 21, pretrained_backbone=True)
    body = model.backbone.body
    fc6, fc7 = body.fc[0], body.fc[3]
    assert fc6.weight.shape == (4096, 512, 7, 7)
    # fc6 input is the flattened (512, 7, 7) pool5 map: weight column c * 49 + y * 7 + x
    torch.testing.assert_close(
        fc6.weight[5, 3, 2, 6], vgg.classifier[0].weight[5, 3 * 49 + 2 * 7 + 6]
    )
    torch.testing.assert_close(fc7.weight[:, :, 0, 0], vgg.classifier[3].weight)
    torch.testing.assert_close(body.to_pool3[0].weight, vgg.features[0].weight)


def test_pretrained_vgg16_with_small_fc_channels_raises_config_error():
    with pytest.raises(ConfigError, match="fc_channels must be 4096 with pretrained_backbone=True"):
        build("fcn8s", 21, pretrained_backbone=True, fc_channels=16)
