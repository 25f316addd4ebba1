"""LOBSTER gradual pruning (Tartaglione et al.): sensitivity-based shrinkage plus pruning at plateaus.

What it computes (paper Sec. 3; the authors' code EIDOSLAB/LOBSTER):

* **Shrinkage** (``src/utilities/pruning/sensitivity/LOBSTER.py``): after every optimiser
  step each weight and bias of Conv2d/Linear (and BatchNorm2d, flag ``batchnorm``) moves
  as ``p <- p - lam * p * relu(1 - |dL/dp|)`` with the same mini-batch's gradient:
  parameters the loss is insensitive to decay towards zero (``lam`` per step, not scaled
  by the learning rate).
* **When to prune** (``.../thresholding/plateau_scheduler.py``; ``plateau.Plateau``): an
  epoch is bad when its validation loss is not below ``best + best * tolerance``; after
  ``pwe`` consecutive bad epochs the best state since the last pruning (weights and
  BatchNorm buffers) is restored and pruned, and the rule starts afresh.
* **How much** (``.../thresholding/threshold_scheduler.py``): the largest global
  magnitude threshold whose pruning keeps the validation loss ``<= (1 + twt)`` times
  the restored state's; everything under it is zeroed for good.
* **The network at a compression level**: levels are numbered by pruning events (level
  0: before the first). For each, the state with the best validation accuracy reached
  while training at that level (``plateau.LevelBest``), as the authors' logger
  (``src/utilities/logger.py``) keeps per compression rate. G at a rate is that network
  of the first level reaching the rate (``level_at``), never the state right after a
  pruning event. The post-pruning scores are recorded beside it to show the recovery.
* The learning-rate schedule (``TrainConfig(schedule="plateau")``; the authors use
  ``plateau_threshold=0, plateau_cooldown=50``) is stepped on each epoch's validation
  loss measured before any restore or pruning, as the authors' ``train.py``.

Deviations from the authors' code:

* Threshold search. Ours: the exact largest threshold within the bound, by bisection
  over the sorted survivor magnitudes (``bisect_threshold``); every pruned state we keep
  was evaluated and is within the bound. Theirs: start at the mean of the per-tensor
  mean magnitudes, bisect between real-valued bounds until the losses at the two ends
  differ by less than 5 % of the bound, then apply the midpoint, which was never
  evaluated and can exceed the bound.
* What is pruned and counted. They shrink, prune (one global threshold) and count in
  the sparsity every parameter of Linear, Conv2d and BatchNorm2d, biases and BatchNorm
  gamma/beta included. Our masks and sparsity cover Conv2d/Linear weights and biases
  only (the parameters the paper's compression rates count); BatchNorm parameters are shrunk (``batchnorm=True``) but never pruned.
  Their mask is rebuilt each epoch as ``p != 0``, so anything exactly zero at an epoch's
  start is frozen (BatchNorm beta, initialised to 0, never trains); ours changes only at
  pruning events. Our bisection always keeps at least one weight.
* Choosing the network of a level: ties in validation accuracy go to the lower
  validation loss (theirs: the earliest epoch), and the untrained initial network is not
  a candidate for level 0 (they log it as "INIT").
* Stopping. They only stop at the epoch budget. We may also stop at a target sparsity
  (``target``): the event that reaches it is followed by training at that level until
  the plateau rule fires again (or the budget ends), then the run stops without pruning.
  A plateau in the budget's last epoch prunes nothing (the new level could not train),
  and a bisection that can prune nothing ends the run ("nothing left to prune").
* Learning rate: ``reset_lr=True`` (not the default) puts the lr back to its initial
  value with a fresh schedule after every event; the authors never reset it. The
  optimiser's momentum buffers are cleared when the best state is restored (theirs are
  kept; with their momentum 0 there are none).
"""

import copy
import dataclasses
import logging
from dataclasses import dataclass
from typing import Optional

import torch

from psputil import checks, devices, pruning
from psputil.pruning.plateau import Levels, Plateau
from psputil.train import TrainConfig, check_inputs, cpu_copy, evaluate, fit, make_scheduler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LobsterConfig:
    """LOBSTER hyperparameters (the training schedule lives in a ``TrainConfig``).

    Raises:
        ValueError: a field of the wrong type or out of range (checked at construction).
    """

    lam: float = 1e-4  # shrinkage per optimiser step (lambda), not multiplied by the learning rate
    twt: float = 0.05  # tolerated relative rise of the validation loss by one pruning event
    pwe: int = 20  # consecutive bad epochs (valid loss not within `tolerance` of the best) before pruning
    tolerance: float = 0.01  # an epoch is good when valid loss < best + best * tolerance
    target: Optional[float] = None  # sparsity (percent) after which the run trains on, then stops; None: no target
    batchnorm: bool = True  # shrink BatchNorm2d weights and biases too (never pruned), as the authors
    reset_lr: bool = False  # after each pruning event: back to the initial lr with a fresh lr schedule

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        put("lam", float(checks.number("lam", self.lam, low=0)))
        put("twt", float(checks.number("twt", self.twt, low=0)))
        put("pwe", checks.integer("pwe", self.pwe, low=1))
        put("tolerance", float(checks.number("tolerance", self.tolerance, 0, 1, high_open=True)))
        target = checks.number("target", self.target, 0, 100, low_open=True, high_open=True, optional=True)
        put("target", None if target is None else float(target))
        checks.flag("batchnorm", self.batchnorm)
        checks.flag("reset_lr", self.reset_lr)


@torch.no_grad()
def insensitivity(grads):
    """``-relu(1 - |g|)`` (note the sign) for a list of gradients, as new tensors.

    Computed as ``min(|g|, 1) - 1``: three passes over memory instead of four.
    """
    out = torch._foreach_abs(grads)
    torch._foreach_clamp_max_(out, 1.0)
    torch._foreach_add_(out, -1.0)
    return out


@torch.no_grad()
def shrink_(params, grads, lam, insens=None):
    """In place LOBSTER shrinkage ``p <- p - lam * p * relu(1 - |g|)`` for lists of tensors.

    Args:
        params, grads: matching lists of tensors.
        lam: lambda, the shrinkage per call.
        insens: ``insensitivity(grads)`` if already computed (then `grads` is not read).
    """
    insens = insensitivity(grads) if insens is None else insens
    torch._foreach_addcmul_(params, params, insens, value=lam)


def largest_accepted(n, accept):
    """Largest k in [0, n] with ``accept(k)`` true, by bisection; `accept` must be monotone (true, then false).

    ``accept(0)`` is taken as true and never called.
    """
    lo, hi = 0, n + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if accept(mid):
            lo = mid
        else:
            hi = mid
    return lo


@torch.no_grad()
def bisect_threshold(model, mask, loss_fn, limit):
    """Largest global magnitude threshold whose pruning keeps ``loss_fn(model) <= limit``.

    Candidate thresholds are the magnitudes of the survivors of `mask`; pruning at the
    k-th smallest removes exactly those k weights (ties broken by position). At least one
    survivor is always kept (a mask pruning everything cannot be trained).

    Returns:
        (threshold, new mask, number pruned); threshold 0.0 and the same mask when nothing can go.
    """
    ranking = pruning.MagnitudeRanking(model, mask)
    params = pruning.prunable(model)
    saved = {n: p.detach().clone() for n, p in params.items()}

    def load(candidate):
        for n, p in params.items():
            p.copy_(saved[n] * candidate[n].to(p.device))

    def accept(k):
        load(ranking.prune(k))
        return loss_fn(model) <= limit

    try:
        k = largest_accepted(max(ranking.count - 1, 0), accept)
    finally:
        load({n: torch.ones_like(m) for n, m in mask.items()})
    new_mask = ranking.prune(k)
    return ranking.threshold(k), new_mask, k


def _clone(state_dict):
    return {k: v.detach().clone() for k, v in state_dict.items()}


class LobsterHook(pruning.MaskHook):
    """``train.fit`` hook running LOBSTER: shrinkage every step, pruning at plateaus, the best state per level.

    Args:
        config: ``LobsterConfig``.
        mask: the starting mask.
        splits: ``DataSplits`` on the training device (valid drives the decisions, all three are scored).
        on_event: called with ``run``'s checkpoint after every pruning event and at the end.
        arguments: plain dict describing the run (stored in checkpoints, compared on resume).
    """

    def __init__(self, config, mask, splits, on_event=None, arguments=None):
        super().__init__(mask)
        self.config, self.splits, self.on_event, self.arguments = config, splits, on_event, arguments
        self.plateau = Plateau(config.pwe, config.tolerance)
        self.levels = None  # built with the model (before_training)
        self.target_reached, self.stopped, self.finished = False, None, False
        self.event_pending = False
        self.shrink_params, self.insens = [], []

    def before_training(self, state):
        super().before_training(state)
        self.model = state.model
        self.levels = Levels(self.splits, copy.deepcopy(state.model))
        names = {id(p) for p in self.params}
        extra = []
        if self.config.batchnorm:
            for module in state.model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    extra += [p for p in module.parameters(recurse=False) if id(p) not in names]
        self.shrink_candidates = self.params + extra

    def after_backward(self, state):
        super().after_backward(state)
        self.shrink_params = [p for p in self.shrink_candidates if p.grad is not None]
        self.insens = insensitivity([p.grad for p in self.shrink_params]) if self.shrink_params else []

    def after_step(self, state):
        # Pruned weights need no re-masking here: their gradients are masked, their momentum
        # buffers start at zero (cleared at every event), so SGD, weight decay and the
        # shrinkage (p + lam * p * s) all leave an exact 0 at 0. This saves a pass per step.
        if self.shrink_params and self.config.lam > 0:
            shrink_(self.shrink_params, None, self.config.lam, insens=self.insens)

    def after_epoch(self, state, record):
        model = state.model
        snapshot = lambda: _clone(model.state_dict())  # noqa: E731
        record["level"] = self.levels.index
        record["sparsity"] = pruning.sparsity(model)  # of the network this epoch trained (before any pruning)
        self.levels.update(state.epoch, record["valid_error"], record["valid_loss"], snapshot)
        if not self.plateau.step(record["valid_loss"], snapshot):
            return False
        best_state, self.plateau.restore_state = self.plateau.restore_state, None
        if self.target_reached:
            self.stopped = "target sparsity"
            return True
        if state.epoch >= state.config.epochs:
            log.info("epoch %d: plateau in the last epoch; not pruning (no epoch left to train a new level)",
                     state.epoch)
            return False
        if best_state is not None:  # None only if no valid loss of the window was finite
            model.load_state_dict(best_state)
        state.optimizer.state.clear()  # momentum of a state we left behind
        return self._prune(state, record)

    def _prune(self, state, record):
        model, valid = state.model, self.splits.valid
        current = evaluate(model, valid, check=False)[0]
        limit = (1 + self.config.twt) * current
        loss = lambda m: evaluate(m, valid, check=False)[0]  # noqa: E731
        threshold, new_mask, count = bisect_threshold(model, self.mask, loss, limit)
        if count == 0:
            self.stopped = "nothing left to prune"
            return True
        self.levels.close(self.mask)
        self.set_mask(model, new_mask)
        self.levels.start(state.epoch, threshold, count, model)
        record["pruned"] = count
        sparsity = pruning.sparsity(model)
        log.info("epoch %d: pruned %d (threshold %.3g), sparsity %.2f%%, test error %.2f%% before recovery",
                 state.epoch, count, threshold, sparsity, self.levels.current["after_pruning"]["test_error"])
        if self.config.reset_lr:
            for group in state.optimizer.param_groups:
                group["lr"] = state.config.lr
            state.scheduler = make_scheduler(state.optimizer, state.config)
        if self.config.target is not None and sparsity >= self.config.target:
            self.target_reached = True  # train on at this level until the next plateau, then stop
        self.event_pending = True
        return False

    def epoch_end(self, state):
        if self.event_pending:
            self.event_pending = False
            if self.on_event is not None:
                self.on_event(checkpoint_of(state))

    def after_training(self, state):
        if self.finished:
            return
        self.levels.close(self.mask)
        self.stopped = self.stopped or "epoch budget"
        self.finished = True
        if self.on_event is not None:
            self.on_event(checkpoint_of(state))

    def state_dict(self):
        return {"mask": pruning.to_cpu(self.mask), "plateau": self.plateau.state_dict(cpu_copy),
                **self.levels.state_dict(cpu_copy), "target_reached": self.target_reached,
                "stopped": self.stopped, "finished": self.finished, "arguments": copy.deepcopy(self.arguments)}

    def load_state_dict(self, saved):
        device = next(self.model.parameters()).device
        on_device = lambda s: {k: v.to(device, copy=True) for k, v in s.items()}  # noqa: E731
        self.set_mask(self.model, {k: v.to(device) for k, v in saved["mask"].items()})
        self.plateau.load_state_dict(saved["plateau"], on_device)
        self.levels.load_state_dict(saved, on_device)
        self.target_reached, self.stopped, self.finished = saved["target_reached"], saved["stopped"], saved["finished"]


HOOK_KEYS = ("mask", "plateau", "current", "level_best", "levels", "states", "target_reached", "stopped", "finished",
             "arguments")


def checkpoint_of(state):
    """``run``'s checkpoint: the ``TrainState.checkpoint()`` with the LOBSTER hook's state merged in at the top."""
    out = state.checkpoint()
    (hook,) = out.pop("hooks")
    out.update(hook)
    return out


def run(model, data, config, train_config, seed=0, device="auto", progress=False, mask=None, on_event=None,
        resume=None):
    """Run LOBSTER on a copy of `model`; return every compression level's best network.

    Args:
        model: the network at its initial weights (not changed).
        data: ``DataSplits``; valid drives plateaus and bisection, train and test are only scored.
        config: ``LobsterConfig``.
        train_config: ``TrainConfig``; its ``epochs`` (>= 1) is the budget (``schedule="plateau"``
            with ``plateau_threshold=0, plateau_cooldown=50`` is the authors' lr schedule).
        seed: batch order.
        device: where to train.
        progress: tqdm bar over epochs.
        mask: starting mask (default: all weights alive).
        on_event: called after every pruning event and once at the end with a checkpoint: a
            plain dict (CPU tensors, numbers, strings, lists; ``torch.save``-able and loadable
            with ``weights_only=True``) holding "epoch", "model", "optimizer", "scheduler",
            "generator", "history", "stop_requested" (see ``TrainState.checkpoint``), "mask",
            "plateau" ({"best", "bad", "best_state"}), "level_best" ({"epoch", "valid_error",
            "valid_loss", "state"}: the current level's best so far), "current" (the current
            level's head: level, start_epoch, threshold, pruned, after_pruning), "levels" and
            "states" (finished levels, as in the result), "target_reached", "stopped",
            "finished" and "arguments" (the configs and seed, checked on resume). Each
            checkpoint holds everything before it: keep the latest only.
        resume: such a checkpoint; with the same other arguments the run continues from it
            and ends bit-identical (on the CPU) to the uninterrupted run.

    Returns:
        dict:
        "history": per-epoch records (epoch, lr, train/valid loss and error, seconds, "level"
            trained at, "sparsity" of the network trained that epoch, "pruned" on event epochs);
        "levels": per level k (0: before the first event, k: after event k): "level",
            "sparsity" and "layer_sparsity" (percent, of the best state), "start_epoch" (epochs
            done when the level began), "threshold" (None for level 0), "pruned" (weights
            removed by the event), "after_pruning" (train/valid/test loss and error right after
            the event, before recovery; None for level 0), "best" (its "epoch" and its
            train/valid/test loss and error, eval mode);
        "states": per level {"state": the best state dict, "mask"} on the CPU;
        "stopped": "epoch budget" (the budget ran out, target reached or not), "target sparsity"
            (the plateau fired at a level at or above the target), or "nothing left to prune".
        Losses in nats per sample, errors in percent.
    """
    if not isinstance(config, LobsterConfig):
        raise ValueError(f"config must be a LobsterConfig, got {type(config).__name__}")
    if not isinstance(train_config, TrainConfig) or train_config.epochs < 1:
        raise ValueError(f"train_config must be a TrainConfig with epochs >= 1, got {train_config!r}")
    seed = checks.integer("seed", seed, low=0)
    mask = pruning.full_mask(model) if mask is None else mask
    pruning.check_mask(model, mask)
    device = devices.resolve(device)
    model = copy.deepcopy(model).to(device)
    data = data.to(device)
    check_inputs(model, data.test, what="the test split", input_shape=data.input_shape)
    arguments = _arguments(config, train_config, seed)
    hook = LobsterHook(config, mask, data, on_event, arguments)
    history = fit(model, data, train_config, seed=seed, device=device, hooks=[hook], progress=progress,
                  desc="LOBSTER", resume=None if resume is None else _fit_resume(resume, arguments))
    return {"history": history, "levels": hook.levels.rows, "states": hook.levels.states, "stopped": hook.stopped}


def _arguments(config, train_config, seed):
    """The hyperparameters and seed of a run as plain values (lists for tuples)."""
    def plain(config):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}

    return {"lobster": plain(config), "train": plain(train_config), "seed": seed}


def _fit_resume(checkpoint, arguments):
    """The ``fit`` resume dict of a ``run`` checkpoint, after checking it comes from a run with these arguments."""
    if not isinstance(checkpoint, dict) or set(HOOK_KEYS) - set(checkpoint):
        got = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"resume must be a checkpoint that lobster.run passed to on_event (keys "
                         f"{', '.join(HOOK_KEYS)}, ...); got {got}")
    diff = _differences(checkpoint["arguments"], arguments)
    if diff:
        raise ValueError(f"resume comes from a run with other arguments ({'; '.join(diff)}); resume with the same ones")
    out = {k: v for k, v in checkpoint.items() if k not in HOOK_KEYS}
    out["hooks"] = [{k: checkpoint[k] for k in HOOK_KEYS}]
    return out


def _differences(saved, now, path=""):
    if isinstance(saved, dict) and isinstance(now, dict):
        keys = sorted(set(saved) | set(now), key=str)
        return [d for k in keys for d in _differences(saved.get(k), now.get(k), f"{path}{k}.")]
    return [] if saved == now else [f"{path[:-1]}: {saved!r} in the checkpoint, {now!r} now"]


def level_at(levels, rate):
    """Index of the first level whose sparsity reaches `rate` percent (level 0, dense, counts).

    Args:
        levels: ``run(...)["levels"]``.
        rate: sparsity in percent, in [0, 100).

    Raises:
        ValueError: `rate` is not a number in [0, 100), or no level reaches it (names the highest reached).
    """
    rate = checks.number("rate", rate, 0, 100, high_open=True)
    for index, row in enumerate(levels):
        if row["sparsity"] >= rate:
            return index
    reached = max((row["sparsity"] for row in levels), default=None)
    highest = "no level at all" if reached is None else f"a highest sparsity of {reached:.3f}%"
    raise ValueError(f"the LOBSTER run never reached {rate}% sparsity ({highest}); valid rates are <= that")
