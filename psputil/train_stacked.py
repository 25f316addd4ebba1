"""Many trainings of one architecture at once: K models stacked along a leading dimension.

The retraining controls, the dense seeds and the one-shot retrainings are independent
runs of ``train.fit(model, data, config, seed, hooks=[pruning.MaskHook(mask)])`` that
differ only in their initial weights, mask, seed and optimiser settings. ``fit_stacked``
runs K of them together and returns, per member, what the one-at-a-time run returns.

How: every ``nn.Linear`` and ``nn.Conv2d`` of a copy of the model becomes a *stacked*
layer holding K weight tensors; the model's own ``forward`` then runs on the K batches
folded into one of K x B samples (member k owns rows ``k*B .. k*B + B - 1``), so every
per-sample operation in between (ReLU, pooling, flattening) is shared. A stacked
Linear is one batched matrix product (``baddbmm``, bit-identical to ``F.linear``);
a stacked Conv2d runs a grouped convolution (``groups=K``, best on CUDA) or one
convolution per member (best on the CPU; channels-last there). SGD (momentum,
Nesterov, weight decay) is applied to the stacked tensors with per-member
hyperparameters, in the same operation order as ``torch.optim.SGD``; each member's
learning rate comes from its own ``train.make_scheduler`` on a one-parameter optimiser,
so "none", "step" and "plateau" follow torch's exact semantics.

Per member, exactly as ``fit``: a ``torch.Generator`` seeded with its seed draws
``torch.randperm(n)`` each epoch (and the augmentation); pruned gradients are zeroed
before the step and pruned weights start at zero (they then stay exactly zero:
``MaskHook``'s re-masking after the step is a no-op in exact arithmetic); the
validation split is scored after every epoch and steps the schedule. A member whose
epoch budget is spent (or that ``stop`` ends) keeps its weights and leaves the stack.

``retrain_stacked`` returns per member what ``oneshot.retrain`` returns (scores, sparsity,
mask), so a sweep can store each member as its own unit.

Where it pays: where one run cannot fill the device, i.e. on a GPU, where a LeNet step is
a few dozen kernel launches of ~10 us whatever the batch; K members share every launch.
On a 2-core CPU a single LeNet run already keeps the cores busy with large products,
so stacking gains little there (``benchmarks/stacked_training.py``).

Limits: models whose only parametrised modules are ``nn.Linear`` and ``nn.Conv2d``
(zero padding), with no buffers and no operation mixing the samples of a batch
(checked on real samples before training): the LeNets, not ResNet-32 (BatchNorm).
All members share ``batch_size``, ``augment`` and ``precision``.
"""

import copy
import math
import time
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from psputil import bars, devices, train
from psputil.data import crop_flip
from psputil.pruning.masks import check_mask
from psputil.pruning.masks import sparsity as pruning_sparsity

CONV_MODES = ("auto", "grouped", "loop")
PATCH_LIMIT = 64  # C * kh * kw up to which a first-layer convolution runs as a product over patches (CPU)


@dataclass
class Member:
    """One training of the stack: what ``fit`` would get for it.

    Attributes:
        state: initial state dict (``model.state_dict()`` of the architecture).
        config: ``train.TrainConfig``.
        seed: batch order (and augmentation), as ``fit``'s seed.
        mask: None (dense) or a pruning mask (as ``pruning.MaskHook`` takes).
    """

    state: dict
    config: train.TrainConfig
    seed: int = 0
    mask: Optional[dict] = None


class StackedLinear(nn.Module):
    """K ``nn.Linear`` layers; input (K*B, ..., in) with member k in rows k*B..k*B+B-1."""

    def __init__(self, weight, bias):
        super().__init__()
        self.weight = nn.Parameter(weight)  # (K, out, in)
        self.bias = None if bias is None else nn.Parameter(bias)  # (K, out)

    def forward(self, x):
        k = self.weight.shape[0]
        if k == 1:  # one member: fit's own kernels (MKL is faster on addmm's shapes than on bmm's)
            return F.linear(x, self.weight[0], None if self.bias is None else self.bias[0])
        rows = x.reshape(k, -1, x.shape[-1])
        if self.bias is None:
            out = torch.bmm(rows, self.weight.transpose(1, 2))
        else:
            out = torch.baddbmm(self.bias.unsqueeze(1), rows, self.weight.transpose(1, 2))
        return out.reshape(*x.shape[:-1], self.weight.shape[1])


class StackedConv2d(nn.Module):
    """K ``nn.Conv2d`` layers (zero padding); input (K*B, C, H, W), member k in rows k*B..k*B+B-1.

    ``mode`` "grouped": one convolution with groups=K (the members side by side in the
    channels); "loop": one convolution per member (the CPU's faster choice), and for an
    input that needs no gradient (the first layer) one batched product over patches.
    """

    def __init__(self, conv, weight, bias, mode):
        super().__init__()
        self.weight = nn.Parameter(weight)  # (K, O, C / groups, kh, kw)
        self.bias = None if bias is None else nn.Parameter(bias)  # (K, O)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.mode = mode

    def forward(self, x):
        k, w, b = self.weight.shape[0], self.weight, self.bias
        args = (self.stride, self.padding, self.dilation)
        if self.mode == "loop" and self.groups == 1 and not x.requires_grad and w[0].numel() <= PATCH_LIMIT * w.shape[1]:
            return _PatchConv.apply(x, w, b, *args)
        if self.mode == "loop":
            # split/unbind, not indexing: their backward is one concatenation, where K index ops
            # would each scatter into a zero tensor of the whole stack (K^2 work)
            parts, weights = x.split(x.shape[0] // k), w.unbind(0)
            biases = [None] * k if b is None else b.unbind(0)
            outs = [F.conv2d(part, wi, bi, *args, self.groups) for part, wi, bi in zip(parts, weights, biases)]
            return outs[0] if k == 1 else torch.cat(outs)
        n, c, h, width = x.shape
        side = x.reshape(k, n // k, c, h, width).transpose(0, 1).reshape(n // k, k * c, h, width)
        out = F.conv2d(side, w.flatten(0, 1), None if b is None else b.flatten(), *args, self.groups * k)
        return out.reshape(n // k, k, -1, *out.shape[2:]).transpose(0, 1).reshape(n, -1, *out.shape[2:])


class _PatchConv(torch.autograd.Function):
    """Stacked convolution of an input that needs no gradient (a first layer) as one batched matrix product.

    The (kh, kw, C) patches of every output position are gathered once, as (K, kh*kw*C,
    positions) so that every copy runs along image rows; the forward is then ``baddbmm``
    and the weight gradient another ``bmm``: on the CPU several times faster than oneDNN's
    weight gradient for a one-channel input. The output is channels-last.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        k, out_channels = weight.shape[:2]
        cols, (n, height, width) = _patches(x, k, weight.shape[3:], stride, padding, dilation)
        w = weight.permute(0, 1, 3, 4, 2).reshape(k, out_channels, -1)
        rows = cols.transpose(1, 2)
        out = torch.bmm(rows, w.transpose(1, 2)) if bias is None else torch.baddbmm(bias.unsqueeze(1), rows, w.transpose(1, 2))
        ctx.save_for_backward(cols)
        ctx.shape, ctx.has_bias = weight.shape, bias is not None
        return out.reshape(n, height, width, out_channels).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad):
        (cols,) = ctx.saved_tensors
        k, out_channels, channels, kh, kw = ctx.shape
        rows = grad.permute(0, 2, 3, 1).reshape(k, -1, out_channels)
        dw = torch.bmm(rows.transpose(1, 2), cols.transpose(1, 2))
        dw = dw.reshape(k, out_channels, kh, kw, channels).permute(0, 1, 4, 2, 3)
        return None, dw, rows.sum(1) if ctx.has_bias else None, None, None, None


def patch_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """``F.conv2d`` (groups 1, zero padding) as one matrix product over (kh, kw, C) patches; channels-last output.

    For an input that needs no gradient (a first layer) on the CPU: its weight gradient is
    one more product, several times faster than oneDNN's for a one-channel input. The
    values equal ``F.conv2d``'s within float32 reassociation. The input gradient is not
    computed (ValueError when `x` requires one).
    """
    if x.requires_grad:
        raise ValueError("patch_conv2d computes no input gradient; use F.conv2d for an input that requires one")
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    return _PatchConv.apply(x, weight.unsqueeze(0), None if bias is None else bias.unsqueeze(0),
                            pair(stride), pair(padding), pair(dilation))


def _patches(x, members, kernel, stride, padding, dilation):
    """(members, kh * kw * C, positions) patches of x (N, C, H, W), member k's samples in rows k*N/K...; and (N, Ho, Wo)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    n, c, h, w = x.shape
    out_h, out_w = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    grouped = x.reshape(members, n // members, c, h, w).transpose(1, 2)  # (K, C, N / K, H, W)
    shifted = [grouped[..., i * dh : i * dh + (out_h - 1) * sh + 1 : sh, j * dw : j * dw + (out_w - 1) * sw + 1 : sw]
               for i in range(kh) for j in range(kw)]
    return torch.stack(shifted, 1).reshape(members, kh * kw * c, -1), (n, out_h, out_w)


def fit_stacked(model, data, members, device="auto", progress=True, desc=None, stop=None, conv="auto",
                channels_last=None, errors="raise"):
    """Train K copies of one architecture together; per member the result of ``train.fit``.

    Member k's weights, history and lr follow ``train.fit(m, data, k.config, k.seed,
    hooks=[pruning.MaskHook(k.mask)] if k.mask else [])`` with ``m`` holding ``k.state``,
    within float32 reassociation (tests/test_train_stacked.py: < 1e-7 apart after a dozen
    steps, except a rare near-tie of a ReLU or max-pool that rounding flips).

    Args:
        model: the architecture (a module; its own weights are not used or changed).
        data: ``DataSplits`` (train for the steps, valid scored every epoch).
        members: list of ``Member``.
        device: "auto", "cpu", "cuda", ...
        progress: tqdm bar over epochs.
        desc: bar label (default "train xK").
        stop: optional ``stop(index, history) -> bool`` called after every epoch of member
            `index` (its history so far); True ends that member (as a hook returning True).
        conv: "auto" (grouped on CUDA, loop on the CPU), "grouped" or "loop".
        channels_last: keep conv weights and activations channels-last (None: on the CPU).
        errors: "raise" (a member whose loss becomes NaN/inf raises ``NonFiniteLossError``,
            as ``fit``) or "keep" (that member stops; its result has "error": the message).

    Returns:
        One dict per member, in order: "history" (``fit``'s records; "seconds" is the
        stacked epoch's wall time divided by the members it trained), "state" (final state
        dict on the CPU) and "error" (None, or the message under errors="keep").

    Raises:
        ValueError: bad members (state, mask or config not fitting the model, configs that
            differ in batch_size/augment/precision), an unsupported model, or bad data.
        NonFiniteLossError: a member's loss became NaN/inf (errors="raise").
    """
    device = devices.resolve(device)
    members = _check_members(model, members, errors, conv)
    config0 = members[0].config
    data = data.to(device)
    check = getattr(train, "check_inputs", None)  # bad data raises here, before any compute
    if check is not None:
        probe = copy.deepcopy(model).to(device)
        for name in ("train", "valid"):
            check(probe, getattr(data, name), what=f"the {name} split", input_shape=getattr(data, "input_shape", None))
    mode = ("grouped" if device.type == "cuda" else "loop") if conv == "auto" else conv
    layout = device.type == "cpu" if channels_last is None else bool(channels_last)
    stack = _Stack(model, members, device, mode, layout)
    stack.check_against(model, data.valid.images[: min(len(data.valid), 4)])
    augment = (lambda x, g: crop_flip(x, g, dataset=data.dataset)) if config0.augment else None
    results = [{"history": [], "state": None, "error": None} for _ in members]
    epochs = max(m.config.epochs for m in members)
    bar = bars.bar(range(1, epochs + 1), progress, desc=desc or f"train x{len(members)}", leave=False)
    for epoch in bar:
        stack.drop([i for i in stack.index if members[i].config.epochs < epoch], results)
        if not stack.index:
            break
        start = time.perf_counter()
        train_loss, train_error = _train_epoch(stack, data.train, config0, augment, device)
        valid_loss, valid_error = _evaluate(stack, data.valid, config0.precision)
        seconds = (time.perf_counter() - start) / len(stack.index)
        ended = []
        for slot, i in enumerate(stack.index):
            lr = stack.optimizers[slot].param_groups[0]["lr"]
            if not math.isfinite(train_loss[slot]):
                message = (f"member {i} (seed {members[i].seed}): training loss became {train_loss[slot]} in epoch "
                           f"{epoch} (lr {lr:g}); try a lower learning rate")
                if errors == "raise":
                    raise train.NonFiniteLossError(message)
                results[i]["error"] = message
                ended.append(i)
                continue
            record = {"epoch": epoch, "lr": lr, "train_loss": train_loss[slot], "train_error": train_error[slot],
                      "valid_loss": valid_loss[slot], "valid_error": valid_error[slot], "seconds": seconds}
            results[i]["history"].append(record)
            if stop is not None and stop(i, results[i]["history"]):
                ended.append(i)
            _step_scheduler(stack.schedulers[slot], record["valid_loss"])
        stack.drop(ended, results)
        bar.set_postfix(members=len(stack.index))
    stack.drop(list(stack.index), results)
    return results


def retrain_stacked(model, data, members, device="auto", progress=False):
    """``oneshot.retrain`` for K members at once: per member the same dict, from one stacked run.

    Args:
        model: the architecture (not changed).
        data: ``DataSplits``.
        members: list of ``Member`` (each with its own state, config, seed and mask).
        device, progress: as ``fit_stacked``.

    Returns:
        One dict per member, as ``oneshot.retrain``: "state", "mask" (CPU), "history",
        "sparsity" and the valid/test loss and error (percent), plus "error" (None).
    """
    results = fit_stacked(model, data, members, device=device, progress=progress)
    device = devices.resolve(device)
    data = data.to(device)
    net = copy.deepcopy(model).to(device)
    out = []
    for member, result in zip(members, results):
        net.load_state_dict(result["state"])
        scores = {}
        for split in ("valid", "test"):
            scores[f"{split}_loss"], scores[f"{split}_error"] = train.evaluate(net, getattr(data, split))
        mask = None if member.mask is None else {n: m.detach().to("cpu", copy=True) for n, m in member.mask.items()}
        out.append({"state": result["state"], "mask": mask, "history": result["history"],
                    "sparsity": pruning_sparsity(net), **scores, "error": result["error"]})
    return out


class _Stack:
    """The stacked model, its per-member optimiser state and the members still training."""

    def __init__(self, model, members, device, mode, channels_last):
        self.members, self.device = members, device
        self.index = list(range(len(members)))  # member of each slot
        self.names = list(model.state_dict())
        self.layout_cl = channels_last
        self.net = _stacked_copy(model, members, device, mode, channels_last)
        self.params = dict(self.net.named_parameters())
        self.masks = {}  # name -> (K, ...) float factors, only where a member prunes
        for name in self.params:
            if any(m.mask is not None and name in m.mask for m in members):
                factors = [m.mask[name] if m.mask is not None else torch.ones(m.state[name].shape, dtype=torch.bool)
                           for m in members]
                self.masks[name] = _like(self.params[name], torch.stack([f.to(device) for f in factors]))
        with torch.no_grad():
            for name, factor in self.masks.items():  # MaskHook.before_training
                self.params[name].mul_(factor)
        self.buffers = {name: None for name in self.params}
        self.optimizers, self.schedulers = [], []
        for m in members:  # a one-parameter optimiser per member carries its lr schedule
            optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=m.config.lr)
            self.schedulers.append(train.make_scheduler(optimizer, m.config))
            optimizer.step()  # a no-op (no gradient); tells the scheduler the optimiser runs, as in fit
            self.optimizers.append(optimizer)
        self.generators = [torch.Generator().manual_seed(m.seed) for m in members]
        self._hyper()

    def _hyper(self):
        configs = [self.members[i].config for i in self.index]
        column = lambda values: torch.tensor(values, dtype=torch.float32, device=self.device)
        self.momentum = column([c.momentum for c in configs])
        self.decay = column([c.weight_decay for c in configs])
        self.nesterov = torch.tensor([c.nesterov for c in configs], device=self.device)
        self.any_momentum = any(c.momentum != 0 for c in configs)
        self.any_decay = any(c.weight_decay != 0 for c in configs)
        self.any_nesterov = any(c.nesterov for c in configs)
        self.all_nesterov = all(c.nesterov for c in configs)

    def check_against(self, model, images):
        """Each member's stacked output on real samples against `model`'s own forward with its weights."""
        with torch.no_grad(), train.eval_mode(model):
            folded = images.repeat(len(self.index), *([1] * (images.dim() - 1)))
            out = self.net(folded).reshape(len(self.index), len(images), -1)
            for slot, i in enumerate(self.index):
                expected = functional_call(model, {n: p[slot] for n, p in self.params.items()}, (images,))
                if not torch.allclose(out[slot], expected.reshape(len(images), -1), rtol=1e-3, atol=1e-4):
                    raise ValueError(f"{type(model).__name__} gives other outputs when stacked: its forward must treat "
                                     "every sample on its own (no BatchNorm, no operation across the batch)")

    @torch.no_grad()
    def step(self, lrs):
        """One SGD step of every member, as ``torch.optim.SGD`` (foreach) after ``MaskHook.after_backward``."""
        negative_lr = torch.tensor([-lr for lr in lrs], dtype=torch.float32, device=self.device)
        for name, p in self.params.items():
            grad = p.grad
            if name in self.masks:
                grad.mul_(self.masks[name])
            if self.any_decay:
                grad = grad.addcmul(p, _column(self.decay, p))  # torch: grad + wd * p
            if self.any_momentum:
                buffer = self.buffers[name]
                if buffer is None:  # torch: the first buffer is a copy of the gradient
                    buffer = self.buffers[name] = grad.clone()
                else:
                    buffer.mul_(_column(self.momentum, p)).add_(grad)
                if self.any_nesterov:
                    ahead = grad.addcmul(buffer, _column(self.momentum, p))
                    grad = ahead if self.all_nesterov else torch.where(_column(self.nesterov, p), ahead, buffer)
                else:
                    grad = buffer
            p.addcmul_(grad, _column(negative_lr, p))  # bit-identical to torch's add_(grad, alpha=-lr)
            p.grad = None

    def drop(self, ended, results):
        """Members `ended` leave the stack; their final weights go into `results`."""
        if not ended:
            return
        keep = [slot for slot, i in enumerate(self.index) if i not in ended]
        for slot, i in enumerate(self.index):
            if i in ended:
                results[i]["state"] = {name: self.params[name][slot].detach().to("cpu", copy=True).contiguous()
                                       for name in self.names}
        rows = torch.tensor(keep, dtype=torch.long, device=self.device)
        with torch.no_grad():
            for name, module_name, attr in self._slots():
                module = self.net.get_submodule(module_name)
                setattr(module, attr, nn.Parameter(_like(self.params[name], self.params[name].index_select(0, rows))))
            self.masks = {n: _like(f, f.index_select(0, rows)) for n, f in self.masks.items()}
            self.buffers = {n: None if b is None else _like(b, b.index_select(0, rows)) for n, b in self.buffers.items()}
        self.params = dict(self.net.named_parameters())
        self.optimizers = [self.optimizers[s] for s in keep]
        self.schedulers = [self.schedulers[s] for s in keep]
        self.generators = [self.generators[s] for s in keep]
        self.index = [self.index[s] for s in keep]
        if self.index:
            self._hyper()

    def _slots(self):
        for name in self.names:
            module_name, _, attr = name.rpartition(".")
            yield name, module_name, attr


def _train_epoch(stack, split, config, augment, device):
    """One epoch of every member; per-member (train loss, train error %) as lists of floats."""
    k, n, size = len(stack.index), len(split), config.batch_size
    orders = torch.stack([torch.randperm(n, generator=g) for g in stack.generators]).to(device)
    lrs = [opt.param_groups[0]["lr"] for opt in stack.optimizers]
    loss_sum = torch.zeros(k, device=device)
    wrong = torch.zeros(k, device=device, dtype=torch.long)
    stack.net.train()
    for start in range(0, n, size):
        index = orders[:, start:start + size]
        b = index.shape[1]
        x = split.images[index.reshape(-1)]
        y = split.labels[index]
        if augment is not None:
            x = torch.cat([augment(part, g) for part, g in zip(x.split(b), stack.generators)])
        if stack.layout_cl and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with train._autocast(device, config.precision):
            out = stack.net(x)
        out = out.float().reshape(k, b, -1)
        losses = F.cross_entropy(out.reshape(k * b, -1), y.reshape(-1), reduction="none").reshape(k, b).mean(1)
        losses.sum().backward()
        stack.step(lrs)
        loss_sum += losses.detach() * b
        wrong += (out.detach().argmax(2) != y).sum(1)
    return [v / n for v in loss_sum.tolist()], [100.0 * v / n for v in wrong.tolist()]  # as fit: Python floats


@torch.no_grad()
def _evaluate(stack, split, precision, batch_size=1000, max_rows=4000):
    """``train.evaluate`` of every member (same batches of `batch_size`); members in groups of max_rows samples."""
    k, n = len(stack.index), len(split)
    group = max(1, max_rows // batch_size)
    loss_sum = torch.zeros(k, device=stack.device)
    wrong = torch.zeros(k, device=stack.device, dtype=torch.long)
    with train.eval_mode(stack.net):
        for x, y in split.batches(batch_size):
            for first in range(0, k, group):
                last = min(k, first + group)
                params = {name: p[first:last] for name, p in stack.params.items()}
                folded = x.repeat(last - first, *([1] * (x.dim() - 1)))
                if stack.layout_cl and folded.dim() == 4:
                    folded = folded.contiguous(memory_format=torch.channels_last)
                with train._autocast(x.device, precision):
                    out = functional_call(stack.net, params, (folded,))
                out = out.float().reshape(last - first, len(y), -1)
                loss_sum[first:last] += F.cross_entropy(out.transpose(1, 2), y.expand(last - first, -1),
                                                        reduction="none").sum(1)
                wrong[first:last] += (out.argmax(2) != y).sum(1)
    return [v / n for v in loss_sum.tolist()], [100.0 * v / n for v in wrong.tolist()]  # as fit: Python floats


def _check_members(model, members, errors, conv):
    if errors not in ("raise", "keep"):
        raise ValueError(f"errors must be 'raise' or 'keep', got {errors!r}")
    if conv not in CONV_MODES:
        raise ValueError(f"unknown conv mode {conv!r}; valid: {', '.join(CONV_MODES)}")
    members = list(members)
    if not members:
        raise ValueError("members is empty; pass at least one Member(state, config, seed, mask)")
    expected = model.state_dict()
    for i, m in enumerate(members):
        if not isinstance(m, Member):
            raise ValueError(f"members[{i}] must be a Member(state, config, seed, mask), got {type(m).__name__}")
        if not isinstance(m.config, train.TrainConfig):
            raise ValueError(f"members[{i}].config must be a TrainConfig, got {type(m.config).__name__}")
        if not isinstance(m.state, dict) or set(m.state) != set(expected):
            got = sorted(m.state) if isinstance(m.state, dict) else type(m.state).__name__
            raise ValueError(f"members[{i}].state must be a state dict with the keys {sorted(expected)}; got {got}")
        for name, tensor in expected.items():
            if tuple(m.state[name].shape) != tuple(tensor.shape):
                raise ValueError(f"members[{i}].state[{name!r}] has shape {tuple(m.state[name].shape)}, "
                                 f"the model's is {tuple(tensor.shape)}")
        if m.mask is not None:
            check_mask(model, m.mask)
            if not any(bool(t.any()) for t in m.mask.values()):
                raise ValueError(f"members[{i}].mask prunes every weight; keep at least one weight")
        for field in ("batch_size", "augment", "precision"):
            if getattr(m.config, field) != getattr(members[0].config, field):
                raise ValueError(f"members[{i}].config.{field} = {getattr(m.config, field)!r} differs from members[0]'s "
                                 f"{getattr(members[0].config, field)!r}; stack only members that share {field}")
    return members


def _stacked_copy(model, members, device, mode, channels_last):
    """A copy of `model` whose Linear/Conv2d layers hold the members' stacked weights."""
    if any(True for _ in model.buffers()):
        raise ValueError(f"{type(model).__name__} has buffers (e.g. BatchNorm statistics); stacked training supports "
                         "models whose only parametrised layers are nn.Linear and nn.Conv2d")
    net = copy.deepcopy(model).to(device)
    for module_name, module in list(net.named_modules()):
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            stacked = {attr: None if getattr(module, attr) is None else
                       torch.stack([m.state[f"{module_name}.{attr}"] for m in members]).to(device, torch.float32)
                       for attr in ("weight", "bias")}
            if isinstance(module, nn.Linear):
                replacement = StackedLinear(stacked["weight"], stacked["bias"])
            else:
                if module.padding_mode != "zeros":
                    raise ValueError(f"{module_name}: padding_mode {module.padding_mode!r} is not supported (only 'zeros')")
                weight = stacked["weight"]
                if channels_last:  # every member's (O, C, kh, kw) slice channels-last
                    weight = weight.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
                replacement = StackedConv2d(module, weight, stacked["bias"], mode)
            _replace(net, module_name, replacement)
        elif any(True for _ in module.parameters(recurse=False)):
            raise ValueError(f"{module_name} ({type(module).__name__}) has parameters; stacked training supports "
                             "only nn.Linear and nn.Conv2d layers")
    return net


def _replace(net, name, module):
    parent_name, _, attr = name.rpartition(".")
    setattr(net.get_submodule(parent_name) if parent_name else net, attr, module)


def _like(reference, values):
    """`values` (K' <= K members) in the dtype and per-member layout of `reference` (K, ...): channels-last stays."""
    return torch.empty_like(reference[: values.shape[0]]).copy_(values)


def _column(values, like):
    """A (K,) tensor shaped to broadcast against a stacked (K, ...) tensor."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _step_scheduler(scheduler, valid_loss):
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(valid_loss)
    elif scheduler is not None:
        scheduler.step()
