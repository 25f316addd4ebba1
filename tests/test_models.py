import pytest
import torch
from torch import nn

from psputil import models

EXPECTED_PARAMETERS = {"lenet300": 266_610, "lenet5": 431_080, "resnet32": 464_154}
# ReLU modules: LeNet-300 two hidden layers; LeNet-5 conv1, conv2, fc1; ResNet-32 stem + 2 per block x 15.
EXPECTED_RELUS = {"lenet300": 2, "lenet5": 3, "resnet32": 31}


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_parameter_count_and_output_shape(name):
    model = models.build(name)
    assert models.count_parameters(model) == EXPECTED_PARAMETERS[name]
    out = model(torch.randn(3, *models.INPUT_SHAPES[name]))
    assert out.shape == (3, 10)


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_every_activation_is_its_own_relu_module(name):
    model = models.build(name)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == EXPECTED_RELUS[name]
    assert len({id(m) for m in relus}) == len(relus)
    # Each ReLU fires exactly once per forward pass.
    calls = []
    handles = [m.register_forward_hook(lambda m, i, o: calls.append(m)) for m in relus]
    model(torch.randn(2, *models.INPUT_SHAPES[name]))
    for h in handles:
        h.remove()
    assert len(calls) == len(relus) and len({id(m) for m in calls}) == len(relus)


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_same_seed_same_weights_other_seed_other_weights(name):
    a, b, c = models.build(name, seed=3), models.build(name, seed=3), models.build(name, seed=4)
    for (_, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
        assert torch.equal(pa, pb)
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_lenet_init_matches_pytorch_default_bounds():
    model = models.build("lenet300")
    bound = 1 / 784**0.5  # kaiming_uniform(a=sqrt(5)) and the bias both give 1/sqrt(fan_in)
    assert model.fc1.weight.abs().max() <= bound
    assert model.fc1.bias.abs().max() <= bound
    assert model.fc1.weight.abs().max() > 0.95 * bound


def test_num_classes_and_bad_names():
    assert models.build("lenet5", num_classes=7)(torch.randn(1, 1, 28, 28)).shape == (1, 7)
    with pytest.raises(ValueError, match="lenet300, lenet5, resnet32"):
        models.build("vgg16")
    with pytest.raises(ValueError, match="num_classes"):
        models.build("lenet5", num_classes=0)


def test_resnet_option_a_shortcut_pads_channels_with_zeros():
    block = models.build("resnet32").layer2[0]
    x = torch.randn(2, 16, 8, 8)
    shortcut = block.shortcut(x)
    assert shortcut.shape == (2, 32, 4, 4)
    assert torch.equal(shortcut[:, 8:24], x[:, :, ::2, ::2])
    assert shortcut[:, :8].abs().sum() == 0 and shortcut[:, 24:].abs().sum() == 0
