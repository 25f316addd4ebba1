"""One pass of a model over data batches feeding PSP metrics, and the checks the metrics share.

``measure`` runs several metrics (``PSPL2``, ``PSPEntropy``, ``Activity``) in one
streaming pass: eval mode without gradients, the PSPs read by forward hooks on the
ReLU modules, the model's modes restored afterwards. The metrics themselves also run
on the loss-plane grid (``psputil.landscape``), many models at once.
"""

import torch

from psputil import checks, models
from psputil.metrics import check_batch
from psputil.psp.activations import capture_psps, relu_modules
from psputil.train import eval_mode


def measure(model, batches, metrics):
    """Several PSP metrics of one model in one pass over `batches`: dict metric name -> its summary.

    Args:
        model: network whose hidden activations are ``nn.ReLU`` modules (left unchanged).
        batches: iterable of (inputs, targets), read once.
        metrics: ``PSPL2``, ``PSPEntropy`` and ``psp.Activity`` objects with distinct names.

    Returns:
        dict name -> ``L2Result`` / ``EntropyResult`` / ``ActivityResult``.

    Raises:
        ValueError: as ``psp.entropy`` (unknown layers, a batch the model cannot take, no
            samples); metrics that are not PSP metrics or share a name.
    """
    metrics = list(metrics) if isinstance(metrics, (list, tuple)) else None
    names = [getattr(m, "name", None) for m in metrics or ()]
    if not metrics or not all(hasattr(m, "summarize") for m in metrics) or len(set(names)) != len(names):
        raise ValueError("metrics must be a non-empty list of PSP metrics (PSPL2, PSPEntropy, Activity) with "
                         f"distinct names, got names {names}")
    return {m.name: m.summarize(s) for m, s in zip(metrics, run(model, batches, metrics))}


def run(model, batches, metrics):
    """The metrics' states after one pass in eval mode without gradients (model modes restored after).

    Every batch is checked (inputs against the model's input shape, labels against the
    metrics' classes) before the model sees it. Returns one state per metric, in order.
    """
    names = [name for name, _ in relu_modules(model)]
    for metric in metrics:
        if metric.layers is not None:
            check_layers(metric.layers, names)
    if isinstance(batches, (str, bytes, torch.Tensor)) or not hasattr(batches, "__iter__"):
        raise ValueError(f"batches must be an iterable of (inputs, targets) pairs, such as "
                         f"split.batches(100) or [(x, y)], got {type(batches).__name__}")
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    states, sink = [m.init(1, device) for m in metrics], {}
    bounds = [m.num_classes for m in metrics if getattr(m, "num_classes", None) is not None]
    num_classes = min(bounds) if bounds else None  # None (L2 norm, activity): labels are only counted
    with eval_mode(model), torch.no_grad(), capture_psps(model, sink):
        for index, batch in enumerate(batches):
            inputs, targets = check_batch(batch, num_classes, models.input_shape(model), f"batch {index}")
            if len(targets) == 0:
                continue
            sink.clear()
            outputs = model(inputs.to(device)).unsqueeze(0)
            psps = {name: z.unsqueeze(0) for name, z in sink.items()}
            states = [m.update(s, outputs, targets.to(device), psps) for m, s in zip(metrics, states)]
    return states


def check_layer_names(layers):
    """None (every ReLU layer) or a tuple of relu module paths; a lone string or an empty list is refused."""
    if layers is not None and not isinstance(layers, str) and hasattr(layers, "__len__") and len(layers) == 0:
        raise ValueError("layers is empty: pass None to analyse every ReLU layer, or relu module paths such as "
                         "['relu1'] (names as in model.named_modules())")
    return checks.names("layers", layers, optional=True)


def selected(psps, layers):
    """The PSPs of the analysed layers (all when `layers` is None)."""
    if psps is None:
        raise ValueError("PSP metrics need the PSPs: the evaluator must pass psps (needs_psps=True)")
    if layers is None:
        return psps
    check_layers(layers, list(psps))
    return {name: psps[name] for name in layers}


def check_layers(layers, names):
    """ValueError naming the valid layers when `layers` holds a name not in `names`."""
    unknown = [name for name in layers if name not in names]
    if unknown:
        raise ValueError(f"unknown relu layers {unknown}; valid: {names}")


def check_nonempty(num_samples):
    """ValueError when a metric saw no samples."""
    if num_samples == 0:
        raise ValueError("the data yielded no samples; expected an iterable of (inputs, targets) batches")
