"""The paper's three architectures: LeNet-300-100, LeNet-5 (Caffe variant), ResNet-32.

Every activation is its own ``nn.ReLU`` instance, so a forward hook on each ReLU
reads the post-synaptic potentials (PSPs) of exactly one layer.

Initialisation (seeded through a ``torch.Generator``):

* LeNets: PyTorch's default for ``nn.Linear``/``nn.Conv2d`` (weights Kaiming-uniform
  with ``a = sqrt(5)``, biases uniform in ``+-1/sqrt(fan_in)``), as the authors' code.
* ResNet-32: Kaiming-normal (fan-in, ReLU gain) conv and linear weights, zero linear
  bias, BatchNorm weight 1 and bias 0, as the CIFAR ResNet the paper cites.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from psputil import checks

MODEL_NAMES = ("lenet300", "lenet5", "resnet32")

# Input shape (channels, height, width) each architecture expects.
INPUT_SHAPES = {"lenet300": (1, 28, 28), "lenet5": (1, 28, 28), "resnet32": (3, 32, 32)}


class LeNet300(nn.Module):
    """Fully connected 784-300-100-10 network (266,610 parameters)."""

    input_shape = INPUT_SHAPES["lenet300"]

    def __init__(self, num_classes=10):
        super().__init__()
        self.fc1 = nn.Linear(784, 300)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(300, 100)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x):
        x = x.flatten(1)
        x = self.relu1(self.fc1(x))
        x = self.relu2(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """Caffe LeNet-5: conv 20@5x5, pool, conv 50@5x5, pool, fc 500, fc 10 (431,080 parameters)."""

    input_shape = INPUT_SHAPES["lenet5"]

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.relu2 = nn.ReLU()
        self.fc1 = nn.Linear(800, 500)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x):
        x = F.max_pool2d(self.relu1(self.conv1(x)), 2)
        x = F.max_pool2d(self.relu2(self.conv2(x)), 2)
        x = self.relu3(self.fc1(x.flatten(1)))
        return self.fc2(x)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm; option-A (zero-padding) identity shortcut."""

    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.stride = stride
        self.pad = planes - in_planes  # extra channels the shortcut fills with zeros

    def shortcut(self, x):
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet32(nn.Module):
    """CIFAR ResNet-32: 3 stages x 5 basic blocks, 16/32/64 channels (464,154 parameters)."""

    input_shape = INPUT_SHAPES["resnet32"]

    def __init__(self, num_classes=10, blocks_per_stage=5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU()
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for index in range(blocks_per_stage):
                blocks.append(BasicBlock(in_planes, planes, stride if index == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean(dim=(2, 3)))


def _init_lenet(model, generator):
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
            fan_in = module.weight[0].numel()
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(module.bias, -bound, bound, generator=generator)


def _init_resnet(model, generator):
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=generator)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


_BUILDERS = {
    "lenet300": (LeNet300, _init_lenet),
    "lenet5": (LeNet5, _init_lenet),
    "resnet32": (ResNet32, _init_resnet),
}


def build(name, num_classes=10, seed=0):
    """Build one of the paper's models with seeded initial weights.

    Args:
        name: "lenet300", "lenet5" or "resnet32".
        num_classes: size of the output layer, an integer >= 2.
        seed: integer >= 0 seeding the initial weights; the same seed gives identical weights.

    Returns:
        The model (on the CPU, in training mode).

    Raises:
        ValueError: an unknown name, or `num_classes`/`seed` not an integer in range.
    """
    checks.choice("model", name, MODEL_NAMES)
    num_classes = checks.integer("num_classes", num_classes, low=2)
    seed = checks.integer("seed", seed, low=0)
    cls, init = _BUILDERS[name]
    model = cls(num_classes)
    with torch.no_grad():
        init(model, torch.Generator().manual_seed(seed))
    return model


def input_shape(model):
    """The (C, H, W) shape of one sample `model` takes, or None for a model not built here."""
    shape = getattr(type(model), "input_shape", None)
    return tuple(shape) if shape is not None else None


def num_outputs(model):
    """The number of classes `model` predicts (its last ``nn.Linear``'s outputs), or None without one."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else None


def count_parameters(model):
    """Number of trainable parameters (BatchNorm included)."""
    return sum(p.numel() for p in model.parameters())
