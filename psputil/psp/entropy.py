"""PSP-entropy of first, second and higher order (Sections 4, 5.3; Fig. 4).

A PSP is the input of an ``nn.ReLU`` module (one hidden layer); a conv channel at
one spatial position is one neuron. The entropy is accumulated in one streaming
pass by ``PSPEntropy``, which the loss-plane evaluator runs for many grid points at
once; ``entropy`` runs it for one model (``psp.passes``). Formulas and counting live
in ``psputil.psp.counts``; the L2 norm in ``psp.l2``.

Second and higher order keep the activity bits of every sample (1 bit per
neuron and sample, per grid point) and count pairs tile by tile at the end.

Live neurons: ``neurons="live"`` measures the entropy over the neurons that are not
always off (z > 0 on at least one sample; given as a mask, or found in the same pass):
first order averages over live neurons, second order over pairs of two live neurons
(pairs with a dead member are left out), order k over k-subsets of live neurons.
``psp.measure`` runs several metrics (this, ``PSPL2``, ``psp.Activity``) in one pass.
"""

import math
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch

from psputil import checks
from psputil.metrics import Metric
from psputil.psp import counts
from psputil.psp.passes import check_layer_names, check_nonempty, run, selected

# Orders >= 3 count the joint states of SUBSETS_PER_CHUNK subsets at a time (``counts.subset_entropy``) in
# an int64 table of classes x subsets x 2^order entries; an order whose table would exceed this is refused.
MAX_STATE_TABLE_BYTES = 2**30
SUBSETS_PER_CHUNK = 64


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
        neurons: "all", or "live": every mean is over live neurons (pairs, k-subsets of
            live neurons) only, per_neuron and per_class hold the live neurons only (in
            order), a layer with fewer than `order` live neurons is left out of per_layer,
            and total is NaN when no layer is left.
        live: (neurons="live") path -> (N,) bool mask over all N neurons of the layer,
            True = live; per_neuron[path] lists the entropies of ``live[path].nonzero()``.
    """

    order: int
    total: float
    per_layer: Dict[str, float]
    per_neuron: Optional[Dict[str, torch.Tensor]] = None
    per_class: Optional[Dict[str, torch.Tensor]] = None
    stderr: float = 0.0
    per_layer_stderr: Dict[str, float] = field(default_factory=dict)
    samples: Dict[str, int] = field(default_factory=dict)
    neurons: str = "all"
    live: Optional[Dict[str, torch.Tensor]] = None


NEURON_SETS = ("all", "live")
ROW_CHUNK = 4096  # samples unpacked at a time when live neurons are selected from the activity bits


class PSPEntropy(Metric):
    """PSP-entropy (bits) of a given order for P models at once (Fig. 4).

    Args:
        order: 1 (per neuron), 2 (pairs, exact) or k >= 3 (sampled k-subsets).
        num_classes: labels must lie in [0, num_classes).
        eps: clamp of every joint-state probability to [eps, 1 - eps] (authors: 1e-4).
        layers: relu module paths to analyse (None: all).
        block_size: neurons per tile side of the pair matrix (order 2).
        samples, seed: k-subsets drawn per layer and their seed (order >= 3).
        neurons: "all" (every neuron of the layer) or "live" (only neurons that are not always
            off; see the module docstring). The metric's name gets the suffix "_live".
        live: with neurons="live", path -> (N,) bool tensor (True = live) used at every point,
            e.g. ``psp.activity(model, batches).live``; None: each point's own live neurons,
            those with z > 0 on at least one of the samples seen.

    Raises:
        ValueError: an argument of the wrong type or out of range, a lone string or an empty
            list as `layers`, `live` without neurons="live" or not a dict of 1-D bool tensors,
            or an order whose joint-state table exceeds ``MAX_STATE_TABLE_BYTES``.
    """

    needs_psps = True

    def __init__(self, order=1, num_classes=10, eps=0.0, layers=None, block_size=1024, samples=2000, seed=0,
                 neurons="all", live=None):
        order = checks.integer("order", order, low=1)
        self.num_classes = checks.integer("num_classes", num_classes, low=2)
        self.eps = checks.number("eps", eps, 0.0, 0.5, high_open=True)
        self.layers = check_layer_names(layers)
        self.block_size = checks.integer("block_size", block_size, low=1)
        self.samples = checks.integer("samples", samples, low=2 if order >= 3 else 1)  # >= 3: a standard error
        self.seed = checks.integer("seed", seed, low=0)
        if order >= 3:
            check_state_table(order, self.num_classes, self.samples)
        self.order = order
        self.neurons = checks.choice("neurons", neurons, NEURON_SETS)
        self.live = _check_live(live, self.neurons)
        self.name = f"psp_entropy{order}" + ("_live" if self.neurons == "live" else "")

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
        for name, z in selected(psps, self.layers).items():
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
        check_nonempty(int(sizes.sum()))
        keep = self._kept(state, point)
        ones = {n: o[point] if keep is None else o[point][keep[n]] for n, o in state["ones"].items()}
        if self.order == 1:
            per_class = {n: counts.first_order_entropy(o, sizes, self.eps) for n, o in ones.items() if len(o)}
            return self._result(per_class, keep, weights={n: pc.shape[0] for n, pc in per_class.items()})
        labels = torch.cat(state["labels"])
        packed = {n: self._bits(state, n, point, keep) for n in state["bits"]}
        if self.order == 2:
            per_class = {}
            for name, bits in packed.items():
                neurons = len(ones[name])
                if neurons < 2:
                    continue  # a layer of one (live) neuron has no pairs
                grouped, offsets = counts.group_by_class(bits, labels, self.num_classes)
                sums = counts.pair_entropy_sums(grouped, offsets, neurons, ones[name], self.eps, self.block_size)
                per_class[name] = sums / (neurons - 1)
            weights = {n: pc.shape[0] * (pc.shape[0] - 1) for n, pc in per_class.items()}
            return self._result(per_class, keep, weights)
        result = self._sampled(state, packed, {n: len(o) for n, o in ones.items()}, labels)
        result.neurons, result.live = self.neurons, keep
        return result

    def _kept(self, state, point):
        """None (all neurons), or path -> (N,) bool mask of the live neurons at `point`."""
        if self.neurons == "all":
            return None
        if self.live is None:  # live: active on at least one sample seen at this point
            return {n: o[point].sum(-1) > 0 for n, o in state["ones"].items()}
        missing = [n for n in state["ones"] if n not in self.live]
        if missing:
            raise ValueError(f"live has no mask for the analysed layers {missing}; give one (N,) bool tensor per "
                             f"layer, e.g. psp.activity(model, batches).live")
        keep = {}
        for name, shape in state["shapes"].items():
            mask = self.live[name].to(state["ones"][name].device)
            if mask.shape != (shape,):
                raise ValueError(f"live[{name!r}] has shape {tuple(mask.shape)} but layer {name!r} has {shape} "
                                 f"neurons; expected a bool tensor of shape ({shape},)")
            keep[name] = mask
        return keep

    def _bits(self, state, name, point, keep):
        """Packed activity bits of one layer at `point`, only the kept neurons' when `keep` is given."""
        bits = torch.cat([c[point] for c in state["bits"][name]])
        if keep is None or bool(keep[name].all()):
            return bits
        columns, neurons = keep[name].nonzero().squeeze(1), state["shapes"][name]
        return torch.cat([counts.pack_bits(counts.unpack_bits(bits[i : i + ROW_CHUNK], 0, neurons, torch.uint8)
                                           [:, columns].bool()) for i in range(0, len(bits), ROW_CHUNK)])

    def _result(self, per_class, keep, weights):
        if keep is not None and not per_class:  # no layer has `order` live neurons: nothing to average
            return EntropyResult(self.order, math.nan, {}, {}, {}, neurons="live", live=keep)
        result = _from_per_class(self.order, per_class, weights)
        result.neurons, result.live = self.neurons, keep
        return result

    def _sampled(self, state, packed, sizes, labels):
        generator = torch.Generator().manual_seed(self.seed)
        means, errors, weights, drawn = {}, {}, {}, {}
        for name, bits in packed.items():
            neurons = sizes[name]
            if neurons < self.order:
                continue  # no k-subsets in this layer
            subsets = counts.random_subsets(neurons, self.order, self.samples, generator)
            values = counts.subset_entropy(bits, labels, state["class_sizes"], subsets.to(bits.device), self.eps)
            means[name], errors[name] = float(values.mean()), float(values.std() / math.sqrt(len(values)))
            weights[name], drawn[name] = math.comb(neurons, self.order), len(values)
        if not means:
            if self.neurons == "live":
                return EntropyResult(self.order, math.nan, {})
            raise ValueError(f"no analysed layer has at least {self.order} neurons for order {self.order}")
        total_weight = sum(weights.values())
        total = sum(means[n] * weights[n] for n in means) / total_weight
        stderr = math.sqrt(sum((errors[n] * weights[n] / total_weight) ** 2 for n in means))
        return EntropyResult(self.order, total, means, stderr=stderr, per_layer_stderr=errors, samples=drawn)


def entropy(model, batches, order=1, num_classes=10, eps=0.0, layers=None, block_size=1024, samples=2000, seed=0,
            neurons="all", live=None):
    """PSP-entropy of `model` over `batches` of (inputs, targets), in bits, in one pass.

    Args:
        model: network whose hidden activations are ``nn.ReLU`` modules (left unchanged).
        batches: iterable of (inputs, targets), targets integer labels < num_classes.
        order, num_classes, eps, layers, block_size, samples, seed: as ``PSPEntropy``.
        neurons: "all", or "live": means over the neurons that are not always off (pairs and
            k-subsets of live neurons only); see ``EntropyResult``.
        live: with neurons="live", path -> (N,) bool mask of the live neurons (e.g. from
            ``psp.activity`` on other data); None: the live neurons of these batches.

    Returns:
        ``EntropyResult`` (per_neuron and per_class for orders 1 and 2; standard
        errors and sample counts for order >= 3; the live masks for neurons="live").

    Raises:
        ValueError: a bad argument (checked before any forward pass: see ``PSPEntropy``); an
            unknown layer name; a batch whose inputs do not have the model's input shape or whose
            labels are not integer class indices in [0, num_classes) (``data.check_split``); no samples.
    """
    metric = PSPEntropy(order, num_classes, eps, layers, block_size, samples, seed, neurons, live)
    return metric.summarize(run(model, batches, [metric])[0])


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


def _check_live(live, neurons):
    """None, or a dict relu path -> 1-D bool tensor; only with neurons="live"."""
    if live is None:
        return None
    if neurons != "live":
        raise ValueError('live masks are only used with neurons="live"; pass neurons="live" or drop live')
    if not isinstance(live, dict) or not live:
        raise ValueError(f"live must be a non-empty dict relu path -> (N,) bool tensor, got {type(live).__name__}")
    for name, mask in live.items():
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 1:
            got = (f"{mask.dtype} of shape {tuple(mask.shape)}" if isinstance(mask, torch.Tensor)
                   else type(mask).__name__)
            raise ValueError(f"live[{name!r}] must be a 1-D bool tensor (one entry per neuron), got {got}")
    return dict(live)


def _from_per_class(order, per_class, weights):
    per_neuron = {name: pc.sum(1) for name, pc in per_class.items()}
    per_layer = {name: float(h.mean()) for name, h in per_neuron.items()}
    if not per_layer:
        raise ValueError(f"no analysed layer has at least {order} neurons for order {order}")
    total = sum(per_layer[n] * weights[n] for n in per_layer) / sum(weights.values())
    return EntropyResult(order, total, per_layer, per_neuron, per_class)
