"""LOBSTER's bookkeeping between pruning events: when to prune, and which network to keep per level.

``Plateau`` is the authors' pruning trigger (EIDOSLAB/LOBSTER,
``src/utilities/pruning/thresholding/plateau_scheduler.py``): an epoch is *good* when its
validation loss is below ``best + best * tolerance`` (strict), and a good epoch resets the
count of bad ones; the best loss and its state are replaced only by a strictly lower loss;
after `patience` consecutive bad epochs it fires and starts afresh (best = inf).

``LevelBest`` keeps, for one compression level, the state with the best validation
accuracy (lowest top-1 error; ties go to the lower validation loss, then the earliest
epoch), as the authors' logger (``src/utilities/logger.py``) keeps per compression rate
(theirs breaks ties by the earliest epoch alone).

``Levels`` records every level: where it started, what the pruning event did, and its
best network scored on train/valid/test.

All three save and restore themselves as plain dicts (``state_dict``/``load_state_dict``)
so a LOBSTER run can be checkpointed and resumed.
"""

import copy
import math

from psputil import pruning
from psputil.train import evaluate


class Plateau:
    """The authors' plateau rule on the validation loss.

    Args:
        patience: consecutive bad epochs that trigger a pruning event (``pwe``).
        tolerance: an epoch is good when ``loss < best + best * tolerance`` (0.01: within 1 %).
    """

    def __init__(self, patience, tolerance=0.01):
        self.patience = patience
        self.tolerance = tolerance
        self.restore_state = None  # the best state of the window that just fired (set by `step`)
        self.reset()

    def reset(self):
        """Start afresh: no best yet (the next epoch is always good), no bad epochs."""
        self.best = math.inf
        self.bad = 0
        self.best_state = None

    def step(self, loss, state_getter):
        """Take one epoch's validation loss; True when the plateau fires.

        Args:
            loss: the epoch's mean validation loss.
            state_getter: called without arguments to snapshot the current state, only
                when `loss` is a new best (so the caller pays for copies only then).

        Returns:
            True after `patience` consecutive bad epochs. The best state of the window
            is then in ``restore_state`` and the rule has been reset (best = inf).
        """
        # Written as the authors compare (best + best * tol), which rounds differently from (1 + tol) * best;
        # with no best yet every finite loss is good (inf * 0 would be NaN for tolerance 0).
        if self.best == math.inf or loss < self.best + self.best * self.tolerance:
            self.bad = 0
            if loss < self.best:
                self.best, self.best_state = loss, state_getter()
        else:
            self.bad += 1
        if self.bad < self.patience:
            return False
        self.restore_state = self.best_state
        self.reset()
        return True

    def state_dict(self, copy_state=lambda s: s):
        """``{"best", "bad", "best_state"}``; `copy_state` maps the stored state (e.g. to the CPU)."""
        return {"best": self.best, "bad": self.bad,
                "best_state": None if self.best_state is None else copy_state(self.best_state)}

    def load_state_dict(self, saved, copy_state=lambda s: s):
        self.best, self.bad = float(saved["best"]), int(saved["bad"])
        self.best_state = None if saved["best_state"] is None else copy_state(saved["best_state"])
        self.restore_state = None


class LevelBest:
    """The best epoch of one compression level: lowest validation error, then loss, then earliest."""

    def __init__(self):
        self.reset()

    def reset(self):
        """Forget the level (a new one starts)."""
        self.epoch = None
        self.valid_error = math.inf
        self.valid_loss = math.inf
        self.state = None

    def update(self, epoch, valid_error, valid_loss, state_getter):
        """Consider one epoch; keep it (``state_getter()``) if it beats the best so far. Returns True if kept."""
        better = valid_error < self.valid_error or (valid_error == self.valid_error and valid_loss < self.valid_loss)
        if not (better or self.state is None):
            return False
        self.epoch, self.valid_error, self.valid_loss = epoch, valid_error, valid_loss
        self.state = state_getter()
        return True

    def state_dict(self, copy_state=lambda s: s):
        """``{"epoch", "valid_error", "valid_loss", "state"}``; `copy_state` maps the stored state."""
        return {"epoch": self.epoch, "valid_error": self.valid_error, "valid_loss": self.valid_loss,
                "state": None if self.state is None else copy_state(self.state)}

    def load_state_dict(self, saved, copy_state=lambda s: s):
        self.epoch = None if saved["epoch"] is None else int(saved["epoch"])
        self.valid_error, self.valid_loss = float(saved["valid_error"]), float(saved["valid_loss"])
        self.state = None if saved["state"] is None else copy_state(saved["state"])


class Levels:
    """The compression levels of a run: the one being trained, and the finished ones with their best networks.

    Level 0 is the network before the first pruning event; level k the one after event k.

    Args:
        splits: ``DataSplits`` on the training device; every kept network is scored on all three.
        scratch: a model of the same architecture, used to score stored states (its weights are overwritten).
    """

    def __init__(self, splits, scratch):
        self.splits, self.scratch = splits, scratch
        self.best = LevelBest()
        self.current = head(0, 0, None, 0, None)
        self.rows, self.states = [], []  # finished levels, and their {"state", "mask"} on the CPU

    @property
    def index(self):
        """Number of the level being trained."""
        return self.current["level"]

    def update(self, epoch, valid_error, valid_loss, state_getter):
        """Consider the state reached at the end of `epoch` for the current level's best."""
        return self.best.update(epoch, valid_error, valid_loss, state_getter)

    def close(self, mask):
        """Finish the current level: score its best state, append it (with `mask`) to ``rows`` and ``states``.

        Does nothing when the level trained no epoch.
        """
        if self.best.state is None:
            return
        self.scratch.load_state_dict(self.best.state)
        self.rows.append({"level": self.index, "sparsity": pruning.sparsity(self.scratch),
                          "layer_sparsity": pruning.layer_sparsity(self.scratch), **self.current,
                          "best": {"epoch": self.best.epoch, **scores(self.scratch, self.splits)}})
        self.states.append({"state": pruning.to_cpu(self.best.state), "mask": pruning.to_cpu(mask)})

    def start(self, epoch, threshold, pruned, model):
        """Begin the next level after a pruning event at the end of `epoch`; `model` is the pruned network."""
        self.current = head(self.index + 1, epoch, threshold, pruned, scores(model, self.splits))
        self.best.reset()

    def state_dict(self, copy_state=lambda s: s):
        """The level in training, its best so far, the finished levels and their states (mapped by `copy_state`)."""
        return {"current": copy.deepcopy(self.current), "level_best": self.best.state_dict(copy_state),
                "levels": copy.deepcopy(self.rows), "states": list(self.states)}

    def load_state_dict(self, saved, copy_state=lambda s: s):
        self.current, self.rows = copy.deepcopy(saved["current"]), copy.deepcopy(saved["levels"])
        self.states = list(saved["states"])
        self.best.load_state_dict(saved["level_best"], copy_state)


def head(level, start_epoch, threshold, pruned, after_pruning):
    """What is known of a level when it starts (``after_pruning``: its scores before any training)."""
    return {"level": level, "start_epoch": start_epoch, "threshold": threshold, "pruned": pruned,
            "after_pruning": after_pruning}


def scores(model, splits):
    """Train/valid/test loss (nats per sample) and top-1 error (percent) of `model` in eval mode, as a flat dict."""
    out = {}
    for name in ("train", "valid", "test"):
        out[f"{name}_loss"], out[f"{name}_error"] = evaluate(model, getattr(splits, name), check=False)
    return out
