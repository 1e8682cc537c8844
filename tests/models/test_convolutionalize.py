import torch
import torchvision

from pixelwise.models import convolutionalize


def test_convolutionalized_vgg16_equals_classifier_at_224():
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        logits = vgg(x)
        dense = convolutionalize(vgg).eval()(x)
    assert dense.shape == (1, 1000, 1, 1)
    torch.testing.assert_close(dense[:, :, 0, 0], logits, rtol=1e-4, atol=1e-5)


def test_convolutionalized_vgg16_gives_a_spatial_map_at_500():
    # pool5 is floor(500 / 32) = 15 wide; fc6's 7x7 window leaves 15 - 6 = 9 (FCN Fig. 2).
    with torch.device("meta"):
        dense = convolutionalize(torchvision.models.vgg16(weights=None))
        out = dense(torch.empty(2, 3, 500, 500))
    assert out.shape == (2, 1000, 9, 9)


def test_convolutionalized_network_has_no_adaptive_pooling():
    with torch.device("meta"):
        dense = convolutionalize(torchvision.models.vgg16(weights=None))
    assert not any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in dense.modules())
