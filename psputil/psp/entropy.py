"""PSP L2 norm and PSP-entropy of first, second and higher order (Sections 4, 5.3; Fig. 3, 4).

A PSP is the input of an ``nn.ReLU`` module (one hidden layer); a conv channel at
one spatial position is one neuron. The quantities are accumulated in one
streaming pass by the ``Metric`` classes below, which the loss-plane evaluator
runs for many grid points at once; ``l2`` and ``entropy`` run the same metrics
for one model. Formulas and counting live in ``psputil.psp.counts``.

Second and higher order keep the activity bits of every sample (1 bit per
neuron and sample, per grid point) and count pairs tile by tile at the end.
"""

import math
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch

from psputil import checks, models
from psputil.psp import counts
from psputil.psp.activations import capture_psps, relu_modules
from psputil.metrics import Metric, check_batch
from psputil.train import eval_mode

# Orders >= 3 count the joint states of SUBSETS_PER_CHUNK subsets at a time (``counts.subset_entropy``) in
# an int64 table of classes x subsets x 2^order entries; an order whose table would exceed this is refused.
MAX_STATE_TABLE_BYTES = 2**30
SUBSETS_PER_CHUNK = 64


@dataclass
class L2Result:
    """Mean over samples of the squared L2 norm of each layer's PSP vector, and their sum."""

    total: float
    per_layer: Dict[str, float]


@dataclass
class EntropyResult:
    """PSP-entropy in bits of one model.

    Attributes:
        order: 1, 2 or k.
        total: mean over all neurons (order 1), all pairs (2) or all k-subsets (k)
            of all analysed layers.
        per_layer: relu module path -> mean over its neurons / pairs / k-subsets.
        per_neuron: (orders 1, 2) path -> (N,) entropy of each neuron; for order 2
            the mean over its partners of the pair entropy.
        per_class: (orders 1, 2) path -> (N, C), the class-c terms of per_neuron.
        stderr, per_layer_stderr, samples: (order >= 3) standard errors of the
            sampled estimates and the k-subsets drawn per layer.
    """

    order: int
    total: float
    per_layer: Dict[str, float]
    per_neuron: Optional[Dict[str, torch.Tensor]] = None
    per_class: Optional[Dict[str, torch.Tensor]] = None
    stderr: float = 0.0
    per_layer_stderr: Dict[str, float] = field(default_factory=dict)
    samples: Dict[str, int] = field(default_factory=dict)


class PSPL2(Metric):
    """Sum over layers of the mean squared L2 norm of the PSP vector (Fig. 3)."""

    name = "psp_l2"
    needs_psps = True

    def __init__(self, layers=None):
        self.layers = _check_layer_names(layers)

    def init(self, num_points, device):
        return {"sums": {}, "n": 0, "num_points": num_points, "device": device}

    def update(self, state, outputs, targets, psps):
        for name, z in _selected(psps, self.layers).items():
            squared = z.flatten(2).double().square().sum(2).sum(1)  # (P,)
            state["sums"][name] = state["sums"].get(name, 0) + squared
        state["n"] += targets.shape[0]
        return state

    def result(self, state):
        return self.summarize(state, None)

    def summarize(self, state, point=0):
        """L2Result of one grid point (point=None: the (P,) totals)."""
        _check_nonempty(state["n"])
        per_layer = {name: s / state["n"] for name, s in state["sums"].items()}
        total = sum(per_layer.values())
        if point is None:
            return total
        return L2Result(float(total[point]), {name: float(v[point]) for name, v in per_layer.items()})


class PSPEntropy(Metric):
    """PSP-entropy (bits) of a given order for P models at once (Fig. 4).

    Args:
        order: 1 (per neuron), 2 (pairs, exact) or k >= 3 (sampled k-subsets).
        num_classes: labels must lie in [0, num_classes).
        eps: clamp of every joint-state probability to [eps, 1 - eps] (authors: 1e-4).
        layers: relu module paths to analyse (None: all).
        block_size: neurons per tile side of the pair matrix (order 2).
        samples, seed: k-subsets drawn per layer and their seed (order >= 3).

    Raises:
        ValueError: an argument of the wrong type or out of range, a lone string or an empty
            list as `layers`, or an order whose joint-state table exceeds ``MAX_STATE_TABLE_BYTES``.
    """

    needs_psps = True

    def __init__(self, order=1, num_classes=10, eps=0.0, layers=None, block_size=1024, samples=2000, seed=0):
        order = checks.integer("order", order, low=1)
        self.num_classes = checks.integer("num_classes", num_classes, low=2)
        self.eps = checks.number("eps", eps, 0.0, 0.5, high_open=True)
        self.layers = _check_layer_names(layers)
        self.block_size = checks.integer("block_size", block_size, low=1)
        self.samples = checks.integer("samples", samples, low=2 if order >= 3 else 1)  # >= 3: a standard error
        self.seed = checks.integer("seed", seed, low=0)
        if order >= 3:
            check_state_table(order, self.num_classes, self.samples)
        self.order = order
        self.name = f"psp_entropy{order}"

    def init(self, num_points, device):
        return {
            "class_sizes": torch.zeros(self.num_classes, dtype=torch.float64, device=device),
            "ones": {}, "bits": {}, "labels": [], "shapes": {}, "num_points": num_points,
        }

    def update(self, state, outputs, targets, psps):
        onehot = counts.class_onehot(targets, self.num_classes)
        state["class_sizes"] += onehot.sum(0).double()
        if self.order >= 2:
            state["labels"].append(targets.long())
        for name, z in _selected(psps, self.layers).items():
            active = z.flatten(2) > 0  # (P, B, N)
            state["shapes"][name] = active.shape[2]
            ones = counts.active_counts(active, onehot)
            state["ones"][name] = state["ones"].get(name, 0) + ones
            if self.order >= 2:
                state["bits"].setdefault(name, []).append(counts.pack_bits(active))
        return state

    def result(self, state):
        points = range(state["num_points"])
        return torch.tensor([self.summarize(state, p).total for p in points], dtype=torch.float64)

    def summarize(self, state, point=0):
        """EntropyResult of grid point `point`."""
        sizes = state["class_sizes"]
        _check_nonempty(int(sizes.sum()))
        if self.order == 1:
            per_class = {n: counts.first_order_entropy(o[point], sizes, self.eps) for n, o in state["ones"].items()}
            return _from_per_class(1, per_class, weights={n: pc.shape[0] for n, pc in per_class.items()})
        labels = torch.cat(state["labels"])
        if self.order == 2:
            per_class = {}
            for name, chunks in state["bits"].items():
                neurons = state["shapes"][name]
                if neurons < 2:
                    continue  # a layer of one neuron has no pairs
                packed, offsets = counts.group_by_class(torch.cat([c[point] for c in chunks]), labels, self.num_classes)
                sums = counts.pair_entropy_sums(packed, offsets, neurons, state["ones"][name][point], self.eps, self.block_size)
                per_class[name] = sums / (neurons - 1)
            return _from_per_class(2, per_class, weights={n: pc.shape[0] * (pc.shape[0] - 1) for n, pc in per_class.items()})
        return self._sampled(state, point, labels)

    def _sampled(self, state, point, labels):
        generator = torch.Generator().manual_seed(self.seed)
        means, errors, weights, drawn = {}, {}, {}, {}
        for name, chunks in state["bits"].items():
            neurons = state["shapes"][name]
            if neurons < self.order:
                continue  # no k-subsets in this layer
            subsets = counts.random_subsets(neurons, self.order, self.samples, generator)
            packed = torch.cat([c[point] for c in chunks])
            values = counts.subset_entropy(packed, labels, state["class_sizes"], subsets.to(packed.device), self.eps)
            means[name], errors[name] = float(values.mean()), float(values.std() / math.sqrt(len(values)))
            weights[name], drawn[name] = math.comb(neurons, self.order), len(values)
        if not means:
            raise ValueError(f"no analysed layer has at least {self.order} neurons for order {self.order}")
        total_weight = sum(weights.values())
        total = sum(means[n] * weights[n] for n in means) / total_weight
        stderr = math.sqrt(sum((errors[n] * weights[n] / total_weight) ** 2 for n in means))
        return EntropyResult(self.order, total, means, stderr=stderr, per_layer_stderr=errors, samples=drawn)


def l2(model, batches, layers=None):
    """PSP L2 norm of `model` over `batches` of (inputs, targets): ``.total``, ``.per_layer``.

    Raises:
        ValueError: bad `layers` (see ``entropy``), or a batch that the model cannot take.
    """
    metric = PSPL2(layers)
    return metric.summarize(_run(model, batches, metric))


def entropy(model, batches, order=1, num_classes=10, eps=0.0, layers=None, block_size=1024, samples=2000, seed=0):
    """PSP-entropy of `model` over `batches` of (inputs, targets), in bits, in one pass.

    Args:
        model: network whose hidden activations are ``nn.ReLU`` modules (left unchanged).
        batches: iterable of (inputs, targets), targets integer labels < num_classes.
        order, num_classes, eps, layers, block_size, samples, seed: as ``PSPEntropy``.

    Returns:
        ``EntropyResult`` (per_neuron and per_class for orders 1 and 2; standard
        errors and sample counts for order >= 3).

    Raises:
        ValueError: a bad argument (checked before any forward pass: see ``PSPEntropy``); an
            unknown layer name; a batch whose inputs do not have the model's input shape or whose
            labels are not integer class indices in [0, num_classes) (``data.check_split``); no samples.
    """
    metric = PSPEntropy(order, num_classes, eps, layers, block_size, samples, seed)
    return metric.summarize(_run(model, batches, metric))


def _run(model, batches, metric):
    """One pass in eval mode without gradients, the model's modes restored afterwards.

    Every batch is checked (inputs against the model's input shape, labels against the
    metric's classes) before the model sees it.
    """
    names = [name for name, _ in relu_modules(model)]
    if metric.layers is not None:
        _check_layers(metric.layers, names)
    if isinstance(batches, (str, bytes, torch.Tensor)) or not hasattr(batches, "__iter__"):
        raise ValueError(f"batches must be an iterable of (inputs, targets) pairs, such as "
                         f"split.batches(100) or [(x, y)], got {type(batches).__name__}")
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    state, sink = metric.init(1, device), {}
    num_classes = getattr(metric, "num_classes", None)  # None (the L2 norm): labels are only counted
    with eval_mode(model), torch.no_grad(), capture_psps(model, sink):
        for index, batch in enumerate(batches):
            inputs, targets = check_batch(batch, num_classes, models.input_shape(model), f"batch {index}")
            if len(targets) == 0:
                continue
            sink.clear()
            outputs = model(inputs.to(device))
            psps = {name: z.unsqueeze(0) for name, z in sink.items()}
            state = metric.update(state, outputs.unsqueeze(0), targets.to(device), psps)
    return state


def check_state_table(order, num_classes, samples):
    """Refuse an order >= 3 whose joint-state table (int64, classes x subsets x 2^order) exceeds the limit.

    Raises:
        ValueError: naming the size, the limit ``MAX_STATE_TABLE_BYTES`` and the largest order within it.
    """
    rows = min(SUBSETS_PER_CHUNK, samples)
    need = num_classes * rows * 8 * 2**order
    if need <= MAX_STATE_TABLE_BYTES:
        return need
    largest = (MAX_STATE_TABLE_BYTES // (num_classes * rows * 8)).bit_length() - 1
    fix = (f"lower the order to at most {largest}" if largest >= 3 else
           f"no order >= 3 fits with {num_classes} classes: use fewer classes or order 1 or 2")
    raise ValueError(
        f"order {order} needs a table of {num_classes} classes x {rows} subsets x 2^{order} joint states "
        f"(int64) = {_bytes(need)} per pass, above the limit of {_bytes(MAX_STATE_TABLE_BYTES)} "
        f"(MAX_STATE_TABLE_BYTES in psputil/psp/entropy.py); {fix} (for {num_classes} classes and samples={samples})"
    )


def _bytes(count):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:.3g} {unit}" if unit != "bytes" else f"{count} bytes"
        count /= 1024


def _check_layer_names(layers):
    """None (every ReLU layer) or a tuple of relu module paths; a lone string or an empty list is refused."""
    if layers is not None and not isinstance(layers, str) and hasattr(layers, "__len__") and len(layers) == 0:
        raise ValueError("layers is empty: pass None to analyse every ReLU layer, or relu module paths such as "
                         "['relu1'] (names as in model.named_modules())")
    return checks.names("layers", layers, optional=True)


def _selected(psps, layers):
    if psps is None:
        raise ValueError("PSP metrics need the PSPs: the evaluator must pass psps (needs_psps=True)")
    if layers is None:
        return psps
    _check_layers(layers, list(psps))
    return {name: psps[name] for name in layers}


def _check_layers(layers, names):
    unknown = [name for name in layers if name not in names]
    if unknown:
        raise ValueError(f"unknown relu layers {unknown}; valid: {names}")


def _check_nonempty(num_samples):
    if num_samples == 0:
        raise ValueError("the data yielded no samples; expected an iterable of (inputs, targets) batches")


def _from_per_class(order, per_class, weights):
    per_neuron = {name: pc.sum(1) for name, pc in per_class.items()}
    per_layer = {name: float(h.mean()) for name, h in per_neuron.items()}
    if not per_layer:
        raise ValueError(f"no analysed layer has at least {order} neurons for order {order}")
    total = sum(per_layer[n] * weights[n] for n in per_layer) / sum(weights.values())
    return EntropyResult(order, total, per_layer, per_neuron, per_class)
