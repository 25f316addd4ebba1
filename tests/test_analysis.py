"""The facts of a pair (G, 1-S) and the masked plane on the smoke profile, with a temporary run store."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from psputil.experiments import analysis, minima, setups
from psputil.scale import context

RATE = 60.0
SAMPLES = 300


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(setup, context, facts config); one store for the module, so LOBSTER, dense and 1-S train once."""
    s = setups.setup("lenet300-mnist", "smoke")
    ctx = context.make(store=tmp_path_factory.mktemp("store"), device="cpu")
    return s, ctx, minima.FactsConfig(analysis.pair(s, RATE, 0), train_samples=SAMPLES)


@pytest.fixture(scope="module")
def result(world):
    _, ctx, config = world
    return minima.facts(ctx, config)


def direct_loss(model, split):
    """Mean cross-entropy of the model on the whole split in one forward pass (eval mode)."""
    with torch.no_grad():
        return F.cross_entropy(model.eval()(split.images), split.labels).item()


def test_facts_are_computed_once_then_loaded(world, result, monkeypatch):
    s, ctx, config = world
    assert ctx.store.has(minima.FACTS, config, "result")

    def fail(*args, **kwargs):
        raise AssertionError("the facts were computed again instead of loaded")

    monkeypatch.setattr(minima, "_compute", fail)
    again = minima.facts(ctx, config)
    assert again["G"]["eigenvalues"] == result["G"]["eigenvalues"] and again["profile"] == result["profile"]
    assert again["samples"] == SAMPLES and again["test_size"] == 300 and again["seconds"] > 0
    for role in minima.ROLES:
        facts = again[role]
        assert set(minima.CLAIM_KEYS) <= set(facts)
        assert set(facts["seconds"]) == {"scores", "gradient", "hessian", "psp"}
        assert set(facts["dead_neurons"]) == {"relu1", "relu2"}
        assert all(0 <= f["off"] <= 1 and 0 <= f["on"] <= 1 for f in facts["dead_neurons"].values())
        assert facts["activity"]["live"]["relu1"].shape == (300,)
        assert facts["entropy1_live"] >= facts["entropy1"]  # dead neurons add zero to the all-neuron mean
        assert math.isfinite(facts["entropy2_live"]) and facts["psp_l2"] > 0
    pairs = minima.claim_pairs(ctx, s, RATE, [0], train_samples=SAMPLES)  # the same key: loaded
    assert list(pairs) == [0] and pairs[0]["sparsity"] == result["sparsity"]
    assert set(pairs[0]["G"]) == set(minima.CLAIM_KEYS)
    assert pairs[0]["1-S"]["top_eigenvalue"] == result["1-S"]["top_eigenvalue"]


def test_eigenpair_residuals_and_gradient_norm(world, result):
    _, ctx, config = world
    (g, g_mask, _), (one, one_mask, _) = analysis.solutions(ctx, config.pair)
    subset = analysis.train_subset(ctx, config)
    for role, model, mask in (("G", g, g_mask), ("1-S", one, one_mask)):
        facts = result[role]
        assert len(facts["eigenvalues"]) == config.hessian_k == len(facts["residuals"])
        assert facts["eigenvalues"] == sorted(facts["eigenvalues"], reverse=True)
        assert facts["top_eigenvalue"] == facts["eigenvalues"][0]
        assert max(facts["relative_residuals"]) < 1e-3
        # the gradient of the mean loss over the concatenated subset, on the surviving weights
        params = dict(model.named_parameters())
        loss = F.cross_entropy(model.eval()(subset.images), subset.labels)
        grads = torch.autograd.grad(loss, list(params.values()))
        norm = math.sqrt(sum(float((grad.double() * mask[n]).square().sum()) for n, grad in zip(params, grads)))
        assert facts["grad_norm"] == pytest.approx(norm, rel=1e-4)


def test_loss_profile_passes_through_both_solutions(world, result):
    _, ctx, config = world
    (g, _, row), (one, _, info) = analysis.solutions(ctx, config.pair)
    subset = analysis.train_subset(ctx, config)
    assert result["G"]["test_error"] == pytest.approx(row["best"]["test_error"], abs=1e-9)  # as stored by LOBSTER
    assert result["1-S"]["test_error"] == pytest.approx(info["test_error"], abs=1e-9)
    profile = result["profile"]
    a = np.array(profile["a"])
    assert len(a) == 21 and a[0] == -0.5 and a[-1] == 1.5
    for role, model, at in (("G", g, 0.0), ("1-S", one, 1.0)):
        index = int(np.argmin(np.abs(a - at)))
        expected = direct_loss(model, subset)
        assert profile["loss"][index] == pytest.approx(expected, rel=1e-5)
        assert result[role]["train_loss"] == pytest.approx(expected, rel=1e-5)


def test_masked_plane_agrees_with_the_full_one_at_the_solutions(world):
    _, ctx, config = world
    configs = {d: analysis.PlaneConfig(config.pair, points=(5, 3), train_samples=SAMPLES, direction=d)
               for d in analysis.DIRECTIONS}
    planes = {d: analysis.plane(ctx, c) for d, c in configs.items()}
    for direction, plane in planes.items():
        assert plane["direction"] == direction and plane["seconds"]["total"] > 0
        assert plane["oneshot"]["coordinates"] == pytest.approx([1, 0], abs=1e-6)
    for name in analysis.MAP_NAMES:
        for a in (0.0, 1.0):
            full = analysis.at(planes["all"], name, a)
            assert analysis.at(planes["masked"], name, a) == pytest.approx(full, rel=1e-9)
    assert not torch.allclose(planes["masked"]["maps"]["loss"][0], planes["all"]["maps"]["loss"][0])  # b = -1 differs


def test_controls_dead_neurons(world):
    s, ctx, _ = world
    found = minima.control_activity(ctx, s, 0, RATE, [0], train_samples=SAMPLES)
    assert set(found) == {"lottery", "reinit", "random"}
    for kind, entry in found.items():
        assert entry["seeds"] == [0] and len(entry["runs"]) == 1 and entry["seconds"] >= 0
        assert entry["mean"] == entry["runs"][0] and set(entry["mean"]) == {"relu1", "relu2"}


def test_facts_config_checks(world):
    _, _, config = world
    plane = analysis.PlaneConfig(config.pair, train_samples=123, seed=2, eps=1e-4, entropy2_layers=("relu2",))
    made = minima.FactsConfig.from_plane(plane, hessian_k=3)
    got = (made.train_samples, made.seed, made.eps, made.entropy2_layers, made.hessian_k)
    assert got == (123, 2, 1e-4, ("relu2",), 3) and made.pair == config.pair
    with pytest.raises(ValueError, match="misses G"):
        minima.FactsConfig(config.pair, profile_range=(0.1, 1.5))
    with pytest.raises(ValueError, match="analysis.Pair"):
        minima.FactsConfig("lenet300")
    with pytest.raises(ValueError, match="direction"):
        analysis.PlaneConfig(config.pair, direction="sideways")
