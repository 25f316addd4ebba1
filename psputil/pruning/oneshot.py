"""One-shot lottery-ticket pruning (Frankle & Carbin) and the retraining controls of Section 5.1.

One shot: train dense, prune the smallest magnitudes globally down to a target sparsity,
rewind the survivors to their initial values (or to the weights after k iterations),
retrain with the mask fixed. The retraining controls start from a LOBSTER mask:
(a) "lottery": G's mask, the original init; (b) "reinit": G's mask, a new seeded init;
(c) "random": a seeded random mask with G's survivors per tensor, a new seeded init.
Every function works on copies: the caller's model is never changed.
"""

import copy
import math

from psputil import checks, pruning
from psputil.train import Hook, evaluate, fit

CONTROL_KINDS = ("lottery", "reinit", "random")


class SnapshotHook(Hook):
    """Keeps a CPU copy of the state dict after `iteration` optimiser steps (0: before training)."""

    def __init__(self, iteration):
        self.iteration = iteration
        self.steps = 0
        self.state = None

    def before_training(self, state):
        if self.iteration == 0:
            self.state = pruning.to_cpu(state.model.state_dict())

    def after_step(self, state):
        self.steps += 1
        if self.steps == self.iteration:
            self.state = pruning.to_cpu(state.model.state_dict())

    def state_dict(self):
        return {"steps": self.steps, "state": self.state}

    def load_state_dict(self, saved):
        self.steps, self.state = saved["steps"], saved["state"]


def train_dense(model, data, config, seed=0, rewind_iteration=0, device="auto", progress=False):
    """Train a copy of `model` densely; also keep the state to rewind to.

    Returns:
        dict: "state" (trained), "rewind_state" (initial weights, or after `rewind_iteration`
        optimiser steps), "history", and the test/valid loss and error (percent).
    """
    if rewind_iteration < 0:
        raise ValueError(f"rewind_iteration must be >= 0 optimiser steps, got {rewind_iteration}")
    model = copy.deepcopy(model)
    snapshot = SnapshotHook(rewind_iteration)
    history = fit(model, data, config, seed=seed, device=device, hooks=[snapshot], progress=progress, desc="dense")
    if snapshot.state is None:
        raise ValueError(f"rewind_iteration {rewind_iteration} exceeds the {snapshot.steps} optimiser steps of training")
    return {"state": pruning.to_cpu(model.state_dict()), "rewind_state": snapshot.state, "history": history, **_scores(model, data)}


def prune_and_rewind(model, trained_state, rewind_state, target):
    """Global magnitude mask of `trained_state` at `target` percent, and the rewound start.

    Returns:
        (a copy of `model` holding `rewind_state` with the pruned entries zeroed, the mask).
    """
    trained = copy.deepcopy(model)
    trained.load_state_dict(trained_state)
    mask = pruning.magnitude_mask(trained, target)
    rewound = copy.deepcopy(model)
    rewound.load_state_dict(rewind_state)
    return pruning.apply_mask(rewound, mask), mask


def retrain(model, data, config, mask, seed=0, device="auto", progress=False):
    """Train a copy of `model` with `mask` fixed (pruned weights stay exactly zero).

    Returns:
        dict: "state", "mask" (CPU), "history", "sparsity" and the test/valid loss and error.
    """
    model = copy.deepcopy(model)
    pruning.check_mask(model, mask)
    history = fit(model, data, config, seed=seed, device=device, hooks=[pruning.MaskHook(mask)],
                  progress=progress, desc="retrain")
    return {"state": pruning.to_cpu(model.state_dict()), "mask": pruning.to_cpu(mask), "history": history,
            "sparsity": pruning.sparsity(model), **_scores(model, data)}


def one_shot(model, data, config, target, seed=0, rewind_iteration=0, device="auto", progress=False):
    """Frankle & Carbin in one call: dense training, one-shot magnitude pruning, rewind, retraining.

    Args:
        model: the network at its initial weights (not changed).
        data: ``DataSplits``.
        config: ``TrainConfig`` of both the dense training and the retraining.
        target: sparsity to prune to, percent in [0, 100).
        seed: batch order of both trainings.
        rewind_iteration: 0 rewinds to the initial weights, k to the weights after k steps.

    Returns:
        dict as ``retrain`` plus "dense" (the ``train_dense`` result without its states).
    """
    checks.number("target", target, 0, 100, high_open=True)
    dense = train_dense(model, data, config, seed, rewind_iteration, device, progress)
    start, mask = prune_and_rewind(model, dense["state"], dense["rewind_state"], target)
    result = retrain(start, data, config, mask, seed, device, progress)
    result["dense"] = {k: v for k, v in dense.items() if k not in ("state", "rewind_state")}
    return result


def control_start(kind, mask, original_state, fresh_state, seed):
    """Starting (state dict, mask) of a retraining control.

    Args:
        kind: "lottery" (G's mask, original init), "reinit" (G's mask, fresh init) or
            "random" (seeded random mask with G's survivors per tensor, fresh init).
        mask: G's mask.
        original_state: the initial weights G was trained from.
        fresh_state: a new seeded initialisation (ignored by "lottery").
        seed: seed of the random mask.
    """
    if kind not in CONTROL_KINDS:
        raise ValueError(f"unknown control {kind!r}; valid: {', '.join(CONTROL_KINDS)}")
    if kind == "lottery":
        return original_state, mask
    if kind == "reinit":
        return fresh_state, mask
    return fresh_state, pruning.random_mask(mask, seed)


def summarize(values):
    """Mean, sample standard deviation (0 for n = 1) and n of a list of numbers."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0, "values": []}
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n, "values": values}


def _scores(model, data):
    out = {}
    for split in ("valid", "test"):
        out[f"{split}_loss"], out[f"{split}_error"] = evaluate(model, getattr(data, split).to(_device(model)))
    return out


def _device(model):
    return next(model.parameters()).device
