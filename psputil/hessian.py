"""Curvature (Fig. 2b): the top eigenvalues of the training-loss Hessian.

Exact Hessian-vector products (Pearlmutter's trick as double backward) of the mean
loss over all given samples, restricted to the free (unpruned) weights, feed
ARPACK's Lanczos solver (``scipy.sparse.linalg.eigsh``) through a
``LinearOperator``. The solver works in float64; the products in the model's dtype.

Speed: when the first-order gradient graphs of all batches fit in
``graph_memory`` bytes (estimated on the first batch), they are built once and
each product is a single extra backward pass; otherwise every product recomputes
the forward and the gradient batch by batch (memory of one batch at a time).
"""

import contextlib

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch.func import functional_call

from psputil.train import eval_mode

GRAPH_MEMORY = 2 * 2**30  # bytes of retained gradient graphs allowed by default


class HessianOperator(LinearOperator):
    """The (masked) Hessian of the mean loss as a float64 ``LinearOperator``.

    ``hvps`` counts the Hessian-vector products done so far. The model is in eval
    mode whenever it runs and goes back to its own mode after; it is never changed.
    """

    def __init__(self, model, loss_fn, batches, mask=None, graph_memory=GRAPH_MEMORY):
        """Args: as ``top_eigenvalues``; the batches are read at the first product."""
        named = list(model.named_parameters())
        if not named:
            raise ValueError(f"{type(model).__name__} has no parameters")
        self.model, self.loss_fn = model, loss_fn
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
        """Move the data to the device once; keep the gradient graphs when they fit."""
        if self._data is not None:
            return
        data = [(x.to(self.device), y.to(self.device)) for x, y in self._batches]
        total = sum(len(y) for _, y in data)
        if total == 0:
            raise ValueError("batches hold no samples; pass an iterable of (inputs, targets) with at least one sample")
        self._batches = None
        self._data = [(x, y, len(y) / total) for x, y in data]
        with eval_mode(self.model):
            first, used = _measured(lambda: self._gradient(*self._data[0], create_graph=True))
            if used * total / max(len(self._data[0][1]), 1) <= self._graph_memory:
                self._graphs = [first] + [self._gradient(*b, create_graph=True) for b in self._data[1:]]

    def _gradient(self, x, y, weight, create_graph):
        """(leaf parameters, weight * gradient of the batch mean loss)."""
        leaves = {n: p.detach().requires_grad_(True) for n, p in self.model.named_parameters()}
        with torch.enable_grad():
            outputs = functional_call(self.model, leaves, (x,))
            loss = self.loss_fn(outputs, y) * weight
            grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=create_graph, allow_unused=True)
        return list(leaves.values()), grads

    def _matvec(self, x):
        self._prepare()
        vector = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(-1), device=self.device)
        vector = self._scatter(vector.to(self.param_dtype))
        total = [torch.zeros(s, dtype=self.param_dtype, device=self.device) for s in self.shapes]
        with eval_mode(self.model):
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
    n = operator.shape[0]
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k < n:
        raise ValueError(f"k must be an integer with 1 <= k < {n} (the number of free parameters), got {k!r}")
    start = np.random.default_rng(seed).standard_normal(n)
    with _single_threaded_blas():
        values = eigsh(operator, k=int(k), which="LA", v0=start, tol=tol, maxiter=maxiter, ncv=ncv, return_eigenvectors=False)
    return sorted((float(v) for v in values), reverse=True)


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
        seed: seed of the Lanczos start vector.
        tol: relative accuracy bound, see ``largest_eigenvalues`` (float32 products: >= ~1e-7).
        maxiter, ncv: ARPACK's iteration limit and Lanczos basis size (None: scipy's defaults).
        graph_memory: bytes of gradient graphs that may be kept between products.

    Returns:
        The k largest (algebraic) eigenvalues as floats, in descending order.
    """
    operator = HessianOperator(model, loss_fn, batches, mask, graph_memory)
    return largest_eigenvalues(operator, k, seed, tol, maxiter, ncv)


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
