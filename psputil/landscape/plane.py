"""The loss plane through two solutions (Fig. 2a, Goodfellow et al.), many grid points per pass.

``theta(a, b) = theta_G + a * u + b * |u| * v`` with ``u = theta_1S - theta_G`` and
``v`` a seeded Gaussian direction made orthogonal to ``u`` (Gram-Schmidt) and of
unit norm, over all parameters (BatchNorm weights and biases included). (0, 0) is G
and (1, 0) is 1-S.

Masked plane: with a ``mask`` (typically the union of G's and 1-S's surviving weights)
``v`` is drawn only on the masked entries (zero elsewhere) before Gram-Schmidt. G and
1-S are both zero outside the union, so ``u`` is too, and no point of the plane revives
a weight both solutions pruned; over the full space every point off the segment does.

BatchNorm running statistics are *interpolated* along ``a`` and the same at every
``b``; the plane is evaluated in eval mode. Running means (and any other floating
buffer) go linearly, ``r(a) = r_G + a * (r_1S - r_G)``; running variances go
log-linearly, ``var_G**(1 - a) * var_1S**a``, which stays positive for ``a``
outside [0, 1] where the linear rule can go negative.
Why not recompute them at each point: that is one more training-mode pass over
the data per grid point, and the map would then depend on how those statistics
were gathered. Interpolation is free, deterministic, and exact at G and 1-S, the
two points the figure compares; off the segment the statistics are an
approximation (running statistics are not parameters, so ``v`` has no part in them).

The grid evaluator is ``psputil.landscape.grid``.
"""

import copy
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Plane:
    """The plane through G (origin) and 1-S; every dict maps a parameter/buffer name to a tensor."""

    template: nn.Module  # private copy of G in eval mode, used as the architecture
    origin: dict  # parameters of G
    u: dict  # parameters of 1-S minus those of G
    v: dict  # unit direction orthogonal to u
    u_norm: float  # |u|
    masked: bool  # whether v was restricted to a mask (zero outside it)
    buffer_origin: dict  # floating buffers (BatchNorm running statistics) of G; log for running_var
    buffer_delta: dict  # the same of 1-S minus that of G
    fixed_buffers: dict  # other buffers (num_batches_tracked), taken from G

    def parameters_at(self, a, b):
        """Parameters at the point (a, b)."""
        return {n: o + a * self.u[n] + b * self.u_norm * self.v[n] for n, o in self.origin.items()}

    def state_dict_at(self, a, b):
        """A full state dict (parameters and buffers) for ``load_state_dict`` at (a, b)."""
        return {**self.parameters_at(a, b), **self.buffers_at(torch.tensor(float(a))), **self.fixed_buffers}

    def buffers_at(self, a):
        """Floating buffers at a tensor of `a` values (shape () or (P,) -> leading P axis)."""
        out = {}
        for n, o in self.buffer_origin.items():
            coeff = a.to(o).view(a.shape + (1,) * o.dim())
            value = o + coeff * self.buffer_delta[n]
            out[n] = value.exp() if _is_variance(n) else value
        return out

    def coordinates(self, model):
        """(a, b) of the projection of `model`'s parameters on the plane (G: (0, 0), 1-S: (1, 0))."""
        params = dict(model.named_parameters())
        diff = {n: params[n].detach().to(o) - o for n, o in self.origin.items()}
        a = _dot(diff, self.u) / self.u_norm**2
        b = _dot(diff, self.v) / self.u_norm
        return a, b


def plane_through(model_g, model_1s, seed=0, mask=None):
    """The plane through two models of the same architecture (neither is changed).

    Args:
        model_g: the origin (the gradual solution G).
        model_1s: the point (1, 0) (the one-shot solution 1-S); its parameters are copied to G's device.
        seed: seed of the random direction v (drawn on the CPU, same v everywhere; with a mask
            the same draw, zeroed outside it).
        mask: None (v over all parameters), or dict parameter name -> bool tensor of its shape,
            True = v may move the entry; names absent from the mask (BatchNorm parameters,
            which are never pruned) are entirely free. For the masked plane pass the union of
            G's and 1-S's masks (``union_mask``).

    Returns:
        A ``Plane`` on the device of `model_g`'s parameters.

    Raises:
        ValueError: different architectures, identical parameters, a mask naming an unknown
            parameter or of the wrong shape or dtype, or a mask leaving no direction beside u.
    """
    _check_same_architecture(model_g, model_1s)
    params_g = {n: p.detach() for n, p in model_g.named_parameters()}
    params_s = {n: p.detach() for n, p in model_1s.named_parameters()}
    mask = _check_mask(mask, params_g)
    u = {n: params_s[n].to(p).double() - p.double() for n, p in params_g.items()}
    u_norm = _dot(u, u) ** 0.5
    if u_norm == 0:
        raise ValueError("the two models have identical parameters; the plane needs two different solutions")
    generator = torch.Generator().manual_seed(seed)
    v = {n: torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.device) for n, p in params_g.items()}
    # Gram-Schmidt (float64) against u's part inside the mask: v stays in the mask and is then
    # orthogonal to u itself (with the union of both masks that part is all of u)
    inside = u if mask is None else _restricted(u, mask)
    v = v if mask is None else _restricted(v, mask)
    inside_norm2 = u_norm**2 if mask is None else _dot(inside, inside)
    along_u = _dot(v, inside) / inside_norm2 if inside_norm2 > 0 else 0.0
    v = {n: v[n] - along_u * inside[n] for n in v}
    v_norm = _dot(v, v) ** 0.5
    if v_norm <= 1e-12:
        raise ValueError("the mask leaves no direction orthogonal to u; free more entries (the union of both "
                         "solutions' masks) or pass mask=None")
    v = {n: t / v_norm for n, t in v.items()}
    buffers_g = dict(model_g.named_buffers())
    buffers_s = dict(model_1s.named_buffers())
    floating = {n for n, t in buffers_g.items() if t.is_floating_point()}
    origin = {n: _buffer_space(n, buffers_g[n].detach()) for n in floating}
    template = copy.deepcopy(model_g).eval()
    return Plane(
        template=template,
        origin={n: p.clone() for n, p in params_g.items()},
        u={n: t.to(params_g[n].dtype) for n, t in u.items()},
        v={n: t.to(params_g[n].dtype) for n, t in v.items()},
        u_norm=u_norm,
        masked=mask is not None,
        buffer_origin=origin,
        buffer_delta={n: _buffer_space(n, buffers_s[n].detach().to(o)) - o for n, o in origin.items()},
        fixed_buffers={n: t.detach().clone() for n, t in buffers_g.items() if n not in floating},
    )


def union_mask(*masks):
    """The entries free in any of the masks: dict name -> bool tensor (names of all masks).

    Raises:
        ValueError: no mask, or masks that disagree on the shape of a parameter.
    """
    if not masks:
        raise ValueError("union_mask needs at least one mask")
    out = {}
    for m in masks:
        if not isinstance(m, dict):
            raise ValueError(f"each mask must be a dict parameter name -> bool tensor, got {type(m).__name__}")
        for name, entries in m.items():
            if name in out and out[name].shape != entries.shape:
                raise ValueError(f"masks disagree on the shape of {name!r}: {tuple(out[name].shape)} and "
                                 f"{tuple(entries.shape)}")
            out[name] = out[name] | entries.bool().cpu() if name in out else entries.bool().cpu().clone()
    return out


def _restricted(tensors, mask):
    return {n: t * mask[n].to(t.device) if n in mask else t for n, t in tensors.items()}


def _check_mask(mask, params):
    if mask is None:
        return None
    if not isinstance(mask, dict):
        raise ValueError(f"mask must be None or a dict parameter name -> bool tensor, got {type(mask).__name__}")
    for name, m in mask.items():
        if name not in params:
            raise ValueError(f"mask names unknown parameter {name!r}; valid names: {', '.join(params)}")
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or m.shape != params[name].shape:
            got = f"{m.dtype} {tuple(m.shape)}" if isinstance(m, torch.Tensor) else type(m).__name__
            raise ValueError(f"mask[{name!r}] must be a bool tensor of shape {tuple(params[name].shape)}, got {got}")
    return mask


def _check_same_architecture(model_g, model_1s):
    if type(model_g) is not type(model_1s):
        raise ValueError(f"models must share one architecture; got {type(model_g).__name__} and {type(model_1s).__name__}")
    for kind in ("named_parameters", "named_buffers"):
        shapes_g = {n: tuple(t.shape) for n, t in getattr(model_g, kind)()}
        shapes_s = {n: tuple(t.shape) for n, t in getattr(model_1s, kind)()}
        if shapes_g != shapes_s:
            diff = sorted(set(shapes_g.items()) ^ set(shapes_s.items()))[:4]
            raise ValueError(f"models must have the same parameter and buffer names and shapes; they differ in {diff}")


def _is_variance(name):
    return name.rpartition(".")[2] == "running_var"


def _buffer_space(name, tensor):
    """Running variances are interpolated in log space (clamped to the smallest normal float)."""
    return tensor.clamp_min(torch.finfo(tensor.dtype).tiny).log() if _is_variance(name) else tensor.clone()


def _dot(x, y):
    return float(sum((x[n].double() * y[n].double()).sum() for n in x))
