"""Metrics that accumulate over data batches for many models (grid points) at once.

The loss-plane evaluator (``psputil.landscape``) runs P models on each batch and
hands every metric the outputs, the targets and, when the metric asks for them,
the PSPs (ReLU inputs). A metric keeps its own running state and turns it into
one number per model at the end. PSP metrics live in ``psputil.psp``. ``check_batch``
checks a batch (shapes and labels, with ``data.check_split``) before a model sees it.
"""

import torch
import torch.nn.functional as F

from psputil.data import TensorSplit, check_split

_ANY_CLASS = 2**62  # the class bound when labels are only counted, never compared with outputs


class Metric:
    """One quantity per model, accumulated over batches.

    Attributes:
        name: key of the resulting map.
        needs_psps: whether ``update`` needs the PSPs of the ReLU layers.
    """

    name = "metric"
    needs_psps = False

    def init(self, num_points, device):
        """Fresh running state for `num_points` models."""
        raise NotImplementedError

    def update(self, state, outputs, targets, psps):
        """Fold in one batch and return the new state.

        Args:
            state: what ``init`` or the previous ``update`` returned.
            outputs: logits, shape (P, B, num_classes).
            targets: labels, shape (B,).
            psps: None, or dict ReLU module path -> PSPs of shape (P, B, *neuron shape).
        """
        raise NotImplementedError

    def result(self, state):
        """A float tensor of shape (P,)."""
        raise NotImplementedError


class Loss(Metric):
    """Mean cross-entropy over all samples."""

    name = "loss"

    def init(self, num_points, device):
        return {"sum": torch.zeros(num_points, dtype=torch.float64, device=device), "n": 0}

    def update(self, state, outputs, targets, psps):
        p, b, c = outputs.shape
        losses = F.cross_entropy(outputs.reshape(p * b, c).float(), targets.repeat(p), reduction="none")
        state["sum"] += losses.view(p, b).sum(1).double()
        state["n"] += b
        return state

    def result(self, state):
        return state["sum"] / state["n"]


class Error(Metric):
    """Top-1 error in percent."""

    name = "error"

    def init(self, num_points, device):
        return {"wrong": torch.zeros(num_points, dtype=torch.float64, device=device), "n": 0}

    def update(self, state, outputs, targets, psps):
        state["wrong"] += (outputs.argmax(-1) != targets).sum(1).double()
        state["n"] += outputs.shape[1]
        return state

    def result(self, state):
        return 100.0 * state["wrong"] / state["n"]


def check_batch(batch, num_classes=None, input_shape=None, what="the batch"):
    """Check one (inputs, targets) batch with ``data.check_split``; returns (inputs, targets).

    Args:
        batch: a pair (inputs (B, ...), targets (B,)).
        num_classes: labels must lie in [0, num_classes) (None: any class index).
        input_shape: the (C, H, W) the model takes (None: not checked).
        what: how the message names the batch.

    Raises:
        ValueError: not a pair of tensors, lengths differ, labels not integer class indices in
            range, or samples of another shape. An empty batch passes (it adds nothing).
    """
    try:
        inputs, targets = batch
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a pair (inputs, targets), got {type(batch).__name__}") from None
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise ValueError(f"{what} must hold two tensors (inputs, targets), got "
                         f"({type(inputs).__name__}, {type(targets).__name__})")
    split = TensorSplit(inputs, targets)  # checks the lengths agree
    if len(split):
        shape = tuple(input_shape) if input_shape is not None else tuple(inputs.shape[1:])
        check_split(split, num_classes if num_classes is not None else _ANY_CLASS, shape, what)
    return inputs, targets
