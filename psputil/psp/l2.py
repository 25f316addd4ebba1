"""PSP L2 norm (Fig. 3): the mean over samples of the squared L2 norm of each layer's PSP vector."""

from dataclasses import dataclass
from typing import Dict

from psputil.metrics import Metric
from psputil.psp.passes import check_layer_names, check_nonempty, run, selected


@dataclass
class L2Result:
    """Mean over samples of the squared L2 norm of each layer's PSP vector, and their sum."""

    total: float
    per_layer: Dict[str, float]


class PSPL2(Metric):
    """Sum over layers of the mean squared L2 norm of the PSP vector (Fig. 3)."""

    name = "psp_l2"
    needs_psps = True

    def __init__(self, layers=None):
        self.layers = check_layer_names(layers)

    def init(self, num_points, device):
        return {"sums": {}, "n": 0, "num_points": num_points, "device": device}

    def update(self, state, outputs, targets, psps):
        for name, z in selected(psps, self.layers).items():
            squared = z.flatten(2).double().square().sum(2).sum(1)  # (P,)
            state["sums"][name] = state["sums"].get(name, 0) + squared
        state["n"] += targets.shape[0]
        return state

    def result(self, state):
        return self.summarize(state, None)

    def summarize(self, state, point=0):
        """L2Result of one grid point (point=None: the (P,) totals)."""
        check_nonempty(state["n"])
        per_layer = {name: s / state["n"] for name, s in state["sums"].items()}
        total = sum(per_layer.values())
        if point is None:
            return total
        return L2Result(float(total[point]), {name: float(v[point]) for name, v in per_layer.items()})


def l2(model, batches, layers=None):
    """PSP L2 norm of `model` over `batches` of (inputs, targets): ``.total``, ``.per_layer``.

    Raises:
        ValueError: bad `layers` (see ``entropy``), or a batch that the model cannot take.
    """
    metric = PSPL2(layers)
    return metric.summarize(run(model, batches, [metric])[0])
