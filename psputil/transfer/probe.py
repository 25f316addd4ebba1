"""Linear probes: a new read-out trained on the frozen features of a network, and masked fine-tuning.

The read-out is the model's last ``nn.Linear``. ``linear_probe`` computes its inputs
(the features) once for every sample, standardises them with the training split's
mean and standard deviation, trains a fresh, seeded ``nn.Linear`` on them with
``train.fit`` and folds the standardisation into its weights: the hidden layers never see a gradient, so their weights
(and the zeros of a pruned network) stay bit-identical. ``finetune`` then trains
every weight of the probed copy with the source's mask kept (``pruning.MaskHook``).
Every function works on copies: the caller's model is never changed.
"""

import copy
import math

import torch
from torch import nn

from psputil import checks, devices, models, pruning
from psputil.data import DataSplits, TensorSplit, check_split
from psputil.train import TrainConfig, eval_mode, evaluate, fit

# Linear probe: SGD with momentum on the frozen features, lr cut on a validation plateau.
PROBE = TrainConfig(epochs=30, batch_size=100, lr=0.05, momentum=0.9, schedule="plateau", plateau_patience=3)
# Fine-tuning of the whole masked network after the probe (epochs set per profile).
FINETUNE = TrainConfig(epochs=3, batch_size=100, lr=0.01, momentum=0.9)
_ANY_CLASS = 2**62  # features carry the labels of any data set: only their dtype is checked


def readout_name(model):
    """Module path of the read-out: the last ``nn.Linear`` of the model."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ValueError("the model has no nn.Linear module to use as read-out")
    return names[-1]


@torch.no_grad()
def features(model, split, batch_size=1000):
    """The read-out's inputs for every sample of a ``TensorSplit``: a ``TensorSplit`` of (N, D) features.

    The model runs in eval mode; every submodule gets its own train/eval mode back afterwards.

    Raises:
        ValueError: `split` is not a ``TensorSplit``, its samples do not have the model's input
            shape, or `batch_size` is not an integer >= 1.
    """
    batch_size = checks.integer("batch_size", batch_size, low=1)
    _check_inputs(model, split, "the split")
    readout, captured = model.get_submodule(readout_name(model)), []
    handle = readout.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0].detach()))
    try:
        with eval_mode(model):
            for x, _ in split.batches(batch_size):
                model(x.to(_device(model)))
    finally:
        handle.remove()
    return TensorSplit(torch.cat(captured), split.labels.to(_device(model)))


def linear_probe(model, data, config=PROBE, seed=0, device="auto", progress=False):
    """Train a new linear read-out on the frozen features of a copy of `model`.

    Args:
        model: the source network (not changed); its last ``nn.Linear`` is replaced.
        data: target ``DataSplits``.
        config: ``TrainConfig`` of the read-out's training.
        seed: seed of the read-out's init and of the batch order.

    Returns:
        dict: "model" (the copy with the trained read-out, hidden weights untouched),
        "history", "valid_error", "test_error", "test_loss" (percent errors).

    Raises:
        ValueError: `data` is not ``DataSplits`` whose samples the model takes, labels outside
            [0, data.num_classes), `config` not a ``TrainConfig``, or `seed` not an integer >= 0.
    """
    _check_training(model, data, config, seed)
    device = devices.resolve(device)
    model = copy.deepcopy(model).to(device)
    data = data.to(device)
    raw = [features(model, getattr(data, s)) for s in ("train", "valid", "test")]
    # Standardised features (train mean and std per feature) make one SGD setting converge for
    # every source, whatever the scale of its features; the affine map is folded into the head after.
    mean = raw[0].images.mean(0)
    std = raw[0].images.std(0).clamp_min(1e-6)
    feats = DataSplits(data.config, *(TensorSplit((f.images - mean) / std, f.labels) for f in raw), data.num_classes, None)
    head = _new_head(feats.train.images.shape[1], data.num_classes, seed).to(device)
    history = fit(head, feats, config, seed=seed, device=device, progress=progress, desc="probe")
    test_loss, test_error = evaluate(head, feats.test)
    valid_error = evaluate(head, feats.valid)[1]
    with torch.no_grad():  # head(standardised f) == folded(f)
        head.weight.div_(std)
        head.bias.sub_(head.weight @ mean)
    parent, _, child = readout_name(model).rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, head)
    return {"model": model.eval(), "history": history, "valid_error": valid_error,
            "test_error": test_error, "test_loss": test_loss}


def finetune(model, mask, data, config, seed=0, device="auto", progress=False):
    """Train all weights of a copy of a probed `model`, pruned weights kept at zero; returns (model, history).

    `mask` is the source's mask; the new read-out is dense (its mask entries are all True).

    Raises:
        ValueError: as ``linear_probe``, or `mask` does not fit the model (``pruning.check_mask``)
            or prunes every weight.
    """
    _check_training(model, data, config, seed)
    pruning.check_entries(mask)
    head = readout_name(model)
    full = pruning.full_mask(model)
    mask = {name: full[name] if name.startswith(head + ".") else m for name, m in mask.items()}
    pruning.check_mask(model, mask)
    pruning.check_survivors(mask)
    model = copy.deepcopy(model)
    history = fit(model, data, config, seed=seed, device=device, hooks=[pruning.MaskHook(mask)],
                  progress=progress, desc="finetune")
    return model.eval(), history


def _check_inputs(model, split, what):
    """The samples of `split` have the shape the model takes (labels are only carried here)."""
    if not isinstance(split, TensorSplit):
        raise ValueError(f"{what} must be a data.TensorSplit, got {type(split).__name__}")
    shape = models.input_shape(model) or tuple(split.images.shape[1:])
    check_split(split, _ANY_CLASS, shape, what)


def _check_training(model, data, config, seed):
    """Arguments of ``linear_probe`` and ``finetune``, before any copy or compute."""
    if not isinstance(data, DataSplits):
        raise ValueError(f"data must be data.DataSplits (train, valid, test), got {type(data).__name__}")
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a train.TrainConfig, got {type(config).__name__}")
    checks.integer("seed", seed, low=0)
    for name in ("train", "valid", "test"):
        split = getattr(data, name)
        shape = models.input_shape(model) or data.input_shape or tuple(split.images.shape[1:])
        check_split(split, data.num_classes, shape, f"the {name} split")


def _new_head(in_features, num_classes, seed):
    """A linear layer with PyTorch's default init drawn from a seeded generator."""
    head = nn.Linear(in_features, num_classes)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        nn.init.kaiming_uniform_(head.weight, a=math.sqrt(5), generator=generator)
        bound = 1 / math.sqrt(in_features)
        nn.init.uniform_(head.bias, -bound, bound, generator=generator)
    return head


def _device(model):
    return next(model.parameters()).device
