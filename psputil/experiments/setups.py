"""The experimental setups of the paper, per profile: model, data, hyperparameters.

A *setup* is a model, a data set and hyperparameters (``Setup``) for one profile:
"smoke" (seconds, tests), "quick" (CPU minutes, the book's default) or "paper" (the
authors' values, full data, GPU).

Quick profile, LeNet-300 / mnist-5k (3,600 train, 400 valid, 1,000 test): LOBSTER with
lambda 1e-3 per step (10x the authors': 36 steps per epoch instead of 540), pwe 5
epochs (authors: 20), twt 0.05, SGD lr 0.1, batch 100, ReduceLROnPlateau (patience 10)
reset at every pruning event; it reaches 98 % sparsity in about 200 epochs (tens of
seconds on a 2-core CPU) with the test error within about half a point of dense training.
"""

import dataclasses
from dataclasses import dataclass

from psputil.data import DataConfig
from psputil.pruning.lobster import LobsterConfig
from psputil.train import RESNET32_RECIPE, TrainConfig

SETUP_NAMES = ("lenet300-mnist", "lenet5-mnist", "lenet5-fashion", "resnet32-cifar10")
PROFILES = ("smoke", "quick", "paper")


@dataclass(frozen=True)
class Setup:
    """Everything that defines the experiments of one setup (all of it enters the run keys)."""

    name: str
    model: str
    data: DataConfig
    train: TrainConfig  # dense training, one-shot retraining and the controls
    lobster: LobsterConfig
    lobster_train: TrainConfig  # LOBSTER's optimiser, schedule and epoch budget
    milestones: tuple = ()  # compression rates (percent) where the controls run
    seeds: int = 10  # runs per control kind and milestone


def setup(name, profile="quick"):
    """The ``Setup`` of `name` ("lenet300-mnist", ...) for `profile` ("smoke", "quick", "paper")."""
    if name not in SETUP_NAMES:
        raise ValueError(f"unknown setup {name!r}; valid: {', '.join(SETUP_NAMES)}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    model, dataset = {"lenet300-mnist": ("lenet300", "mnist"), "lenet5-mnist": ("lenet5", "mnist"),
                      "lenet5-fashion": ("lenet5", "fashion-mnist"), "resnet32-cifar10": ("resnet32", "cifar10")}[name]
    resnet = model == "resnet32"
    if profile == "paper":
        # The authors' LeNet setting; for ResNet-32 the CIFAR recipe, and lambda/pwe are our choice.
        train = RESNET32_RECIPE if resnet else TrainConfig(epochs=100, lr=0.1, batch_size=100, schedule="plateau")
        lob = LobsterConfig(lam=1e-6 if resnet else 1e-4, twt=0.05, pwe=20)
        lob_train = dataclasses.replace(train, epochs=10000, schedule="plateau", milestones=()) if resnet \
            else TrainConfig(epochs=10000, lr=0.1, batch_size=100, schedule="plateau")
        milestones = {"lenet300": (50, 80, 90, 95, 97, 98), "lenet5": (50, 80, 90, 95, 98, 99, 99.5),
                      "resnet32": (50, 70, 80, 90, 95)}[model]
        if name == "lenet5-fashion":
            milestones = (50, 80, 90, 95, 98)
        return Setup(name, model, DataConfig(dataset), train, lob, lob_train, milestones, seeds=10)
    small = "mnist-5k" if dataset == "mnist" else dataset
    if profile == "smoke":
        data = DataConfig(small, train_size=600, test_size=300)
        train = TrainConfig(epochs=2, lr=0.05 if resnet else 0.1, batch_size=100, momentum=0.9 if resnet else 0.0)
        lob = LobsterConfig(lam=5e-3, twt=0.1, pwe=1, improvement=0.05, target=60.0)
        return Setup(name, model, data, train, lob, dataclasses.replace(train, epochs=20), (30.0,), seeds=2)
    # quick: cost on a loaded 2-core CPU (1 torch thread): LeNet-300 LOBSTER ~45 s to 98 %;
    # LeNet-5 on mnist-5k ~190 s to 98 % (lambda 3e-3, pwe 4), each retraining ~15 s.
    if resnet:
        data = DataConfig("cifar10", valid_fraction=0.05, train_size=10000, test_size=2000)
        train = dataclasses.replace(RESNET32_RECIPE, epochs=30, milestones=(15, 25))
        lob = LobsterConfig(lam=1e-5, twt=0.05, pwe=3, target=90.0)
        lob_train = dataclasses.replace(RESNET32_RECIPE, epochs=150, schedule="plateau", milestones=())
        return Setup(name, model, data, train, lob, lob_train, (50, 70, 90), seeds=2)
    if model == "lenet300":
        train = TrainConfig(epochs=30, lr=0.1, batch_size=100, schedule="plateau", plateau_patience=5)
        lob = LobsterConfig(lam=1e-3, twt=0.05, pwe=5, target=98.5)
        lob_train = TrainConfig(epochs=600, lr=0.1, batch_size=100, schedule="plateau")
        return Setup(name, model, DataConfig("mnist-5k"), train, lob, lob_train, (50, 80, 90, 95, 98), seeds=2)
    train = TrainConfig(epochs=15, lr=0.1, batch_size=100, schedule="plateau", plateau_patience=5)
    lob_train = TrainConfig(epochs=250, lr=0.1, batch_size=100, schedule="plateau")
    if dataset == "mnist":
        lob = LobsterConfig(lam=3e-3, twt=0.05, pwe=4, target=98.0)
        return Setup(name, model, DataConfig("mnist-5k"), train, lob, lob_train, (80, 95), seeds=2)
    data = DataConfig("fashion-mnist", valid_fraction=0.05, train_size=3000, test_size=2000)
    lob = LobsterConfig(lam=3e-3, twt=0.05, pwe=4, target=95.0)
    return Setup(name, model, data, train, lob, lob_train, (80, 90), seeds=2)
