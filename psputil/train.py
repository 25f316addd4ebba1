"""The training engine: SGD over tensors held in memory, with plug-in hooks and exact resumption.

``fit`` trains a model in place and returns its per-epoch history. Pruning plugs
in through ``Hook`` (a per-step regulariser, masks, decisions at epoch end)
without copying the loop. ``TrainState.checkpoint()`` captures a run between two
epochs as a plain dict (storable with ``torch.save`` and loadable with
``weights_only=True``); ``fit(..., resume=checkpoint)`` continues it, bit-identical
on the CPU to the uninterrupted run.
"""

import copy
import contextlib
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from psputil import bars, checks, devices
from psputil.data import check_split, crop_flip

SCHEDULES = ("none", "step", "plateau")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule hyperparameters (all enter the run-store key).

    Raises:
        ValueError: a field of the wrong type or out of range, named with its value and
            what is valid (checked at construction).
    """

    epochs: int = 20
    batch_size: int = 100  # samples per optimiser step
    lr: float = 0.1  # initial learning rate
    momentum: float = 0.0  # SGD momentum, in [0, 1)
    nesterov: bool = False
    weight_decay: float = 0.0  # L2 coefficient added to the gradient by SGD
    schedule: str = "none"  # "step": x gamma at `milestones`; "plateau": ReduceLROnPlateau on the valid loss
    milestones: tuple = ()  # epochs (1-based, counted at their end) where "step" multiplies lr by gamma
    gamma: float = 0.1  # lr factor of both schedules, in (0, 1]
    plateau_patience: int = 10  # epochs without valid-loss improvement before "plateau" cuts lr
    plateau_threshold: float = 1e-4  # relative improvement that counts (torch's default; the authors' LOBSTER: 0)
    plateau_cooldown: int = 0  # epochs after a cut before counting again (torch's default; the authors: 50)
    augment: bool = False  # CIFAR pad-4 random crop + horizontal flip
    precision: str = "fp32"  # "bf16": autocast the forward pass to bfloat16

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        put("epochs", checks.integer("epochs", self.epochs, low=0))
        put("batch_size", checks.integer("batch_size", self.batch_size, low=1))
        put("lr", float(checks.number("lr", self.lr, low=0, low_open=True)))
        put("momentum", float(checks.number("momentum", self.momentum, 0, 1, high_open=True)))
        checks.flag("nesterov", self.nesterov)
        put("weight_decay", float(checks.number("weight_decay", self.weight_decay, low=0)))
        checks.choice("schedule", self.schedule, SCHEDULES)
        milestones = checks.numbers_list("milestones", self.milestones, low=1, integers=True, allow_empty=True)
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ValueError(f"milestones must be strictly increasing epochs such as (100, 150), "
                             f"got {self.milestones!r}")
        put("milestones", milestones)
        put("gamma", float(checks.number("gamma", self.gamma, 0, 1, low_open=True)))
        put("plateau_patience", checks.integer("plateau_patience", self.plateau_patience, low=0))
        put("plateau_threshold", float(checks.number("plateau_threshold", self.plateau_threshold, low=0)))
        put("plateau_cooldown", checks.integer("plateau_cooldown", self.plateau_cooldown, low=0))
        checks.flag("augment", self.augment)
        checks.choice("precision", self.precision, PRECISIONS)
        if self.nesterov and self.momentum <= 0:
            raise ValueError(f"nesterov=True needs momentum > 0, got momentum={self.momentum}")


# The CIFAR ResNet recipe: lr 0.1, momentum 0.9, wd 1e-4, batch 128, x0.1 at epochs 100 and 150 of 200.
RESNET32_RECIPE = TrainConfig(
    epochs=200, batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4,
    schedule="step", milestones=(100, 150), augment=True,
)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "scheduler", "generator", "history", "stop_requested", "hooks")


@dataclass
class TrainState:
    """What hooks see: the model, its optimiser and schedule, the epoch (1-based) and the history so far."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    data: object
    config: TrainConfig
    epoch: int = 0  # epochs completed (the current one, inside its hooks)
    history: list = field(default_factory=list)
    scheduler: Optional[object] = None  # a hook may replace it (fit then skips this epoch's step)
    generator: Optional[torch.Generator] = None  # batch order and augmentation
    hooks: list = field(default_factory=list)
    stop_requested: bool = False  # a hook asked to stop after the current epoch

    def checkpoint(self):
        """Everything ``fit(..., resume=...)`` needs to continue after the current epoch, as a plain dict.

        Take it from ``Hook.epoch_end`` or ``Hook.after_training`` (not inside ``after_epoch``:
        the epoch's record and schedule step are not in yet).

        Returns:
            dict with "epoch" (epochs done), "model" (state dict), "optimizer" and "scheduler"
            (their ``state_dict()``; scheduler None without a schedule), "generator" (uint8
            tensor), "history" (records so far), "stop_requested" (bool) and "hooks" (one
            ``Hook.state_dict()`` per hook, in order); every tensor a CPU copy.
        """
        return {
            "epoch": self.epoch,
            "model": cpu_copy(self.model.state_dict()),
            "optimizer": cpu_copy(self.optimizer.state_dict()),
            "scheduler": None if self.scheduler is None else cpu_copy(self.scheduler.state_dict()),
            "generator": self.generator.get_state(),
            "history": copy.deepcopy(self.history),
            "stop_requested": self.stop_requested,
            "hooks": [hook.state_dict() for hook in self.hooks],
        }


class Hook:
    """Plug-in points of ``fit``; override the ones you need."""

    def before_training(self, state):
        """Called once, after the optimiser is built (on a resume: before ``load_state_dict``)."""

    def after_backward(self, state):
        """Called after ``loss.backward()``, before the optimiser step (e.g. mask gradients)."""

    def after_step(self, state):
        """Called after every optimiser step (e.g. a regulariser, re-applying masks)."""

    def after_epoch(self, state, record):
        """Called after each epoch's evaluation; may add keys to `record`. Return True to stop."""
        return False

    def epoch_end(self, state):
        """Called when the epoch is complete (record in the history, schedule stepped): a checkpoint point."""

    def after_training(self, state):
        """Called once when training ends (budget spent or a hook stopped it)."""

    def state_dict(self):
        """What the hook must carry across a resume, as a plain dict (tensors on the CPU)."""
        return {}

    def load_state_dict(self, saved):
        """Restore what ``state_dict`` saved (called after ``before_training`` on a resume)."""


def make_optimizer(model, config):
    """Plain SGD with the config's lr, momentum, Nesterov flag and weight decay."""
    return torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum,
        nesterov=config.nesterov, weight_decay=config.weight_decay,
    )


def make_scheduler(optimizer, config):
    """The config's lr schedule on `optimizer` (None for "none")."""
    if config.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.milestones), gamma=config.gamma)
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=config.gamma, patience=config.plateau_patience, threshold=config.plateau_threshold,
            threshold_mode="rel", cooldown=config.plateau_cooldown,
        )
    return None


@contextlib.contextmanager
def eval_mode(model):
    """Eval mode inside the block; every submodule gets its own mode back after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def check_inputs(model, split, num_classes=None, what="the data", input_shape=None):
    """Raise ValueError unless `model` can be trained or scored on `split`; cheap, before any real compute.

    Checks that the split has samples and 1-D integer labels, runs the model (eval mode,
    no gradient) on one sample to see that it accepts the sample shape, and checks the
    labels against the width of its output.

    Args:
        model: the network.
        split: a ``TensorSplit``.
        num_classes: the classes the labels may use; None: the model's output width.
            Given, it must equal that width.
        what: how messages name the split, e.g. "the valid split".
        input_shape: the (C, H, W) the split is declared to hold (None: not checked).
    """
    sample = tuple(split.images.shape[1:])
    if len(split) == 0:
        check_split(split, 1, sample, what)  # raises: no samples
    width = _output_width(model, split, what)
    if num_classes is not None and checks.integer("num_classes", num_classes, low=1) != width:
        raise ValueError(f"num_classes={num_classes}, but the model has {width} outputs; pass num_classes={width} "
                         "or a model with one output per class")
    check_split(split, width, sample if input_shape is None else input_shape, what)


@torch.no_grad()
def evaluate(model, split, batch_size=1000, precision="fp32", num_classes=None, check=True):
    """Mean cross-entropy loss and top-1 error (percent) of `model` on a ``TensorSplit``.

    The model is put in eval mode and returned to its previous modes afterwards.

    Args:
        model: the network (on the split's device).
        split: a ``TensorSplit``.
        batch_size: samples per forward pass (memory only; the result is the same).
        precision: "fp32" or "bf16" (autocast of the forward pass).
        num_classes: classes the labels may use (None: the model's output width).
        check: run ``check_inputs`` first (callers that already did may skip it).

    Returns:
        (loss in nats per sample, error in percent).

    Raises:
        ValueError: an empty split, labels that are not integer classes of the model,
            samples the model cannot take, or a bad argument.
    """
    batch_size = checks.integer("batch_size", batch_size, low=1)
    checks.choice("precision", precision, PRECISIONS)
    if check:
        check_inputs(model, split, num_classes, "the split")
    with eval_mode(model):
        loss_sum = torch.zeros((), device=split.images.device)
        wrong = torch.zeros((), device=split.images.device, dtype=torch.long)
        for x, y in split.batches(batch_size):
            with _autocast(x.device, precision):
                out = model(x)
            loss_sum += F.cross_entropy(out.float(), y, reduction="sum")
            wrong += (out.argmax(1) != y).sum()
        n = len(split)
        return loss_sum.item() / n, 100.0 * wrong.item() / n


def fit(model, data, config, seed=0, device="auto", hooks=(), progress=True, desc="train", resume=None):
    """Train `model` in place with SGD and return the per-epoch history.

    Args:
        model: the network (moved to `device`).
        data: ``DataSplits``; train is used for steps, valid for the schedule and the record.
        config: ``TrainConfig``.
        seed: seeds the batch order and the augmentation (same seed on CPU: identical weights).
        device: "auto" (CUDA when present), "cpu", "cuda", ...
        hooks: ``Hook`` instances called at the plug-in points, in order.
        progress: show a tqdm bar over epochs.
        desc: label of the progress bar.
        resume: a ``TrainState.checkpoint()`` of a run with the same model, data, config,
            seed and hooks: training continues after its epoch (model, optimiser, schedule,
            batch order, history and hook states restored).

    Returns:
        A list of dicts, one per epoch: epoch, lr, train_loss, train_error, valid_loss,
        valid_error, seconds (wall time of the epoch's steps and validation), plus what hooks
        added. Losses in nats per sample, errors in percent.

    Raises:
        ValueError: bad data (empty split, non-integer labels, labels beyond the model's
            outputs, samples of a shape the model cannot take) or a malformed `resume`.
        NonFiniteLossError: the loss became NaN/inf (names the epoch).
    """
    device = devices.resolve(device)
    seed = checks.integer("seed", seed, low=0)
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not all(hasattr(data, s) for s in ("train", "valid")):
        raise ValueError(f"data must be a DataSplits (with train and valid splits), got {type(data).__name__}")
    hooks = list(hooks)
    model.to(device)
    data = data.to(device)
    shape = getattr(data, "input_shape", None)
    for name in ("train", "valid"):
        check_inputs(model, getattr(data, name), what=f"the {name} split", input_shape=shape)
    optimizer = make_optimizer(model, config)
    state = TrainState(model, optimizer, data, config, scheduler=make_scheduler(optimizer, config),
                       generator=torch.Generator().manual_seed(seed), hooks=hooks)
    if resume is not None:
        _restore(state, resume)
    for hook in hooks:
        hook.before_training(state)
    if resume is not None:
        for hook, saved in zip(hooks, resume["hooks"]):
            hook.load_state_dict(saved)
    augment = functools.partial(crop_flip, dataset=data.dataset) if config.augment else None
    first = config.epochs + 1 if state.stop_requested else state.epoch + 1
    bar = bars.bar(range(first, config.epochs + 1), progress, desc=desc, leave=False)
    for epoch in bar:
        state.epoch = epoch
        record = _train_epoch(state, hooks, augment, device)
        scheduler = state.scheduler
        stop = any([hook.after_epoch(state, record) for hook in hooks])
        if state.scheduler is scheduler:  # a hook that installed a fresh schedule starts it from scratch
            _step_scheduler(state.scheduler, record["valid_loss"])
        state.history.append(record)
        state.stop_requested = stop
        for hook in hooks:
            hook.epoch_end(state)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}", valid_err=f"{record['valid_error']:.2f}%")
        if stop:
            break
    for hook in hooks:
        hook.after_training(state)
    return state.history


def _train_epoch(state, hooks, augment, device):
    """One pass over the training split, then validation; returns the epoch's record.

    On the CPU a model with convolutions trains channels-last (oneDNN's convolutions and
    pooling are 2-8x faster so) and goes back to the standard layout after the epoch.
    """
    channels_last = device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in state.model.modules())
    if not channels_last:
        return _run_epoch(state, hooks, augment, device)
    state.model.to(memory_format=torch.channels_last)
    try:
        return _run_epoch(state, hooks, augment, device)
    finally:
        state.model.to(memory_format=torch.contiguous_format)


def _run_epoch(state, hooks, augment, device):
    model, optimizer, config, data = state.model, state.optimizer, state.config, state.data
    start = time.perf_counter()
    model.train()
    loss_sum = torch.zeros((), device=device)
    wrong = torch.zeros((), device=device, dtype=torch.long)
    for x, y in data.train.batches(config.batch_size, shuffle=True, generator=state.generator, augment=augment):
        with _autocast(device, config.precision):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for hook in hooks:
            hook.after_backward(state)
        optimizer.step()
        for hook in hooks:
            hook.after_step(state)
        loss_sum += loss.detach() * len(y)
        wrong += (out.detach().argmax(1) != y).sum()
    train_loss = loss_sum.item() / len(data.train)
    if not math.isfinite(train_loss):
        raise NonFiniteLossError(
            f"training loss became {train_loss} in epoch {state.epoch} (lr {optimizer.param_groups[0]['lr']:g}); "
            "try a lower learning rate"
        )
    valid_loss, valid_error = evaluate(model, data.valid, precision=config.precision, check=False)
    return {
        "epoch": state.epoch, "lr": optimizer.param_groups[0]["lr"],
        "train_loss": train_loss, "train_error": 100.0 * wrong.item() / len(data.train),
        "valid_loss": valid_loss, "valid_error": valid_error,
        "seconds": time.perf_counter() - start,
    }


def _restore(state, saved):
    """Load a ``TrainState.checkpoint()`` into a freshly built `state` (hooks come after)."""
    if not isinstance(saved, dict) or set(CHECKPOINT_KEYS) - set(saved):
        got = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
        raise ValueError(f"resume must be a TrainState.checkpoint() dict with keys {', '.join(CHECKPOINT_KEYS)}; "
                         f"got {got}")
    epoch = checks.integer("resume['epoch']", saved["epoch"], low=0, high=state.config.epochs)
    if len(saved["hooks"]) != len(state.hooks):
        raise ValueError(f"resume holds the state of {len(saved['hooks'])} hooks, but fit got {len(state.hooks)}; "
                         "resume with the hooks of the run that made the checkpoint")
    if (saved["scheduler"] is None) != (state.scheduler is None):
        raise ValueError(f"resume {'has no' if saved['scheduler'] is None else 'has an'} lr schedule, but the config's "
                         f"schedule is {state.config.schedule!r}; resume with the config of the run")
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(cpu_copy(saved["optimizer"]))  # a copy: training must not write into `saved`
    if state.scheduler is not None:  # after the optimiser (a fresh MultiStepLR has already set the lr)
        state.scheduler.load_state_dict(copy.deepcopy(saved["scheduler"]))
    state.generator.set_state(saved["generator"])
    state.history = copy.deepcopy(saved["history"])
    state.epoch = epoch
    state.stop_requested = bool(saved["stop_requested"])


def cpu_copy(tree):
    """A copy of a nest of dicts and lists whose tensors are detached CPU copies (other leaves deep-copied)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)
    if type(tree) is dict:
        return {k: cpu_copy(v) for k, v in tree.items()}
    if type(tree) is list:
        return [cpu_copy(v) for v in tree]
    return copy.deepcopy(tree)


def _output_width(model, split, what):
    """Number of outputs of `model` on the first samples of `split`; ValueError if it cannot take them.

    Two samples, in eval mode, so that no layer sees a batch of one.
    """
    shape = "x".join(map(str, split.images.shape[1:]))
    probe = split.images[:2]
    try:
        with torch.no_grad(), eval_mode(model):
            out = model(probe)
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"the model cannot take the samples of {what}, of shape {shape}{_first_layer(model)} "
                         f"({reason})") from error
    if out.dim() != 2 or len(out) != len(probe):
        raise ValueError(f"the model must return (batch, classes) scores; on {len(probe)} samples of {what} it returned "
                         f"shape {tuple(out.shape)}")
    return out.shape[1]


def _first_layer(model):
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            return f"; its first layer {name} takes {module.in_features} features per sample"
        if isinstance(module, nn.Conv2d):
            return f"; its first layer {name} takes images with {module.in_channels} channels"
    return ""


def _step_scheduler(scheduler, valid_loss):
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(valid_loss)
    elif scheduler is not None:
        scheduler.step()


def _autocast(device, precision):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
