"""LOBSTER: the shrinkage formula, the bisection, and a short real run on LeNet-300 / mnist-5k."""

import random

import pytest
import torch
from torch import nn

from psputil import data, models, pruning, train

from psputil.pruning import lobster

from psputil.data import DataConfig, DataSplits, TensorSplit


def test_shrinkage_matches_the_formula_by_hand():
    p = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0])
    g = torch.tensor([0.5, -0.2, 2.0, 0.0, 0.3])
    bias, bias_grad = torch.tensor([4.0]), torch.tensor([-0.75])
    lobster.shrink_([p, bias], [g, bias_grad], lam=0.1)
    # p - 0.1 * p * relu(1 - |g|), written out
    expected = torch.tensor([1 - 0.1 * 1 * 0.5, -2 + 0.1 * 2 * 0.8, 0.5, 3 - 0.1 * 3 * 1.0, 0.0])
    torch.testing.assert_close(p, expected)
    torch.testing.assert_close(bias, torch.tensor([4 - 0.1 * 4 * 0.25]))


def test_shrinkage_matches_the_formula_on_random_tensors():
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(7, 5, generator=g), torch.randn(5, generator=g)]
    grads = [2 * torch.randn(7, 5, generator=g), torch.randn(5, generator=g)]
    expected = [p - 1e-2 * p * torch.relu(1 - gr.abs()) for p, gr in zip(params, grads)]
    lobster.shrink_(params, grads, 1e-2)
    for got, want in zip(params, expected):
        torch.testing.assert_close(got, want)


def test_largest_accepted_against_brute_force():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randrange(0, 50)
        answer = rng.randrange(0, n + 1)
        calls = []
        accept = lambda k: calls.append(k) or k <= answer
        assert lobster.largest_accepted(n, accept) == answer
        assert 0 not in calls and len(calls) <= n.bit_length() + 1


def test_bisection_finds_the_largest_threshold_within_tolerance():
    layer = nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(1.0, 13.0).view(3, 4) * torch.tensor([1.0, -1.0, 1.0, -1.0]))
        layer.bias.copy_(torch.tensor([20.0, 30.0, 40.0]))
    full = sum(p.abs().sum() for p in layer.parameters()).item()
    # Loss = 1 + total magnitude removed. Removing 1+2+3 = 6 stays under 8; adding 4 (= 10) does not.
    loss = lambda m: 1 + full - sum(p.abs().sum() for p in m.parameters()).item()
    threshold, mask, count = lobster.bisect_threshold(layer, pruning.full_mask(layer), loss, limit=8.0)
    assert (threshold, count) == (3.0, 3)
    torch.testing.assert_close(mask["weight"], layer.weight.abs() > 3)
    assert mask["bias"].all()
    assert layer.weight.abs().min() == 1.0  # the model is left as it was
    # Nothing can go: threshold 0, same mask.
    threshold, same, count = lobster.bisect_threshold(layer, mask, loss, limit=1.5)
    assert (threshold, count) == (0.0, 0) and all(torch.equal(same[n], mask[n]) for n in mask)


def test_bad_hyperparameters_raise_value_error():
    with pytest.raises(ValueError, match="lam"):
        lobster.LobsterConfig(lam=-1e-4)
    with pytest.raises(ValueError, match=r"target .*\(0, 100\)"):
        lobster.LobsterConfig(target=100.0)
    with pytest.raises(ValueError, match="pwe"):
        lobster.LobsterConfig(pwe=0)
    model = models.build("lenet300")
    with pytest.raises(ValueError, match="valid"):
        lobster.run(model, None, lobster.LobsterConfig(), train.TrainConfig(), mask={"fc1.weight": torch.ones(300, 784, dtype=torch.bool)})
    with pytest.raises(ValueError, match="epochs >= 1"):
        lobster.run(model, None, lobster.LobsterConfig(), train.TrainConfig(epochs=0))
    with pytest.raises(ValueError, match="LobsterConfig"):
        lobster.run(model, None, {"lam": 1e-4}, train.TrainConfig())


@pytest.mark.parametrize("nesterov", [False, True])
def test_pruned_weights_stay_zero_under_shrinkage_momentum_and_weight_decay(nesterov):
    g = torch.Generator().manual_seed(0)
    split = lambda m: TensorSplit(torch.randn(m, 1, 28, 28, generator=g), torch.randint(0, 10, (m,), generator=g))
    splits = DataSplits(DataConfig(), split(64), split(32), split(32), 10, (1, 28, 28))
    model = models.build("lenet300")
    mask = pruning.magnitude_mask(model, 70.0)
    schedule = train.TrainConfig(epochs=3, batch_size=16, lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=1e-2)
    result = lobster.run(model, splits, lobster.LobsterConfig(lam=1e-2, pwe=100), schedule, device="cpu", mask=mask)
    assert len(result["levels"]) == 1 and result["stopped"] == "epoch budget"
    state = result["states"][0]["state"]
    assert all(torch.equal(result["states"][0]["mask"][n], mask[n]) for n in mask)
    for name, keep in mask.items():
        assert torch.all(state[name][~keep] == 0), name
        assert (state[name][keep] != 0).all(), name


@pytest.fixture
def one_thread():
    """One intra-op thread: on a small shared CPU, two threads contending make this run 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_short_run_on_lenet300_reaches_80_percent_near_the_dense_error(one_thread):
    splits = data.load("mnist-5k")
    model = models.build("lenet300", seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = lobster.LobsterConfig(lam=1e-3, pwe=5, twt=0.05, target=80.0)
    schedule = train.TrainConfig(epochs=200, lr=0.1, schedule="plateau")
    result = lobster.run(model, splits, config, schedule, device="cpu")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # caller's model untouched
    assert result["stopped"] == "target sparsity"
    dense, top = result["levels"][0], result["levels"][-1]
    assert dense["sparsity"] == 0.0 and top["sparsity"] >= 80.0
    assert top["best"]["test_error"] <= dense["best"]["test_error"] + 1.5, (top["best"], dense["best"])
    assert result["history"][-1]["epoch"] > top["start_epoch"] + config.pwe  # trained on at the target level
    assert lobster.level_at(result["levels"], 80.0) == len(result["levels"]) - 1
    assert lobster.level_at(result["levels"], 0) == 0
