"""The training engine: SGD over tensors held in memory, with plug-in hooks.

``fit`` trains a model in place and returns its per-epoch history. Pruning plugs
in through ``Hook`` (a per-step regulariser, masks, decisions at epoch end)
without copying the loop.
"""

import contextlib
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from psputil import devices
from psputil.data import crop_flip

SCHEDULES = ("none", "step", "plateau")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule hyperparameters (all enter the run-store key)."""

    epochs: int = 20
    batch_size: int = 100
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "none"  # "step": x gamma at `milestones`; "plateau": x gamma when valid loss stalls
    milestones: tuple = ()  # epochs (1-based, counted at their end) where "step" multiplies lr by gamma
    gamma: float = 0.1
    plateau_patience: int = 10  # epochs without valid-loss improvement before "plateau" cuts lr
    augment: bool = False  # CIFAR pad-4 random crop + horizontal flip
    precision: str = "fp32"  # "bf16": autocast the forward pass to bfloat16 (GPU)

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"need epochs >= 0, batch_size >= 1 and lr > 0; got {self.epochs}, {self.batch_size}, {self.lr}")
        if self.nesterov and self.momentum <= 0:
            raise ValueError("nesterov=True needs momentum > 0")


# The CIFAR ResNet recipe: lr 0.1, momentum 0.9, wd 1e-4, batch 128, x0.1 at epochs 100 and 150 of 200.
RESNET32_RECIPE = TrainConfig(
    epochs=200, batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4,
    schedule="step", milestones=(100, 150), augment=True,
)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainState:
    """What hooks see: the model, its optimiser, the epoch (1-based) and the history so far."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    data: object
    config: TrainConfig
    epoch: int = 0
    history: list = field(default_factory=list)
    scheduler: Optional[object] = None


class Hook:
    """Plug-in points of ``fit``; override the ones you need."""

    def before_training(self, state):
        """Called once, after the optimiser is built."""

    def after_backward(self, state):
        """Called after ``loss.backward()``, before the optimiser step (e.g. mask gradients)."""

    def after_step(self, state):
        """Called after every optimiser step (e.g. a regulariser, re-applying masks)."""

    def after_epoch(self, state, record):
        """Called after each epoch's evaluation; may add keys to `record`. Return True to stop."""
        return False


def make_optimizer(model, config):
    return torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum,
        nesterov=config.nesterov, weight_decay=config.weight_decay,
    )


def make_scheduler(optimizer, config):
    if config.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.milestones), gamma=config.gamma)
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=config.gamma, patience=config.plateau_patience)
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


@torch.no_grad()
def evaluate(model, split, batch_size=1000, precision="fp32"):
    """Mean cross-entropy loss and top-1 error (percent) of `model` on a ``TensorSplit``.

    The model is put in eval mode and returned to its previous modes afterwards.
    """
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


def fit(model, data, config, seed=0, device="auto", hooks=(), progress=True, desc="train"):
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

    Returns:
        A list of dicts, one per epoch: epoch, lr, train_loss, train_error, valid_loss,
        valid_error, seconds, plus what hooks added.

    Raises:
        NonFiniteLossError: the loss became NaN/inf (names the epoch).
    """
    device = devices.resolve(device)
    model.to(device)
    data = data.to(device)
    optimizer = make_optimizer(model, config)
    state = TrainState(model, optimizer, data, config, scheduler=make_scheduler(optimizer, config))
    generator = torch.Generator().manual_seed(seed)
    augment = functools.partial(crop_flip, dataset=data.dataset) if config.augment else None
    for hook in hooks:
        hook.before_training(state)
    bar = tqdm(range(1, config.epochs + 1), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        state.epoch = epoch
        start = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        wrong = torch.zeros((), device=device, dtype=torch.long)
        for x, y in data.train.batches(config.batch_size, shuffle=True, generator=generator, augment=augment):
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
                f"training loss became {train_loss} in epoch {epoch} (lr {optimizer.param_groups[0]['lr']:g}); "
                "try a lower learning rate"
            )
        valid_loss, valid_error = evaluate(model, data.valid, precision=config.precision)
        record = {
            "epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
            "train_loss": train_loss, "train_error": 100.0 * wrong.item() / len(data.train),
            "valid_loss": valid_loss, "valid_error": valid_error,
            "seconds": time.perf_counter() - start,
        }
        scheduler = state.scheduler
        stop = any([hook.after_epoch(state, record) for hook in hooks])
        if state.scheduler is scheduler:  # a hook that installed a fresh schedule starts it from scratch
            _step_scheduler(state.scheduler, valid_loss)
        state.history.append(record)
        bar.set_postfix(loss=f"{train_loss:.3f}", valid_err=f"{valid_error:.2f}%")
        if stop:
            break
    return state.history


def _step_scheduler(scheduler, valid_loss):
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(valid_loss)
    elif scheduler is not None:
        scheduler.step()


def _autocast(device, precision):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
