"""The stages of Section 5.1 as units of work: one frozen config per stage, one pure function per unit.

Each config holds exactly what its stage depends on, and its ``VERSION`` is bumped
whenever the stage's behaviour changes; both enter the run key (``psputil.store``),
and nested configs carry their own versions, so a bumped LOBSTER re-keys the
controls built from its masks while dense runs stay stored.

The ``compute_*`` functions run anywhere (in this process, a pool worker, a Ray
task): they receive their config and every upstream input (states, masks) from the
driver, read data sets only from local disk, and never touch the run store.
"""

import functools
from dataclasses import dataclass
from typing import ClassVar

from psputil import checks, data, devices, models
from psputil.pruning import lobster, oneshot
from psputil.pruning.lobster import LobsterConfig
from psputil.train import TrainConfig

NEW_INIT_OFFSET = 1000  # fresh inits of the controls use model seed NEW_INIT_OFFSET + seed
GPU_SHARE = {"lenet300": 0.25, "lenet5": 0.25, "resnet32": 1.0}  # of one GPU per unit on Ray


@dataclass(frozen=True)
class DenseRun:
    """Dense training of ``models.build(model, seed=seed)``: the dense baseline and the start of 1-S."""

    STAGE: ClassVar[str] = "dense"  # its folder in the run store
    VERSION: ClassVar[int] = 1

    model: str
    data: data.DataConfig
    train: TrainConfig
    seed: int  # model init and batch order
    rewind_iteration: int = 0  # 1-S rewinds to the weights after this many optimiser steps (0: the init)

    def __post_init__(self):
        checks.choice("model", self.model, models.MODEL_NAMES)
        checks.integer("seed", self.seed, 0)
        checks.integer("rewind_iteration", self.rewind_iteration, 0)


@dataclass(frozen=True)
class LobsterRun:
    """One LOBSTER run from ``models.build(model, seed=seed)``: G at every compression level."""

    STAGE: ClassVar[str] = "lobster"  # its folder in the run store
    VERSION: ClassVar[int] = 2  # 2: authors' plateau rule and lr schedule, G = best network at each level

    model: str
    data: data.DataConfig
    lobster: LobsterConfig
    train: TrainConfig  # LOBSTER's optimiser, schedule and epoch budget
    seed: int  # model init and batch order

    def __post_init__(self):
        checks.choice("model", self.model, models.MODEL_NAMES)
        checks.integer("seed", self.seed, 0)


@dataclass(frozen=True)
class OneShotRun:
    """1-S: the dense run pruned in one shot to `sparsity`, rewound, retrained with its ``train`` config."""

    STAGE: ClassVar[str] = "oneshot"  # its folder in the run store
    VERSION: ClassVar[int] = 1

    dense: DenseRun
    sparsity: float  # percent of prunable weights removed (G's exact sparsity at a level)

    def __post_init__(self):
        checks.number("sparsity", self.sparsity, 0, 100, high_open=True)


@dataclass(frozen=True)
class ControlRun:
    """A Section 5.1 retraining control from G's mask at the level reaching `rate`."""

    STAGE: ClassVar[str] = "control"  # its folder in the run store
    VERSION: ClassVar[int] = 1

    lobster: LobsterRun  # whose G gives the mask (and, for "lottery", the original init)
    rate: float  # requested compression rate, percent: the first level reaching it
    kind: str  # "lottery" | "reinit" | "random"
    seed: int  # batch order; fresh init ("reinit", "random") and random mask ("random")
    train: TrainConfig  # the retraining

    def __post_init__(self):
        checks.choice("control kind", self.kind, oneshot.CONTROL_KINDS)
        checks.number("rate", self.rate, 0, 100, high_open=True)
        checks.integer("seed", self.seed, 0)


def compute_dense(run, device="cpu"):
    """Dense training; see ``oneshot.train_dense``. Returns its dict (states on the CPU)."""
    splits = load_splits(run.data, device)
    return oneshot.train_dense(models.build(run.model, seed=run.seed), splits, run.train, run.seed,
                               run.rewind_iteration, device)


def compute_lobster(run, device="cpu", resume=None, on_event=None):
    """LOBSTER from the run's seeded init; see ``lobster.run`` (resumable from a checkpoint it emitted)."""
    splits = load_splits(run.data, device)
    return lobster.run(models.build(run.model, seed=run.seed), splits, run.lobster, run.train, run.seed, device,
                       resume=resume, on_event=on_event)


def compute_lobster_streaming(run, device="cpu", resume=None, channel=None):
    """``compute_lobster`` on a worker: each pruning event's checkpoint goes to `channel` (a queue the driver
    drains into the store), so a killed run resumes from its last event; ``channel=None`` sends nothing."""
    sent = [0 if resume is None else len(resume["states"])]  # level states the driver has already

    def on_event(checkpoint):
        states = checkpoint["states"]
        channel.put((run, {**checkpoint, "states": states[sent[0]:]}, sent[0]))  # only the new levels travel
        sent[0] = len(states)

    return compute_lobster(run, device, resume=resume, on_event=None if channel is None else on_event)


def compute_oneshot(run, dense_states, device="cpu"):
    """1-S from the dense run's states.

    Args:
        dense_states: {"state", "rewind_state"} of ``compute_dense(run.dense)``.
    """
    model = models.build(run.dense.model, seed=run.dense.seed)
    start, mask = oneshot.prune_and_rewind(model, dense_states["state"], dense_states["rewind_state"], run.sparsity)
    splits = load_splits(run.dense.data, device)
    return oneshot.retrain(start, splits, run.dense.train, mask, run.dense.seed, device)


def compute_control(run, g_mask, device="cpu"):
    """One retraining control.

    Args:
        g_mask: G's mask at ``run.rate`` (the level of ``run.lobster`` reaching it).
    """
    arch = run.lobster.model
    original = models.build(arch, seed=run.lobster.seed).state_dict()
    fresh = models.build(arch, seed=NEW_INIT_OFFSET + run.seed).state_dict()
    state, mask = oneshot.control_start(run.kind, g_mask, original, fresh, run.seed)
    model = models.build(arch)
    model.load_state_dict(state)
    splits = load_splits(run.lobster.data, device)
    return oneshot.retrain(model, splits, run.train, mask, run.seed, device)


def resources(run):
    """Ray resources of one unit: one CPU and a GPU share by architecture.

    A quarter GPU for the LeNets (four retrainings share a GPU), a whole one for ResNet-32;
    ``executors.RayExecutor`` drops the GPU request on a cluster without GPUs.
    """
    return {"num_cpus": 1, "num_gpus": GPU_SHARE[architecture(run)]}


def architecture(run):
    """The model name of any stage config."""
    for path in ("model", "dense.model", "lobster.model", "source.model"):
        value = run
        for part in path.split("."):
            value = getattr(value, part, None)
        if isinstance(value, str):
            return value
    raise ValueError(f"{type(run).__name__} names no architecture")


@functools.lru_cache(maxsize=4)
def _cached_splits(config, device):
    return data.load(config, device)


def load_splits(config, device="cpu"):
    """The data splits of `config` on `device`, loaded once per process (local files only, never downloads)."""
    return _cached_splits(config, str(devices.resolve(device)))
