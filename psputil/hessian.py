"""Curvature (Fig. 2b): the top eigenvalues of the training-loss Hessian.

Exact Hessian-vector products (Pearlmutter's trick as double backward) of the mean
loss over all given samples, restricted to the free (unpruned) weights, feed
ARPACK's Lanczos solver (``scipy.sparse.linalg.eigsh``) through a
``LinearOperator``. The solver works in float64; the products in the model's dtype.
``top_eigenpairs`` adds the Ritz vectors and each pair's residual ``||Hv - lambda v||``;
``gradient_norm`` is the norm of the loss gradient at the model (a minimum has ~0).

Speed: when the first-order gradient graphs of all batches fit in
``graph_memory`` bytes (estimated on the first batch), they are built once and
each product is a single extra backward pass; otherwise every product recomputes
the forward and the gradient batch by batch (memory of one batch at a time).
The operator runs a copy of the model whose ``nn.Linear`` layers compute
``(W @ x^T)^T`` (feature-major): the same sums, but MKL's products of the double
backward are ~15 % faster in that orientation (LeNet-300, 2,000 samples, 1 thread).

Not used: ``curvlinops-for-pytorch`` 3.0.1 (``HessianLinearOperator(...).to_scipy()``
under the same ``eigsh``): the same eigenvalues, but it recomputes the forward and
gradient at every product instead of keeping the graph, and was 2.5x slower than this
operator on LeNet-300 / 2,000 samples (5.97 s vs 2.36 s, best of 3 interleaved, 1
thread), far outside the 1.2x we would accept for a shared dependency.
"""

import contextlib
import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import nn
from torch.func import functional_call

from psputil import checks
from psputil.data import TensorSplit, check_split
from psputil.train import eval_mode

GRAPH_MEMORY = 2 * 2**30  # bytes of retained gradient graphs allowed by default
CLASSIFICATION_LOSSES = (F.cross_entropy, F.nll_loss)  # their targets are class indices < the output width


@dataclass
class Eigenpairs:
    """Top eigenpairs of the masked Hessian.

    Attributes:
        values: the k largest eigenvalues, descending (floats).
        vectors: (free parameters, k) float64 array of unit Ritz vectors, column i for values[i].
        residuals: ``||H v_i - values[i] v_i||`` per pair (same units as the eigenvalues).
        hvps: Hessian-vector products spent, the k residual products included.
    """

    values: list
    vectors: np.ndarray
    residuals: list
    hvps: int


class HessianOperator(LinearOperator):
    """The (masked) Hessian of the mean loss as a float64 ``LinearOperator``.

    ``hvps`` counts the Hessian-vector products done so far. The model is in eval
    mode whenever it runs and goes back to its own mode after; it is never changed.
    """

    def __init__(self, model, loss_fn, batches, mask=None, graph_memory=GRAPH_MEMORY, feature_major=True):
        """Args: as ``top_eigenvalues``; the batches are read at the first product.

        feature_major: run Linear layers as ``(W @ x^T)^T`` (same values; faster on the CPU).
        """
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise ValueError(f"loss_fn must be a callable loss_fn(outputs, targets), such as F.cross_entropy; got {loss_fn!r}")
        checks.number("graph_memory", graph_memory, low=0)
        named = list(model.named_parameters())
        if not named:
            raise ValueError(f"{type(model).__name__} has no parameters")
        self.model, self.loss_fn = model, loss_fn
        self.net = _feature_major(model) if feature_major else model  # what runs: a copy, or the model itself
        self.names = [name for name, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.free = _free_indices(named, mask)  # name -> flat index tensor, or None = all free
        sizes = [p.numel() if self.free[n] is None else len(self.free[n]) for n, p in named]
        self.offsets = np.cumsum([0] + sizes)
        super().__init__(dtype=np.float64, shape=(int(self.offsets[-1]),) * 2)
        self.device, self.param_dtype = named[0][1].device, named[0][1].dtype
        self.hvps = 0
        self._batches, self._graph_memory = batches, graph_memory
        self._data = None
        self._graphs = None

    @property
    def num_free(self):
        """Number of free parameters (the size of the operator)."""
        return self.shape[0]

    def _prepare(self):
        """Move the data to the device once and check it; keep the gradient graphs when they fit."""
        if self._data is not None:
            return
        self._data = _read_batches(self._batches, self.device)
        self._batches = None
        total = sum(len(y) for _, y, _ in self._data)
        with eval_mode(self.model), eval_mode(self.net):
            _check_batches(self.net, self.loss_fn, self._data)
            first, used = _measured(lambda: self._gradient(*self._data[0], create_graph=True))
            if used * total / max(len(self._data[0][1]), 1) <= self._graph_memory:
                self._graphs = [first] + [self._gradient(*b, create_graph=True) for b in self._data[1:]]

    def _gradient(self, x, y, weight, create_graph):
        """(leaf parameters, weight * gradient of the batch mean loss)."""
        leaves = {n: p.detach().requires_grad_(True) for n, p in self.model.named_parameters()}
        with torch.enable_grad():
            outputs = functional_call(self.net, leaves, (x,))
            loss = self.loss_fn(outputs, y) * weight
            grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=create_graph, allow_unused=True)
        return list(leaves.values()), grads

    def gradient(self):
        """The gradient of the mean loss on the free entries, float64 numpy (no product counted)."""
        self._prepare()
        total = [torch.zeros(s, dtype=self.param_dtype, device=self.device) for s in self.shapes]
        with eval_mode(self.model), eval_mode(self.net):
            for index, batch in enumerate(self._data):
                grads = self._graphs[index][1] if self._graphs else self._gradient(*batch, create_graph=False)[1]
                for acc, grad in zip(total, grads):
                    if grad is not None:
                        acc += grad.detach()
        return self._gather(total).double().cpu().numpy()

    def _matvec(self, x):
        self._prepare()
        vector = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(-1), device=self.device)
        vector = self._scatter(vector.to(self.param_dtype))
        total = [torch.zeros(s, dtype=self.param_dtype, device=self.device) for s in self.shapes]
        with eval_mode(self.model), eval_mode(self.net):
            for index, batch in enumerate(self._data):
                leaves, grads = self._graphs[index] if self._graphs else self._gradient(*batch, create_graph=True)
                # parameters the loss does not reach, or reaches only linearly, add nothing
                pairs = [(g, v) for g, v in zip(grads, vector) if g is not None and g.requires_grad]
                if not pairs:
                    continue
                with torch.enable_grad():
                    products = torch.autograd.grad([g for g, _ in pairs], leaves, grad_outputs=[v for _, v in pairs],
                                                   retain_graph=self._graphs is not None, allow_unused=True)
                for acc, product in zip(total, products):
                    if product is not None:
                        acc += product
        self.hvps += 1
        return self._gather(total).double().cpu().numpy()

    def _scatter(self, flat):
        """Free-parameter vector -> list of full tensors with zeros at the masked entries."""
        out = []
        for i, (name, shape) in enumerate(zip(self.names, self.shapes)):
            part = flat[self.offsets[i] : self.offsets[i + 1]]
            if self.free[name] is None:
                out.append(part.view(shape))
            else:
                full = torch.zeros(shape.numel(), dtype=flat.dtype, device=flat.device)
                full[self.free[name]] = part
                out.append(full.view(shape))
        return out

    def _gather(self, tensors):
        parts = [t.reshape(-1) if self.free[n] is None else t.reshape(-1)[self.free[n]] for n, t in zip(self.names, tensors)]
        return torch.cat(parts)


def largest_eigenvalues(operator, k=5, seed=0, tol=1e-4, maxiter=None, ncv=None):
    """The k algebraic-largest eigenvalues of a symmetric ``LinearOperator``, descending.

    Lanczos (ARPACK ``eigsh``, which="LA") from a seeded Gaussian start vector.
    `tol` is ARPACK's stopping rule ``|H x - t x| <= tol * |t|`` for every Ritz pair
    (t, x), so each returned value lies within a relative `tol` of an eigenvalue (in
    practice far closer: the error shrinks like the residual squared); `ncv` is the
    Lanczos basis size (None: scipy's default, max(2k + 1, 20)).
    """
    values, _ = _eigsh(operator, k, seed, tol, maxiter, ncv, vectors=False)
    return values


def top_eigenvalues(model, loss_fn, batches, k=5, mask=None, seed=0, tol=1e-4, maxiter=None, ncv=None,
                    graph_memory=GRAPH_MEMORY):
    """Top-k eigenvalues of the training-loss Hessian, restricted to the free weights.

    Args:
        model: the network; in eval mode during the computation (BatchNorm uses its
            running statistics), its mode restored afterwards, its weights untouched.
        loss_fn: ``loss_fn(outputs, targets)`` -> mean loss of a batch (e.g. ``F.cross_entropy``).
        batches: iterable of (inputs, targets); the Hessian is that of the mean loss
            over all their samples (each batch weighted by its size), read once.
        k: number of eigenvalues, 1 <= k < number of free parameters.
        mask: None, or dict parameter name (as in ``model.named_parameters()``) ->
            bool tensor of that shape, True = free; absent names are entirely free.
        seed: seed of the Lanczos start vector (integer >= 0).
        tol: relative accuracy bound, see ``largest_eigenvalues`` (float32 products: >= ~1e-7).
        maxiter, ncv: ARPACK's iteration limit and Lanczos basis size (None: scipy's defaults).
        graph_memory: bytes of gradient graphs that may be kept between products.

    Returns:
        The k largest (algebraic) eigenvalues as floats, in descending order.

    Raises:
        ValueError: a bad argument, an empty `batches`, class labels outside the model's
            outputs, or inputs the model cannot take (all before any product).
    """
    operator = HessianOperator(model, loss_fn, batches, mask, graph_memory)
    return largest_eigenvalues(operator, k, seed, tol, maxiter, ncv)


def top_eigenpairs(model, loss_fn, batches, k=5, mask=None, seed=0, tol=1e-4, maxiter=None, ncv=None,
                   graph_memory=GRAPH_MEMORY):
    """``top_eigenvalues`` plus the Ritz vectors and each pair's residual ``||H v - lambda v||``.

    Args and Raises: as ``top_eigenvalues``.

    Returns:
        ``Eigenpairs``: values (descending), vectors (free parameters x k, unit columns, in
        the order of ``model.named_parameters()`` restricted to the mask), residuals (one
        extra Hessian-vector product each) and the products spent.
    """
    operator = HessianOperator(model, loss_fn, batches, mask, graph_memory)
    values, vectors = _eigsh(operator, k, seed, tol, maxiter, ncv, vectors=True)
    residuals = [float(np.linalg.norm(operator.matvec(vectors[:, i]) - values[i] * vectors[:, i]))
                 for i in range(len(values))]
    return Eigenpairs(values, vectors, residuals, operator.hvps)


def gradient_norm(model, loss_fn, batches, mask=None):
    """Euclidean norm of the gradient of the mean loss over `batches`, on the free weights.

    Args: as ``top_eigenvalues`` (eval mode, model unchanged, batches weighted by size).

    Returns:
        The norm as a float (same units as the loss per parameter).
    """
    operator = HessianOperator(model, loss_fn, batches, mask, graph_memory=0)
    return float(np.linalg.norm(operator.gradient()))


def _eigsh(operator, k, seed, tol, maxiter, ncv, vectors):
    """(values descending, vectors (n, k) or None) from ARPACK after checking the arguments."""
    n = operator.shape[0]
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k < n:
        raise ValueError(f"k must be an integer with 1 <= k < {n} (the number of free parameters), got {k!r}")
    seed = checks.integer("seed", seed, low=0)
    tol = checks.number("tol", tol, low=0)
    maxiter = checks.integer("maxiter", maxiter, low=1, optional=True)
    ncv = checks.integer("ncv", ncv, low=int(k) + 1, high=n, optional=True)
    if isinstance(operator, HessianOperator):
        operator._prepare()  # bad data raises here, before ARPACK starts
    start = np.random.default_rng(seed).standard_normal(n)
    with _single_threaded_blas():
        found = eigsh(operator, k=int(k), which="LA", v0=start, tol=tol, maxiter=maxiter, ncv=ncv,
                      return_eigenvectors=vectors)
    values, ritz = found if vectors else (found, None)
    order = np.argsort(values)[::-1]
    return [float(values[i]) for i in order], None if ritz is None else ritz[:, order]


def _read_batches(batches, device):
    """[(inputs, targets, weight)] on `device`, weights = batch size / total; ValueError when empty or malformed."""
    data = []
    try:
        items = list(batches)
    except TypeError as error:
        raise ValueError(f"batches must be an iterable of (inputs, targets) pairs, got {type(batches).__name__}") from error
    for i, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 2 or not all(isinstance(t, torch.Tensor) for t in item):
            raise ValueError(f"batch {i} must be an (inputs, targets) pair of tensors, got {type(item).__name__}")
        x, y = item
        if len(x) != len(y):
            raise ValueError(f"batch {i} has {len(x)} inputs but {len(y)} targets")
        data.append((x.to(device), y.to(device)))
    total = sum(len(y) for _, y in data)
    if total == 0:
        raise ValueError("batches hold no samples; pass an iterable of (inputs, targets) with at least one sample")
    return [(x, y, len(y) / total) for x, y in data if len(y)]


def _check_batches(net, loss_fn, data):
    """Inputs the model takes, class labels within its outputs (classification losses, integer targets)."""
    x, y, _ = data[0]
    try:
        with torch.no_grad():
            width = net(x[:256]).shape[-1]  # a few samples: BatchNorm in eval mode, any batch size works
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"the model cannot take the inputs of the batches, of shape {tuple(x.shape[1:])} ({reason})") from error
    for i, (x, y, _) in enumerate(data):
        if loss_fn in CLASSIFICATION_LOSSES or not (y.dtype.is_floating_point or y.dtype.is_complex):
            check_split(TensorSplit(x, y), width, tuple(x.shape[1:]), f"batch {i}")


class _FeatureMajorLinear(nn.Module):
    """``nn.Linear`` computed as ``(W @ x^T)^T`` for 2-D inputs: same values, faster double backward."""

    def __init__(self, linear):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x):
        if x.dim() != 2:
            return F.linear(x, self.weight, self.bias)
        if self.bias is None:
            return (self.weight @ x.t()).t()
        return torch.addmm(self.bias.unsqueeze(1), self.weight, x.t()).t()


def _feature_major(model):
    """A copy of `model` (sharing nothing) whose Linear layers are ``_FeatureMajorLinear``; hooks dropped."""
    net = copy.deepcopy(model)
    for name, module in list(net.named_modules()):
        if type(module) is nn.Linear:
            parent_name, _, attr = name.rpartition(".")
            parent = net.get_submodule(parent_name) if parent_name else net
            if name:
                setattr(parent, attr, _FeatureMajorLinear(module))
            else:
                return model  # the model is itself one Linear: nothing to gain
    return net


def _free_indices(named, mask):
    """name -> flat indices of the free entries (None: all free), after checking the mask."""
    free = {name: None for name, _ in named}
    if mask is None:
        return free
    if not isinstance(mask, dict):
        raise ValueError(f"mask must be None or a dict parameter name -> bool tensor, got {type(mask).__name__}")
    shapes = {name: p.shape for name, p in named}
    for name, m in mask.items():
        if name not in shapes:
            raise ValueError(f"mask names unknown parameter {name!r}; valid names: {', '.join(shapes)}")
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or m.shape != shapes[name]:
            got = f"{m.dtype} {tuple(m.shape)}" if isinstance(m, torch.Tensor) else type(m).__name__
            raise ValueError(f"mask[{name!r}] must be a bool tensor of shape {tuple(shapes[name])}, got {got}")
        free[name] = m.reshape(-1).nonzero().squeeze(1).to(named[0][1].device)
    return free


def _measured(compute):
    """(compute(), bytes of tensors saved for backward while it ran) - an upper estimate."""
    used = 0

    def pack(tensor):
        nonlocal used
        used += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = compute()
    return result, used


def _single_threaded_blas():
    """ARPACK's own vector work is small; a multi-threaded OpenBLAS spin-waits between its
    calls and steals the cores torch needs for the products (2-3x slower on 2 cores)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")
