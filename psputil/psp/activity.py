"""Dead and always-on neurons: which ReLU inputs never, or always, turn positive on the samples.

A neuron is the input z of an ``nn.ReLU`` (a conv channel at one spatial position is
one neuron, as everywhere in ``psputil.psp``). On a set of samples it is

* *always off* (dead) when z <= 0 on every sample: its state never changes, so it
  adds zero first-order entropy and drags every mean over neurons towards zero;
* *always on* when z > 0 on every sample: it acts as a linear unit, also with zero
  entropy, but it still passes signal, so it is *live* and reported apart;
* *live* otherwise too: live = not always off (what ``psp.entropy(neurons="live")`` keeps).

Both are properties of the samples seen: more samples can only turn "always off" or
"always on" neurons into ordinary ones.
"""

from dataclasses import dataclass
from typing import Dict

import torch

from psputil.metrics import Metric
from psputil.psp.passes import check_layer_names, check_nonempty, measure, selected


@dataclass
class ActivityResult:
    """Always-off and always-on neurons of one model, per ReLU layer (relu module path).

    Attributes:
        off: path -> fraction (0-1) of the layer's neurons with z <= 0 on every sample.
        on: path -> fraction (0-1) of the layer's neurons with z > 0 on every sample.
        live: path -> (N,) bool tensor, True = not always off (always-on neurons are live).
        always_on: path -> (N,) bool tensor, True = z > 0 on every sample.
        samples: samples seen.
    """

    off: Dict[str, float]
    on: Dict[str, float]
    live: Dict[str, torch.Tensor]
    always_on: Dict[str, torch.Tensor]
    samples: int

    @property
    def off_total(self):
        """Fraction of always-off neurons over all analysed neurons."""
        return _share(self.live, lambda m: ~m)

    @property
    def on_total(self):
        """Fraction of always-on neurons over all analysed neurons."""
        return _share(self.always_on, lambda m: m)

    def fractions(self):
        """path -> {"off", "on"} fractions: what ``book.figures.dead_neurons`` draws per network."""
        return {name: {"off": self.off[name], "on": self.on[name]} for name in self.off}

    def to_dict(self):
        """Plain dict (floats, bool tensors on the CPU) for the run store."""
        return {"off": dict(self.off), "on": dict(self.on), "off_total": self.off_total, "on_total": self.on_total,
                "live": {n: m.cpu() for n, m in self.live.items()},
                "always_on": {n: m.cpu() for n, m in self.always_on.items()}, "samples": self.samples}


class Activity(Metric):
    """Always-off and always-on neurons for P models at once; ``result`` is the always-off share per model.

    Args:
        layers: relu module paths to analyse (None: all).
    """

    name = "dead_fraction"
    needs_psps = True

    def __init__(self, layers=None):
        self.layers = check_layer_names(layers)

    def init(self, num_points, device):
        return {"ever": {}, "always": {}, "n": 0, "num_points": num_points}

    def update(self, state, outputs, targets, psps):
        for name, z in selected(psps, self.layers).items():
            active = z.flatten(2) > 0  # (P, B, N)
            ever, always = active.any(1), active.all(1)
            if name in state["ever"]:
                ever, always = ever | state["ever"][name], always & state["always"][name]
            state["ever"][name], state["always"][name] = ever, always
        state["n"] += targets.shape[0]
        return state

    def result(self, state):
        check_nonempty(state["n"])
        dead = sum((~e).sum(1) for e in state["ever"].values())
        neurons = sum(e.shape[1] for e in state["ever"].values())
        return dead.double() / neurons

    def summarize(self, state, point=0):
        """``ActivityResult`` of grid point `point`."""
        check_nonempty(state["n"])
        live = {n: e[point] for n, e in state["ever"].items()}
        always = {n: a[point] for n, a in state["always"].items()}
        return ActivityResult(off={n: float((~m).double().mean()) for n, m in live.items()},
                              on={n: float(m.double().mean()) for n, m in always.items()},
                              live=live, always_on=always, samples=state["n"])


def activity(model, batches, layers=None):
    """Always-off (dead) and always-on neurons of `model` on `batches`, per ReLU layer, in one pass.

    Args:
        model: network whose hidden activations are ``nn.ReLU`` modules; run in eval mode
            without gradients, its modes and weights left as they were.
        batches: iterable of (inputs, targets) (targets are only counted).
        layers: relu module paths (None: every ReLU layer).

    Returns:
        ``ActivityResult``: per layer the fractions of always-off and always-on neurons and the
        bool masks of live (= not always off) and always-on neurons.

    Raises:
        ValueError: an unknown layer, a batch the model cannot take, or no samples.
    """
    metric = Activity(layers)
    return measure(model, batches, [metric])[metric.name]


def _share(masks, select):
    total = sum(m.numel() for m in masks.values())
    return float(sum(int(select(m).sum()) for m in masks.values())) / total if total else float("nan")
