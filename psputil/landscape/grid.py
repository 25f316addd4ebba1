"""Evaluating metrics on a grid of a loss plane (``psputil.landscape.Plane``), many points per pass.

Speed: ``evaluate_grid`` runs P points at once with ``torch.func.functional_call``
under ``torch.vmap`` over stacked parameters. Linear/Conv2d layers whose input does
not depend on the parameters (the input layer) are linear in their weights, so
there it computes three layer outputs per batch (at G, along u, along v; kept for
the next chunks) and mixes them per point instead of P full layer products: exact,
and the bulk of LeNet-300's work. On a CPU, vmapped convolutions become grouped
convolutions, which can be slower than a plain loop (LeNet-5): keep P small there.
"""

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from psputil import bars, checks, models
from psputil.data import check_split
from psputil.landscape.plane import Plane
from psputil.psp.activations import capture_psps
from psputil.metrics import Error, Loss, Metric, check_batch

CACHE_BYTES = 256 * 2**20  # per input layer: its three outputs on every batch, reused by every chunk
PROBE_SAMPLES = 8  # samples of the first batch that find the input layers (never one: batch statistics)


def evaluate_grid(plane, a_values, b_values, batches, metrics=None, batch_size=1000,
                  points_per_pass=16, factor_input_layers=True, progress=True):
    """Metrics at every point of the grid ``a_values x b_values`` of a ``Plane``.

    Args:
        plane: from ``plane_through``.
        a_values, b_values: 1-D sequences of finite floats (non-empty).
        batches: a ``TensorSplit`` (cut into `batch_size` batches) or a re-iterable
            collection (list, tuple) of (inputs, targets); read once per chunk of points,
            and it must yield the same batches in the same order every time.
        metrics: ``psputil.metrics.Metric`` objects with distinct names (default: Loss, Error).
        batch_size: samples per batch when `batches` is a ``TensorSplit``.
        points_per_pass: P, grid points evaluated by one vmapped forward pass.
        factor_input_layers: use the linearity of parameter-independent input layers (exact).
        progress: show a tqdm bar over grid points.

    Returns:
        dict metric name -> float64 numpy array of shape (len(b_values), len(a_values));
        entry [i, j] is the point (a_values[j], b_values[i]), ready for
        ``plt.contour(a_values, b_values, maps[name])``.

    Raises:
        ValueError: an argument of the wrong type or out of range; a batch whose inputs do not
            have the model's input shape, or whose labels are not integer class indices below the
            model's outputs (``data.check_split``; every batch of a list is checked before any compute).
    """
    if not isinstance(plane, Plane):
        raise ValueError(f"plane must be a landscape.Plane (from plane_through), got {type(plane).__name__}")
    a_values, b_values = _axis(a_values, "a_values"), _axis(b_values, "b_values")
    metrics = _check_metrics((Loss(), Error()) if metrics is None else metrics)
    points_per_pass = checks.integer("points_per_pass", points_per_pass, low=1)
    checks.flag("factor_input_layers", factor_input_layers)
    checks.flag("progress", progress)
    batch_source = _batch_source(batches, batch_size)
    first = next(iter(plane.origin.values()))
    device, dtype = first.device, first.dtype
    grid_b, grid_a = np.meshgrid(b_values, a_values, indexing="ij")
    points_a, points_b = grid_a.reshape(-1), grid_b.reshape(-1)
    first_batch = _check_batches(plane.template, metrics, batches, batch_source)
    # the input layers are found on a few real samples (a model need not work on one sample)
    probe = first_batch[0][:PROBE_SAMPLES].to(device)
    runner = _Runner(plane, probe, any(m.needs_psps for m in metrics), factor_input_layers)
    results = {m.name: np.empty(len(points_a)) for m in metrics}
    with torch.no_grad(), bars.bar(None, progress, total=len(points_a), unit="point", desc="loss plane") as bar:
        for start in range(0, len(points_a), points_per_pass):
            a = torch.tensor(points_a[start : start + points_per_pass], device=device, dtype=dtype)
            b = torch.tensor(points_b[start : start + points_per_pass], device=device, dtype=dtype)
            states = [m.init(len(a), device) for m in metrics]
            for index, (x, y) in enumerate(batch_source()):
                if len(y) == 0:
                    continue
                x, y = x.to(device), y.to(device)
                outputs, psps = runner(a, b, x, batch_key=index)
                states = [m.update(s, outputs, y, psps if m.needs_psps else None) for m, s in zip(metrics, states)]
            for m, s in zip(metrics, states):
                results[m.name][start : start + len(a)] = m.result(s).detach().double().cpu().numpy()
            bar.update(len(a))
    return {name: values.reshape(len(b_values), len(a_values)) for name, values in results.items()}


class _Runner:
    """Calls the template for P points at once: vmap over stacked parameters and buffers."""

    def __init__(self, plane, probe, need_psps, factor_input_layers):
        self.plane, self.need_psps = plane, need_psps
        self.model = copy.deepcopy(plane.template)
        self.factored = {}
        for path in _input_layers(self.model, plane, probe) if factor_input_layers else ():
            self.factored[path] = _FactoredLayer(self.model.get_submodule(path), plane, path)
            parent, _, name = path.rpartition(".")
            setattr(self.model.get_submodule(parent), name, self.factored[path])
        skip = {f"{path}.{name}" for path in self.factored for name in ("weight", "bias")}
        self.names = [n for n in plane.origin if n not in skip]
        self.vmapped = torch.vmap(self._one, in_dims=(0, 0, 0, None))

    def _one(self, coefficients, params, buffers, x):
        for layer in self.factored.values():
            layer.coefficients = coefficients
        try:
            state = (params, {**buffers, **self.plane.fixed_buffers})
            if not self.need_psps:
                return functional_call(self.model, state, (x,)), {}
            sink = {}
            with capture_psps(self.model, sink):
                outputs = functional_call(self.model, state, (x,))
            return outputs, dict(sink)
        finally:
            for layer in self.factored.values():
                layer.coefficients = None

    def __call__(self, a, b, x, batch_key=None):
        """(outputs (P, B, C), psps dict path -> (P, B, *shape)) at the points (a[i], b[i]).

        `batch_key` names the batch `x` (same key, same batch) so input layers can reuse their outputs.
        """
        p = self.plane
        for layer in self.factored.values():
            layer.batch_key = batch_key
        params = {}
        for n in self.names:
            shape = (-1,) + (1,) * p.origin[n].dim()
            params[n] = p.origin[n] + a.to(p.u[n]).view(shape) * p.u[n] + (b.to(p.v[n]) * p.u_norm).view(shape) * p.v[n]
        coefficients = torch.stack([torch.ones_like(a), a, b * p.u_norm], dim=1)
        return self.vmapped(coefficients, params, p.buffers_at(a), x)


class _FactoredLayer(nn.Module):
    """A Linear/Conv2d whose input is the same at all points: y = f(x; G) + a f(x; u) + b|u| f(x; v).

    The three outputs of each batch are kept (up to CACHE_BYTES per layer) for the next chunks.
    """

    def __init__(self, layer, plane, path):
        super().__init__()
        self.layer = layer
        bias = f"{path}.bias" if layer.bias is not None else None
        self.basis = [(d[f"{path}.weight"], d[bias] if bias else None) for d in (plane.origin, plane.u, plane.v)]
        self.coefficients = self.batch_key = None  # (1, a, b|u|) of the point (batched under vmap); batch index
        self.cache, self.cached_bytes = {}, 0

    def forward(self, x):
        outputs = self.cache.get(self.batch_key)
        if outputs is None:
            if isinstance(self.layer, nn.Linear):
                outputs = torch.stack([F.linear(x, w, b) for w, b in self.basis])
            else:
                outputs = torch.stack([self.layer._conv_forward(x, w, b) for w, b in self.basis])
            size = outputs.numel() * outputs.element_size()
            if self.batch_key is not None and self.cached_bytes + size <= CACHE_BYTES:
                self.cache[self.batch_key], self.cached_bytes = outputs, self.cached_bytes + size
        # one (P, 3) x (3, everything) product under vmap: a single pass writing the output
        return (self.coefficients @ outputs.flatten(1)).view(outputs.shape[1:])


def _input_layers(model, plane, x):
    """Paths of Linear/Conv2d modules whose input is the same at every point of the plane.

    Probed by running G and a generic point (a, b) = (0.37, 0.61): a layer qualifies
    when its inputs at the two points are identical in every call.
    """
    seen = [{}, {}]
    for probe, (a, b) in enumerate(((0.0, 0.0), (0.37, 0.61))):
        handles = [
            module.register_forward_pre_hook(
                lambda m, inputs, path=path, probe=probe: seen[probe].setdefault(path, []).append(inputs[0].clone())
            )
            for path, module in model.named_modules()
            if type(module) in (nn.Linear, nn.Conv2d)
        ]
        try:
            functional_call(model, plane.state_dict_at(a, b), (x,))
        finally:
            for handle in handles:
                handle.remove()
    return [
        path for path, inputs in seen[0].items()
        if len(inputs) == len(seen[1][path]) and all(torch.equal(p, q) for p, q in zip(inputs, seen[1][path]))
    ]


def _axis(values, name):
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.ndim != 1 or array.size == 0 or not np.isfinite(array).all():
        raise ValueError(f"{name} must be a non-empty 1-D sequence of finite floats, got {values!r}")
    return array


def _check_metrics(metrics):
    if isinstance(metrics, Metric) or not hasattr(metrics, "__iter__"):
        raise ValueError(f"metrics must be a sequence of Metric objects, such as [Loss(), Error()], got {metrics!r}")
    metrics = list(metrics)
    wrong = [m for m in metrics if not isinstance(m, Metric)]
    if wrong:
        raise ValueError(f"metrics must be psputil.metrics.Metric objects, got {wrong!r}")
    names = [getattr(m, "name", None) for m in metrics]
    if not metrics or len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"metrics must be a non-empty sequence of Metric objects with distinct names, got names {names}")
    return metrics


def _check_batches(model, metrics, batches, batch_source):
    """Check the data against the model and the metrics before any compute; returns the first batch.

    Labels must lie below the model's outputs and every metric's ``num_classes``. A
    ``TensorSplit`` is checked whole (``data.check_split``); a list of batches batch by batch.
    """
    bounds = [models.num_outputs(model)] + [getattr(m, "num_classes", None) for m in metrics]
    bounds = [b for b in bounds if b is not None]
    classes, shape = (min(bounds) if bounds else None), models.input_shape(model)
    if hasattr(batches, "batches") and hasattr(batches, "images"):  # a TensorSplit
        check_split(batches, classes or 2**62, shape or tuple(batches.images.shape[1:]), "the data")
        return next(iter(batch_source()))
    first = None
    for index, batch in enumerate(batch_source()):
        x, y = check_batch(batch, classes, shape, f"batch {index}")
        first = (x, y) if first is None and len(y) else first
    if first is None:
        raise ValueError("batches must hold at least one batch of (inputs, targets) with samples")
    return first


def _batch_source(batches, batch_size):
    """A function returning a fresh iterator over the (x, y) batches."""
    if hasattr(batches, "batches") and hasattr(batches, "images"):  # a TensorSplit
        batch_size = checks.integer("batch_size", batch_size, low=1)
        return lambda: batches.batches(batch_size)
    if isinstance(batches, (str, bytes)) or not hasattr(batches, "__iter__"):
        raise ValueError(f"batches must be a TensorSplit or a list of (x, y) batches, got {type(batches).__name__}")
    if iter(batches) is batches:
        raise ValueError("batches must be a TensorSplit or a re-iterable collection (list/tuple) of (x, y), not a one-shot iterator")
    return lambda: iter(batches)
