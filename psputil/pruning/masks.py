"""Pruning masks: which weights survive, how sparse a model is, and keeping pruned weights at zero.

A *mask* is a dict ``parameter name -> bool tensor`` (True = the weight survives) with
one entry per prunable tensor: the weights and biases of every ``nn.Conv2d`` and
``nn.Linear`` (BatchNorm parameters are never pruned). Sparsity is the percentage of
those entries that are zero.
"""

from collections.abc import Mapping

import torch
from torch import nn

from psputil import checks
from psputil.train import Hook

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)


def prunable(model):
    """Ordered dict ``name -> parameter`` of the weights and biases of Conv2d and Linear layers."""
    found = {}
    for module_name, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES):
            for param_name, param in module.named_parameters(recurse=False):
                found[f"{module_name}.{param_name}" if module_name else param_name] = param
    return found


def sparsity(model):
    """Percent of zero weights and biases in the Conv2d and Linear layers of `model`."""
    params = list(prunable(model).values())
    total = sum(p.numel() for p in params)
    if total == 0:
        raise ValueError(f"{type(model).__name__} has no Conv2d or Linear weights; sparsity needs at least one")
    zeros = sum(int((p == 0).sum()) for p in params)
    return 100.0 * zeros / total


def layer_sparsity(model):
    """Percent of zero weights and biases per Conv2d/Linear module: dict module path -> percent."""
    zeros, totals = {}, {}
    for name, p in prunable(model).items():
        layer = name.rsplit(".", 1)[0]
        zeros[layer] = zeros.get(layer, 0) + int((p == 0).sum())
        totals[layer] = totals.get(layer, 0) + p.numel()
    return {layer: 100.0 * zeros[layer] / totals[layer] for layer in totals}


def mask_sparsity(mask):
    """Percent of pruned (False) entries of a mask.

    Raises:
        ValueError: `mask` is not a non-empty dict of bool tensors, or holds no entries at all.
    """
    check_entries(mask)
    total = sum(m.numel() for m in mask.values())
    if total == 0:
        raise ValueError("mask holds tensors with no entries; its sparsity is undefined")
    return 100.0 * sum(int((~m).sum()) for m in mask.values()) / total


def survivors(mask):
    """Number of surviving (True) entries per tensor: dict name -> int."""
    check_entries(mask)
    return {name: int(m.sum()) for name, m in mask.items()}


def check_entries(mask, what="mask"):
    """Raise ValueError unless `mask` is a non-empty dict ``name -> bool tensor`` (no model needed).

    Returns:
        `mask`.
    """
    if not isinstance(mask, Mapping):
        raise ValueError(f"{what} must be a dict parameter name -> bool tensor (True = the weight survives), "
                         f"got {type(mask).__name__}")
    if not mask:
        raise ValueError(f"{what} is empty; it needs one bool tensor per prunable tensor (see pruning.full_mask(model))")
    for name, m in mask.items():
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
            got = f"a {m.dtype} tensor" if isinstance(m, torch.Tensor) else type(m).__name__
            raise ValueError(f"{what}[{name!r}] must be a bool tensor (True = the weight survives), got {got}; "
                             "a float mask can be turned into one with mask != 0")
    return mask


def check_survivors(mask, what="mask"):
    """Raise ValueError when `mask` prunes every entry (a network with no weights left cannot be trained)."""
    check_entries(mask, what)
    if not any(bool(m.any()) for m in mask.values()):
        raise ValueError(f"{what} prunes every weight (100 % sparsity); keep at least one weight")
    return mask


def full_mask(model):
    """The mask that keeps every prunable weight."""
    return {name: torch.ones_like(p, dtype=torch.bool) for name, p in prunable(model).items()}


def check_mask(model, mask):
    """Raise ValueError unless `mask` has exactly one bool tensor of the right shape per prunable tensor."""
    params = prunable(model)
    if not isinstance(mask, Mapping):
        raise ValueError(f"mask must be a dict parameter name -> bool tensor with the names {sorted(params)}, "
                         f"got {type(mask).__name__}")
    if set(mask) != set(params):
        raise ValueError(
            f"mask names {sorted(mask)} do not match the prunable tensors of the model; valid: {sorted(params)}"
        )
    for name, p in params.items():
        m = mask[name]
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or m.shape != p.shape:
            got = f"{m.dtype} {tuple(m.shape)}" if isinstance(m, torch.Tensor) else type(m).__name__
            raise ValueError(f"mask[{name!r}] must be a bool tensor of shape {tuple(p.shape)}, got {got}")


@torch.no_grad()
def apply_mask(model, mask):
    """Zero the pruned weights of `model` in place (the mask is checked first)."""
    check_mask(model, mask)
    for name, p in prunable(model).items():
        p.mul_(mask[name].to(p.device))
    return model


def magnitude_mask(model, target, mask=None):
    """Global magnitude pruning: prune the smallest-magnitude survivors until `target` percent is pruned.

    Exactly ``round(target / 100 * total)`` entries end up pruned (ties broken by position),
    counting entries `mask` already prunes.

    Args:
        model: the network whose prunable weights are ranked by |w|.
        target: sparsity to reach, percent in [0, 100).
        mask: entries already pruned (default: none).

    Returns:
        The new mask (a subset of `mask`).

    Raises:
        ValueError: `target` is not a number in [0, 100), or it rounds to pruning every weight.
    """
    target = checks.number("target sparsity (percent)", target, 0, 100, high_open=True)
    params = prunable(model)
    mask = full_mask(model) if mask is None else mask
    check_mask(model, mask)
    total = sum(p.numel() for p in params.values())
    goal = int(round(target / 100 * total))
    if goal >= total:
        raise ValueError(f"target sparsity {target} % prunes all {total} weights of the model; "
                         f"the largest target that keeps one is {100 * (total - 1) / total:.6f} %")
    already = total - sum(int(m.sum()) for m in mask.values())
    return MagnitudeRanking(model, mask).prune(goal - already)


class MagnitudeRanking:
    """The survivors of `mask` ranked by magnitude, to prune the k smallest for any k quickly."""

    def __init__(self, model, mask):
        params = prunable(model)
        self.names = list(params)
        self.shapes = [params[n].shape for n in self.names]
        flat = torch.cat([params[n].detach().abs().flatten() for n in self.names])
        self.alive = torch.cat([mask[n].to(flat.device).flatten() for n in self.names])
        # Already-pruned entries rank last so they are never chosen twice; ties keep position order.
        score = torch.where(self.alive, flat, torch.full_like(flat, float("inf")))
        self.sorted, self.order = torch.sort(score, stable=True)
        self.count = int(self.alive.sum())  # prunable survivors

    def threshold(self, k):
        """Magnitude of the k-th smallest survivor (0.0 for k = 0)."""
        return float(self.sorted[k - 1]) if k > 0 else 0.0

    def prune(self, k):
        """Mask with the k smallest-magnitude survivors pruned (k clipped to [0, survivors])."""
        k = max(0, min(int(k), self.count))
        keep = self.alive.clone()
        keep[self.order[:k]] = False
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes):
            size = shape.numel()
            out[name] = keep[start : start + size].view(shape).clone()
            start += size
        return out


def random_mask(reference, seed):
    """A seeded random mask with the same number of survivors in every tensor as `reference`.

    Args:
        reference: a mask (dict name -> bool tensor).
        seed: integer >= 0.

    Raises:
        ValueError: `reference` is not a non-empty dict of bool tensors, or `seed` is not an integer.
    """
    check_entries(reference, "reference")
    seed = checks.integer("seed", seed, low=0)
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, m in reference.items():
        keep = torch.zeros(m.numel(), dtype=torch.bool)
        keep[torch.randperm(m.numel(), generator=generator)[: int(m.sum())]] = True
        out[name] = keep.view(m.shape).to(m.device)
    return out


class MaskHook(Hook):
    """Keeps pruned weights exactly zero during ``train.fit`` (SGD momentum and weight decay included).

    Gradients are masked after backward, weights and momentum buffers after every step.

    Raises:
        ValueError: (at construction and in ``set_mask``) `mask` is not a dict of bool tensors
            or prunes every weight.
    """

    def __init__(self, mask):
        self.mask = check_survivors(mask)
        self.params = []
        self.factors = []

    def before_training(self, state):
        self.set_mask(state.model, self.mask)

    @torch.no_grad()
    def set_mask(self, model, mask):
        """Switch to `mask` (checked against `model`) and zero the weights it prunes."""
        check_mask(model, mask)
        check_survivors(mask)
        params = prunable(model)
        self.mask = mask
        self.params = [params[n] for n in mask]
        self.factors = [mask[n].to(device=p.device, dtype=p.dtype) for n, p in zip(mask, self.params)]
        torch._foreach_mul_(self.params, self.factors)

    def after_backward(self, state):
        pairs = [(p.grad, f) for p, f in zip(self.params, self.factors) if p.grad is not None]
        if pairs:
            torch._foreach_mul_([g for g, _ in pairs], [f for _, f in pairs])

    @torch.no_grad()
    def after_step(self, state):
        torch._foreach_mul_(self.params, self.factors)
        buffers = [(state.optimizer.state.get(p, {}).get("momentum_buffer"), f) for p, f in zip(self.params, self.factors)]
        buffers = [(b, f) for b, f in buffers if b is not None]
        if buffers:
            torch._foreach_mul_([b for b, _ in buffers], [f for _, f in buffers])


def to_cpu(tensors):
    """Detached CPU copies of a dict of tensors (for checkpoints)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in tensors.items()}
