"""Metrics that accumulate over data batches for many models (grid points) at once.

The loss-plane evaluator (``psputil.landscape``) runs P models on each batch and
hands every metric the outputs, the targets and, when the metric asks for them,
the PSPs (ReLU inputs). A metric keeps its own running state and turns it into
one number per model at the end. PSP metrics live in ``psputil.psp``.
"""

import torch
import torch.nn.functional as F


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
