"""The experimental setups of the paper, per profile: model, data, hyperparameters, seeds, milestones.

A ``Setup`` is one model on one data set with its hyperparameters for one profile:
"smoke" (seconds, tests and CI), "quick" (CPU minutes, the book's default) or
"paper" (the authors' values on the full data sets). It is not itself a run key:
its factory methods build the stage configs of ``psputil.experiments.units``, each
holding only what that stage depends on, so editing milestones or control seeds
never re-keys a dense run.
"""

import dataclasses
from dataclasses import dataclass

from psputil import checks
from psputil.data import DataConfig
from psputil.experiments.units import ControlRun, DenseRun, LobsterRun, OneShotRun
from psputil.pruning.lobster import LobsterConfig
from psputil.train import RESNET32_RECIPE, TrainConfig

SETUP_NAMES = ("lenet300-mnist", "lenet5-mnist", "lenet5-fashion", "resnet32-cifar10")
PROFILES = ("smoke", "quick", "paper")
# Paper profile: where a LOBSTER run stops (percent pruned; it then trains on at that level until the
# next plateau). LeNet-5 / MNIST: the paper's 99.57 % (Sec. 5.2); LeNet-300: beyond the 95 % where the
# paper says retraining fails (Sec. 5.1); the others: our choice.
TARGETS = {"lenet300-mnist": 98.5, "lenet5-mnist": 99.5, "lenet5-fashion": 98.0, "resnet32-cifar10": 95.0}
PAPER_RESET_LR = True  # decided from measured runs on full MNIST (README, methods page)
ARCHITECTURE = {"lenet300-mnist": ("lenet300", "mnist"), "lenet5-mnist": ("lenet5", "mnist"),
                "lenet5-fashion": ("lenet5", "fashion-mnist"), "resnet32-cifar10": ("resnet32", "cifar10")}


@dataclass(frozen=True)
class Setup:
    """Everything that defines the experiments of one setup in one profile."""

    name: str
    profile: str
    model: str
    data: DataConfig
    train: TrainConfig  # dense training, one-shot retraining and the controls
    lobster: LobsterConfig
    lobster_train: TrainConfig  # LOBSTER's optimiser, schedule and epoch budget
    milestones: tuple  # compression rates (percent) where the controls run
    control_seeds: int  # runs per control kind and milestone
    lobster_seeds: int  # LOBSTER runs (each with its own 1-S)

    def dense_run(self, seed):
        return DenseRun(self.model, self.data, self.train, checks.integer("seed", seed, 0))

    def lobster_run(self, seed):
        return LobsterRun(self.model, self.data, self.lobster, self.lobster_train, checks.integer("seed", seed, 0))

    def oneshot_run(self, seed, sparsity):
        return OneShotRun(self.dense_run(seed), float(checks.number("sparsity", sparsity, 0, 100, high_open=True)))

    def control_run(self, lobster_seed, rate, kind, seed):
        return ControlRun(self.lobster_run(lobster_seed), float(checks.number("rate", rate, 0, 100, high_open=True)),
                          kind, checks.integer("seed", seed, 0), self.train)


def setup(name, profile="quick"):
    """The ``Setup`` of `name` ("lenet300-mnist", ...) for `profile` ("smoke", "quick", "paper").

    Raises:
        ValueError: an unknown setup or profile (the message lists the valid ones).
    """
    checks.choice("setup", name, SETUP_NAMES)
    checks.choice("profile", profile, PROFILES)
    return {"smoke": _smoke, "quick": _quick, "paper": _paper}[profile](name)


def _paper(name):
    """The authors' setting (EIDOSLAB/LOBSTER: plain SGD, lr 0.1, batch 100, lambda 1e-4, twt 0.05, pwe 20,
    ReduceLROnPlateau(threshold=0, cooldown=50), 10 % held out). Their runs have no target and a
    fixed epoch budget; ours stop at the paper's regime (``TARGETS``). For ResNet-32 the CIFAR
    recipe, with lambda and pwe our choice."""
    model, dataset = ARCHITECTURE[name]
    if model == "resnet32":
        train = RESNET32_RECIPE
        lob = LobsterConfig(lam=1e-6, twt=0.05, pwe=20, target=TARGETS[name], reset_lr=PAPER_RESET_LR)
        lob_train = dataclasses.replace(RESNET32_RECIPE, epochs=1000, schedule="plateau", milestones=(),
                                        plateau_threshold=0.0, plateau_cooldown=50)
        return Setup(name, "paper", model, DataConfig(dataset), train, lob, lob_train, (50, 70, 80, 90, 95), 10, 10)
    authors = dict(lr=0.1, batch_size=100, schedule="plateau", plateau_threshold=0.0, plateau_cooldown=50)
    train = TrainConfig(epochs=100, **authors)
    lob = LobsterConfig(lam=1e-4, twt=0.05, pwe=20, target=TARGETS[name], reset_lr=PAPER_RESET_LR)
    lob_train = TrainConfig(epochs=2000, **authors)
    milestones = {"lenet300-mnist": (50, 80, 90, 95, 97, 98, 98.5), "lenet5-mnist": (50, 80, 90, 95, 98, 99, 99.5),
                  "lenet5-fashion": (50, 80, 90, 95, 98)}[name]
    return Setup(name, "paper", model, DataConfig(dataset), train, lob, lob_train, milestones, 10, 10)


def _smoke(name):
    """Every code path on tiny data, seconds per run."""
    model, dataset = ARCHITECTURE[name]
    resnet = model == "resnet32"
    small = {"mnist": "mnist-5k", "cifar10": "cifar10-synthetic"}.get(dataset, dataset)
    # ResNet-32 on the CPU costs ~2 s per epoch of 200 images: a smaller split and LOBSTER budget
    data = DataConfig(small, train_size=600, test_size=300) if not resnet else DataConfig(small, train_size=200,
                                                                                          test_size=100)
    train = TrainConfig(epochs=2, lr=0.05 if resnet else 0.1, batch_size=100, momentum=0.9 if resnet else 0.0,
                        augment=resnet)
    lob = LobsterConfig(lam=5e-3, twt=0.1, pwe=1, target=80.0, reset_lr=True)
    lob_train = dataclasses.replace(train, epochs=8 if resnet else 20)
    return Setup(name, "smoke", model, data, train, lob, lob_train, (50.0, 80.0), 2, 2)


def _quick(name):
    """CPU minutes: LeNets on mnist-5k and a Fashion-MNIST subset, ResNet-32 on a CIFAR-10 subset."""
    model, dataset = ARCHITECTURE[name]
    if model == "resnet32":
        data = DataConfig("cifar10", valid_fraction=0.05, train_size=10000, test_size=2000)
        train = dataclasses.replace(RESNET32_RECIPE, epochs=30, milestones=(15, 25))
        lob = LobsterConfig(lam=1e-5, twt=0.05, pwe=3, target=90.0, reset_lr=True)
        lob_train = dataclasses.replace(RESNET32_RECIPE, epochs=150, schedule="plateau", milestones=())
        return Setup(name, "quick", model, data, train, lob, lob_train, (50, 70, 90), 2, 3)
    if model == "lenet300":
        train = TrainConfig(epochs=30, lr=0.1, batch_size=100, schedule="plateau", plateau_patience=5)
        lob = LobsterConfig(lam=1e-3, twt=0.05, pwe=5, target=98.5, reset_lr=True)
        lob_train = TrainConfig(epochs=600, lr=0.1, batch_size=100, schedule="plateau")
        return Setup(name, "quick", model, DataConfig("mnist-5k"), train, lob, lob_train, (50, 80, 90, 95, 98, 98.5),
                     2, 3)
    train = TrainConfig(epochs=15, lr=0.1, batch_size=100, schedule="plateau", plateau_patience=5)
    lob_train = TrainConfig(epochs=250, lr=0.1, batch_size=100, schedule="plateau")
    if dataset == "mnist":
        # The paper's 99.57 % within claims.Margins.regime_slack (>= 99.355 %), so C3-C5 are tested in quick.
        # Measured: 99 % took 286 / 278 / 317 epochs for seeds 0 / 1 / 2; a budget of 250 stopped at 98.3-98.8 %.
        lob = LobsterConfig(lam=3e-3, twt=0.05, pwe=4, target=99.4, reset_lr=True)
        return Setup(name, "quick", model, DataConfig("mnist-5k"), train, lob, dataclasses.replace(lob_train, epochs=500),
                     (80, 95, 99, 99.4), 2, 3)
    data = DataConfig("fashion-mnist", valid_fraction=0.05, train_size=3000, test_size=2000)
    lob = LobsterConfig(lam=3e-3, twt=0.05, pwe=4, target=95.0, reset_lr=True)
    return Setup(name, "quick", model, data, train, lob, lob_train, (80, 90, 95), 2, 3)
