"""Top Hessian eigenvalues against the explicit Hessian of tiny networks (float64 oracle)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import numpy as np

from psputil.hessian import HessianOperator, gradient_norm, largest_eigenvalues, top_eigenpairs, top_eigenvalues


def tiny_mlp(seed=0, batchnorm=False):
    torch.manual_seed(seed)
    layers = [nn.Linear(6, 16)] + ([nn.BatchNorm1d(16)] if batchnorm else []) + [nn.Tanh(), nn.Linear(16, 10), nn.ReLU(), nn.Linear(10, 4)]
    return nn.Sequential(*layers)


def data(n=50, seed=1):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 6, generator=g), torch.randint(0, 4, (n,), generator=g)
    return [(x[:13], y[:13]), (x[13:], y[13:])]  # unequal batches: weighting matters


def random_mask(model, keep=0.7, seed=2):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) < keep for n, p in model.named_parameters() if n.endswith("weight")}


def explicit_eigenvalues(model, batches, mask=None):
    """All eigenvalues (descending) of the float64 Hessian of the mean eval-mode loss on the free entries."""
    return torch.linalg.eigvalsh(explicit_hessian(model, batches, mask)).flip(0)


def explicit_hessian(model, batches, mask=None, gradient=False):
    """The float64 Hessian (or gradient) of the mean eval-mode loss, restricted to the free entries."""
    model = copy.deepcopy(model).double().eval()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    x = torch.cat([b[0] for b in batches]).double()
    y = torch.cat([b[1] for b in batches])

    def loss(flat):
        params, offset = {}, 0
        for name, shape in zip(names, shapes):
            params[name] = flat[offset : offset + shape.numel()].view(shape)
            offset += shape.numel()
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    mask = mask or {}
    free = torch.cat([mask.get(n, torch.ones(s, dtype=torch.bool)).reshape(-1) for n, s in zip(names, shapes)])
    if gradient:
        return torch.autograd.functional.jacobian(loss, flat)[free]
    hessian = torch.autograd.functional.hessian(loss, flat)
    return hessian[free][:, free]


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("graph_memory", [2**30, 0])  # graphs kept / recomputed at every product
def test_matches_explicit_hessian(masked, graph_memory):
    model = tiny_mlp()
    mask = random_mask(model) if masked else None
    ours = top_eigenvalues(model, F.cross_entropy, data(), k=5, mask=mask, graph_memory=graph_memory)
    reference = explicit_eigenvalues(model, data(), mask)[:5]
    assert ours == sorted(ours, reverse=True)
    torch.testing.assert_close(torch.tensor(ours, dtype=torch.float64), reference, rtol=1e-4, atol=0)


def test_operator_is_the_masked_hessian():
    """Every column of the operator against the explicit masked Hessian (all of it, not only the top)."""
    model = tiny_mlp()
    mask = random_mask(model)
    operator = HessianOperator(model, F.cross_entropy, data(), mask)
    dense = torch.tensor(operator @ torch.eye(operator.num_free, dtype=torch.float64).numpy())
    assert operator.hvps == operator.num_free
    torch.testing.assert_close(torch.linalg.eigvalsh((dense + dense.T) / 2).flip(0), explicit_eigenvalues(model, data(), mask), atol=1e-5, rtol=1e-4)


def test_batchnorm_uses_eval_mode_and_restores_modes():
    model = tiny_mlp(batchnorm=True)
    with torch.no_grad():  # give the BatchNorm non-trivial running statistics
        model.train()(torch.randn(64, 6) * 3 + 1)
    model[3].eval()  # a submodule in its own mode must keep it
    before = copy.deepcopy(model.state_dict())
    ours = top_eigenvalues(model, F.cross_entropy, data(), k=3)
    reference = explicit_eigenvalues(model, data())[:3]
    torch.testing.assert_close(torch.tensor(ours, dtype=torch.float64), reference, rtol=1e-4, atol=0)
    assert model.training and not model[3].training and model[1].training
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert all(p.grad is None for p in model.parameters())


def test_seeded_and_deterministic():
    model = tiny_mlp()
    first = top_eigenvalues(model, F.cross_entropy, data(), k=4, seed=3)
    assert first == top_eigenvalues(model, F.cross_entropy, data(), k=4, seed=3)


def test_generator_batches_and_operator_reuse():
    model = tiny_mlp()
    operator = HessianOperator(model, F.cross_entropy, (b for b in data()))  # read once
    values = largest_eigenvalues(operator, k=2)
    again = largest_eigenvalues(operator, k=2)
    torch.testing.assert_close(torch.tensor(values), torch.tensor(again), rtol=1e-6, atol=0)


def test_bad_input():
    model = tiny_mlp()
    n = sum(p.numel() for p in model.parameters())
    for k in (0, n, 2.5):
        with pytest.raises(ValueError, match="k must be"):
            top_eigenvalues(model, F.cross_entropy, data(), k=k)
    with pytest.raises(ValueError, match="unknown parameter"):
        top_eigenvalues(model, F.cross_entropy, data(), mask={"nope": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="bool tensor of shape"):
        top_eigenvalues(model, F.cross_entropy, data(), mask={"0.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="bool tensor of shape"):
        top_eigenvalues(model, F.cross_entropy, data(), mask={"0.weight": torch.ones(16, 6)})
    only_five = {n: torch.zeros(p.shape, dtype=torch.bool) for n, p in model.named_parameters()}
    only_five["0.bias"][:5] = True
    with pytest.raises(ValueError, match="1 <= k < 5"):
        top_eigenvalues(model, F.cross_entropy, data(), k=5, mask=only_five)
    with pytest.raises(ValueError, match="no samples"):
        top_eigenvalues(model, F.cross_entropy, [], k=2)


class WithSpare(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.spare = net, nn.Linear(2, 2)  # spare: registered, never used

    def forward(self, x):
        return self.net(x)


def test_unused_parameter_is_a_zero_block():
    model = tiny_mlp()
    values = top_eigenvalues(WithSpare(model), F.cross_entropy, data(), k=3)
    torch.testing.assert_close(torch.tensor(values), torch.tensor(top_eigenvalues(model, F.cross_entropy, data(), k=3)), rtol=1e-5, atol=0)


@pytest.mark.parametrize("masked", [False, True])
def test_eigenpairs_and_residuals(masked):
    model = tiny_mlp()
    mask = random_mask(model) if masked else None
    pairs = top_eigenpairs(model, F.cross_entropy, data(), k=3, mask=mask, tol=1e-8)
    hessian = explicit_hessian(model, data(), mask)
    values, vectors = torch.linalg.eigh(hessian)
    torch.testing.assert_close(torch.tensor(pairs.values, dtype=torch.float64), values.flip(0)[:3], rtol=1e-4, atol=0)
    ours = torch.tensor(pairs.vectors)
    assert ours.shape == (hessian.shape[0], 3)
    for i in range(3):
        overlap = abs(float(ours[:, i] @ vectors[:, -1 - i]))
        assert overlap == pytest.approx(1.0, abs=1e-4)  # the same eigenvector up to sign
        explicit = float(torch.linalg.norm(hessian @ ours[:, i] - pairs.values[i] * ours[:, i]))
        assert pairs.residuals[i] == pytest.approx(explicit, abs=1e-5)  # float32 products: ~1e-6 absolute
        assert pairs.residuals[i] < 1e-4 * abs(pairs.values[i])
    assert pairs.hvps > 3


@pytest.mark.parametrize("masked", [False, True])
def test_gradient_norm(masked):
    model = tiny_mlp()
    mask = random_mask(model) if masked else None
    expected = float(torch.linalg.norm(explicit_hessian(model, data(), mask, gradient=True)))
    assert gradient_norm(model, F.cross_entropy, data(), mask=mask) == pytest.approx(expected, rel=1e-5)


def test_feature_major_products_match():
    model = tiny_mlp()
    v = np.random.default_rng(0).standard_normal(sum(p.numel() for p in model.parameters()))
    plain = HessianOperator(model, F.cross_entropy, data(), feature_major=False) @ v
    major = HessianOperator(model, F.cross_entropy, data()) @ v
    np.testing.assert_allclose(major, plain, rtol=1e-5, atol=1e-6)


def test_bad_data_and_arguments():
    model = tiny_mlp()
    x, y = data()[0]
    cases = [
        ([(x, y.clone().fill_(4))], "must lie in \\[0, 4\\)"),  # 4 outputs: labels 0..3
        ([(x, y.float())], "integer class indices"),
        ([(torch.randn(13, 5), y)], "cannot take the inputs"),
        ([(x, y[:5])], "13 inputs but 5 targets"),
        ([x], "pair of tensors"),
        (5, "iterable"),
    ]
    for batches, message in cases:
        with pytest.raises(ValueError, match=message):
            top_eigenvalues(model, F.cross_entropy, batches, k=2)
    with pytest.raises(ValueError, match="labels"):
        gradient_norm(model, F.cross_entropy, [(x, y + 10)])
    for kwargs, message in [({"seed": -1}, "seed"), ({"tol": float("nan")}, "tol"), ({"ncv": 2, "k": 2}, "ncv"),
                            ({"maxiter": 0}, "maxiter")]:
        with pytest.raises(ValueError, match=message):
            top_eigenvalues(model, F.cross_entropy, data(), **{"k": 2, **kwargs})
    with pytest.raises(ValueError, match="loss_fn"):
        top_eigenvalues(model, "cross_entropy", data(), k=2)
    # a regression loss with float targets is not a classification: no label check
    assert len(top_eigenvalues(model, lambda out, t: ((out - t) ** 2).mean(), [(x, torch.randn(13, 4))], k=2)) == 2
