"""LOBSTER gradual pruning (Tartaglione et al.): sensitivity-based shrinkage plus pruning at plateaus.

After every optimiser step each weight and bias of Conv2d/Linear (and, behind a flag,
BatchNorm2d) moves as ``p <- p - lam * p * relu(1 - |dL/dp|)``: parameters the loss is
insensitive to decay towards zero (``lam`` is per step, not scaled by the learning rate).
When the validation loss has not improved by more than 1 % (relative) for ``pwe``
epochs, the best state since the last pruning is restored and a bisection finds the
largest global magnitude threshold whose pruning keeps the validation loss within
``(1 + twt)`` of the current one; the weights under it are pruned for good.

G, the network a run returns, is the state right after its **last** pruning event: the
most compressed network found, whose validation loss is within ``(1 + twt)`` of the
trained network it was pruned from. Every pruning event is checkpointed, so G at a lower
compression rate is the first event that reached it (``event_at``).

Our choice where the description is silent: after each pruning event the learning rate
goes back to its initial value with a fresh ReduceLROnPlateau (``reset_lr``); without it
the plateau schedule, which fires inside every ``pwe`` window, drives the rate to ~0
after a few events and the pruned network never recovers.
"""

import copy
import logging
from dataclasses import dataclass
from typing import Optional

import torch

from psputil import devices, pruning
from psputil.train import evaluate, fit, make_scheduler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LobsterConfig:
    """LOBSTER hyperparameters (the training schedule lives in a ``TrainConfig``)."""

    lam: float = 1e-4  # shrinkage per optimiser step (lambda), not multiplied by the learning rate
    twt: float = 0.05  # tolerated relative rise of the validation loss by one pruning event
    pwe: int = 20  # epochs without a relative valid-loss improvement > `improvement` before pruning
    improvement: float = 0.01  # relative valid-loss improvement that counts as progress
    target: Optional[float] = None  # stop once the sparsity (percent) reaches it; None: no target
    batchnorm: bool = True  # shrink BatchNorm2d weights and biases too (never pruned), as the authors
    reset_lr: bool = True  # after each pruning event: back to the initial lr with a fresh lr schedule

    def __post_init__(self):
        if self.lam < 0:
            raise ValueError(f"lam (lambda) must be >= 0, got {self.lam}")
        if self.twt < 0:
            raise ValueError(f"twt must be >= 0, got {self.twt}")
        if self.pwe < 1:
            raise ValueError(f"pwe must be a positive number of epochs, got {self.pwe}")
        if not 0 <= self.improvement < 1:
            raise ValueError(f"improvement must be a fraction in [0, 1), got {self.improvement}")
        if self.target is not None and not 0 <= self.target < 100:
            raise ValueError(f"target sparsity must be a percentage in [0, 100) or None, got {self.target}")


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
    k-th smallest removes exactly those k weights (ties broken by position).

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
        k = largest_accepted(ranking.count, accept)
    finally:
        load({n: torch.ones_like(m) for n, m in mask.items()})
    new_mask = ranking.prune(k)
    return ranking.threshold(k), new_mask, k


class LobsterHook(pruning.MaskHook):
    """``train.fit`` hook running LOBSTER: shrinkage every step, pruning at validation plateaus."""

    def __init__(self, config, mask, splits):
        super().__init__(mask)
        self.config = config
        self.splits = splits
        self.events, self.checkpoints = [], []
        self.stopped = "epoch budget"
        self.shrink_params, self.insens = [], []

    def before_training(self, state):
        super().before_training(state)
        names = {id(p) for p in self.params}
        extra = []
        if self.config.batchnorm:
            for module in state.model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    extra += [p for p in module.parameters(recurse=False) if id(p) not in names]
        self.shrink_candidates = self.params + extra
        self._reset_plateau(state.model, float("inf"))

    def _reset_plateau(self, model, loss):
        self.best_loss = self.reference = loss
        self.best_state = copy.deepcopy(model.state_dict())
        self.waited = 0

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
        model, loss = state.model, record["valid_loss"]
        if loss < self.best_loss:
            self.best_loss, self.best_state = loss, copy.deepcopy(model.state_dict())
        if loss < self.reference * (1 - self.config.improvement):
            self.reference, self.waited = loss, 0
        else:
            self.waited += 1
        record["sparsity"] = pruning.sparsity(model)
        if self.waited < self.config.pwe:
            return False
        return self._prune(state, record)

    def _prune(self, state, record):
        model = state.model
        model.load_state_dict(self.best_state)
        state.optimizer.state.clear()  # momentum of a state we left behind
        current = evaluate(model, self.splits.valid)[0]
        limit = (1 + self.config.twt) * current
        threshold, new_mask, count = bisect_threshold(
            model, self.mask, lambda m: evaluate(m, self.splits.valid)[0], limit
        )
        if count == 0:
            self.stopped = "nothing left to prune"
            return True
        self.set_mask(model, new_mask)
        row = {"epoch": state.epoch, "threshold": threshold, "pruned": count, "valid_loss_before": current}
        for split in ("train", "valid", "test"):
            row[f"{split}_loss"], row[f"{split}_error"] = evaluate(model, getattr(self.splits, split))
        row["sparsity"] = pruning.sparsity(model)
        row["layer_sparsity"] = pruning.layer_sparsity(model)
        record.update(pruned=count, sparsity=row["sparsity"])
        self.events.append(row)
        self.checkpoints.append({"state": pruning.to_cpu(model.state_dict()), "mask": pruning.to_cpu(new_mask)})
        log.info("epoch %d: pruned %d, sparsity %.2f%%, test error %.2f%%", state.epoch, count, row["sparsity"], row["test_error"])
        self._reset_plateau(model, row["valid_loss"])
        if self.config.reset_lr:
            for group in state.optimizer.param_groups:
                group["lr"] = state.config.lr
            state.scheduler = make_scheduler(state.optimizer, state.config)
        if self.config.target is not None and row["sparsity"] >= self.config.target:
            self.stopped = "target sparsity"
            return True
        return False


def run(model, data, config, train_config, seed=0, device="auto", progress=False, mask=None):
    """Run LOBSTER on a copy of `model` and return every pruning event.

    Args:
        model: the network at its initial weights (not changed).
        data: ``DataSplits``; valid drives plateaus and bisection, test is only recorded.
        config: ``LobsterConfig``.
        train_config: ``TrainConfig``; its ``epochs`` is the budget (use schedule="plateau"
            for the authors' ReduceLROnPlateau).
        seed: batch order.
        device: where to train.
        progress: tqdm bar over epochs.
        mask: starting mask (default: all weights alive).

    Returns:
        dict with "history" (per-epoch records), "events" (one row per pruning event: epoch,
        threshold, pruned, sparsity, layer_sparsity, train/valid/test loss and error),
        "checkpoints" (per event: {"state", "mask"} on the CPU), "stopped" (why it ended) and
        "state"/"mask": G, the last event's checkpoint (the trained network if nothing was pruned).
    """
    mask = pruning.full_mask(model) if mask is None else mask
    pruning.check_mask(model, mask)
    device = devices.resolve(device)
    model = copy.deepcopy(model).to(device)
    data = data.to(device)
    hook = LobsterHook(config, mask, data)
    history = fit(model, data, train_config, seed=seed, device=device, hooks=[hook], progress=progress, desc="LOBSTER")
    if hook.checkpoints:
        final = hook.checkpoints[-1]
    else:
        final = {"state": pruning.to_cpu(hook.best_state), "mask": pruning.to_cpu(hook.mask)}
    return {"history": history, "events": hook.events, "checkpoints": hook.checkpoints,
            "stopped": hook.stopped, "state": final["state"], "mask": final["mask"]}


def event_at(events, target):
    """Index of the first pruning event whose sparsity reaches `target` percent."""
    for index, row in enumerate(events):
        if row["sparsity"] >= target:
            return index
    reached = max((row["sparsity"] for row in events), default=0.0)
    raise ValueError(f"the LOBSTER run never reached {target}% sparsity; valid milestones are <= {reached:.3f}%")
