"""The loss plane: geometry of the directions, and the batched grid against direct evaluation."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from psputil import landscape, models
from psputil.psp.activations import capture_psps
from psputil.data import TensorSplit
from psputil.metrics import Error, Loss, Metric


def flat(tensors):
    return torch.cat([t.reshape(-1).double() for t in tensors.values()])


def pair(name, **kwargs):
    """Two different models of one architecture, in training mode (the caller's usual state)."""
    return models.build(name, seed=0, **kwargs), models.build(name, seed=1, **kwargs)


def images(n, shape=(1, 28, 28), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)


def direct(model, batches):
    """(mean loss, error %) of one model in eval mode, straight from its forward pass."""
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        outs = [(model(x), y) for x, y in batches]
    n = sum(len(y) for _, y in outs)
    loss = sum(F.cross_entropy(o, y, reduction="sum").item() for o, y in outs) / n
    return loss, 100.0 * sum((o.argmax(1) != y).sum().item() for o, y in outs) / n


def loop(plane, model, a_values, b_values, batches):
    """The per-point baseline: load_state_dict at every grid point."""
    model = copy.deepcopy(model).eval()
    out = {"loss": np.zeros((len(b_values), len(a_values))), "error": np.zeros((len(b_values), len(a_values)))}
    for i, b in enumerate(b_values):
        for j, a in enumerate(a_values):
            model.load_state_dict(plane.state_dict_at(a, b))
            out["loss"][i, j], out["error"][i, j] = direct(model, batches)
    return out


def tiny_resnet():
    """ResNet-32's blocks with one block per stage (ResNet-8), BatchNorm statistics set by a training pass."""
    built = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = models.ResNet32(blocks_per_stage=1)
        with torch.no_grad():
            model.train()(images(32, (3, 32, 32), seed=seed)[0] * (1 + seed))
        built.append(model)
    return built


def test_directions():
    g, s = pair("lenet300")
    plane = landscape.plane_through(g, s, seed=3)
    u, v = flat(plane.u), flat(plane.v)
    difference = torch.cat([(ps - pg).reshape(-1).double() for pg, ps in zip(g.parameters(), s.parameters())])
    torch.testing.assert_close(u, difference, rtol=1e-6, atol=1e-7)
    assert abs(plane.u_norm - difference.norm().item()) < 1e-6 * plane.u_norm
    assert abs(torch.dot(u, v).item()) < 1e-6 * u.norm().item()
    assert abs(v.norm().item() - 1) < 1e-6
    torch.testing.assert_close(flat(landscape.plane_through(g, s, seed=3).v), v, rtol=0, atol=0)
    assert not torch.equal(flat(landscape.plane_through(g, s, seed=4).v), v)
    assert plane.coordinates(g) == pytest.approx((0, 0), abs=1e-6)
    assert plane.coordinates(s) == pytest.approx((1, 0), abs=1e-6)
    probe = copy.deepcopy(g)
    probe.load_state_dict(plane.state_dict_at(0.3, -0.7))
    assert plane.coordinates(probe) == pytest.approx((0.3, -0.7), abs=1e-5)


@pytest.mark.parametrize("name", ["lenet300", "lenet5"])
def test_grid_matches_models_and_loop(name):
    g, s = pair(name)
    before = [copy.deepcopy(m.state_dict()) for m in (g, s)]
    x, y = images(60)
    batches = [(x[:25], y[:25]), (x[25:], y[25:])]
    plane = landscape.plane_through(g, s, seed=0)
    a_values, b_values = [-0.5, 0.0, 1.0, 1.5], [0.0, 0.8, -0.4]
    expected = loop(plane, g, a_values, b_values, batches)
    for factor in (True, False):
        maps = landscape.evaluate_grid(plane, a_values, b_values, batches, points_per_pass=5, factor_input_layers=factor, progress=False)
        assert set(maps) == {"loss", "error"} and maps["loss"].shape == (3, 4)
        np.testing.assert_allclose(maps["loss"], expected["loss"], rtol=1e-5)
        np.testing.assert_allclose(maps["error"], expected["error"], atol=1e-9)
    for model, (a, b) in ((g, (0.0, 0.0)), (s, (1.0, 0.0))):
        loss, error = direct(model, batches)
        i, j = b_values.index(b), a_values.index(a)
        assert abs(maps["loss"][i, j] - loss) <= 1e-5 * loss and maps["error"][i, j] == error
    for model, state in zip((g, s), before):  # inputs unchanged, still in training mode
        assert model.training
        for key, tensor in model.state_dict().items():
            assert torch.equal(tensor, state[key]), key


def test_batchnorm_model():
    g, s = tiny_resnet()
    x, y = images(24, (3, 32, 32), seed=5)
    split = TensorSplit(x, y)
    plane = landscape.plane_through(g, s, seed=1)
    a_values, b_values = [0.0, 1.0, 2.5], [0.0, 0.5]
    maps = landscape.evaluate_grid(plane, a_values, b_values, split, batch_size=10, points_per_pass=4, progress=False)
    batches = list(split.batches(10))
    expected = loop(plane, g, a_values, b_values, batches)
    np.testing.assert_allclose(maps["loss"], expected["loss"], rtol=1e-5)
    np.testing.assert_allclose(maps["loss"][0, :2], [direct(g, batches)[0], direct(s, batches)[0]], rtol=1e-5)
    # running variances: exact at the ends, positive beyond them (log-linear)
    for n, var_g in g.named_buffers():
        if n.endswith("running_var"):
            torch.testing.assert_close(plane.state_dict_at(1.0, 0.3)[n], dict(s.named_buffers())[n], rtol=1e-5, atol=0)
            torch.testing.assert_close(plane.state_dict_at(0.0, 0.3)[n], var_g, rtol=1e-6, atol=0)
            assert (plane.state_dict_at(-3.0, 0.0)[n] > 0).all()


class PSPSum(Metric):
    """Mean over samples of the sum of all PSPs: checks what the evaluator hands to PSP metrics."""

    name, needs_psps = "psp_sum", True

    def init(self, num_points, device):
        return {"sum": torch.zeros(num_points, dtype=torch.float64), "n": 0, "shapes": None}

    def update(self, state, outputs, targets, psps):
        state["shapes"] = {k: tuple(v.shape) for k, v in psps.items()}
        state["sum"] += sum(v.flatten(2).sum(2).double() for v in psps.values()).sum(1)
        state["n"] += len(targets)
        return state

    def result(self, state):
        return state["sum"] / state["n"]


def test_psps_reach_metrics():
    g, s = pair("lenet5")
    x, y = images(12)
    plane = landscape.plane_through(g, s, seed=0)
    metric = PSPSum()
    original_update = metric.update
    seen = []
    metric.update = lambda state, o, t, p: seen.append({k: tuple(v.shape) for k, v in p.items()}) or original_update(state, o, t, p)
    maps = landscape.evaluate_grid(plane, [0.0, 0.5], [0.2], [(x, y)], metrics=[Loss(), metric], points_per_pass=2, progress=False)
    assert seen[0] == {"relu1": (2, 12, 20, 24, 24), "relu2": (2, 12, 50, 8, 8), "relu3": (2, 12, 500)}
    model = copy.deepcopy(g).eval()
    for j, a in enumerate([0.0, 0.5]):
        model.load_state_dict(plane.state_dict_at(a, 0.2))
        sink = {}
        with torch.no_grad(), capture_psps(model, sink):
            model(x)
        expected = sum(v.sum().item() for v in sink.values()) / len(x)
        assert maps["psp_sum"][0, j] == pytest.approx(expected, rel=1e-4)


def pruned_pair(name="lenet300"):
    """Two pruned models of one architecture and their masks (random, seeded, ~70 % pruned each)."""
    out = []
    for model, seed in zip(pair(name), (5, 6)):
        g = torch.Generator().manual_seed(seed)
        mask = {n: torch.rand(p.shape, generator=g) > 0.7 for n, p in model.named_parameters()}
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.mul_(mask[n])
        out.append((model, mask))
    return out


def test_masked_direction_stays_on_the_surviving_weights():
    (g, g_mask), (s, s_mask) = pruned_pair()
    union = landscape.union_mask(g_mask, s_mask)
    assert all(torch.equal(union[n], g_mask[n] | s_mask[n]) for n in union)
    plane = landscape.plane_through(g, s, seed=3, mask=union)
    full = landscape.plane_through(g, s, seed=3)
    assert plane.masked and not full.masked
    u, v = flat(plane.u), flat(plane.v)
    outside = ~torch.cat([union[n].reshape(-1) for n in plane.v])
    assert outside.sum() > 0 and v[outside].abs().max().item() == 0.0
    assert flat(full.v)[outside].abs().max().item() > 0  # the full plane moves pruned weights
    assert abs(torch.dot(u, v).item()) < 1e-6 * u.norm().item()
    assert abs(v.norm().item() - 1) < 1e-6
    torch.testing.assert_close(u, flat(full.u), rtol=0, atol=0)
    assert plane.coordinates(g) == pytest.approx((0, 0), abs=1e-6)
    assert plane.coordinates(s) == pytest.approx((1, 0), abs=1e-6)
    for a, b in ((0.3, -0.7), (1.4, 0.9), (-0.5, 1.0)):  # no point revives a weight both solutions pruned
        params = plane.parameters_at(a, b)
        assert all(params[n][~union[n]].abs().max().item() == 0.0 for n in union)
    torch.testing.assert_close(flat(landscape.plane_through(g, s, seed=3, mask=union).v), v, rtol=0, atol=0)


def test_masked_direction_with_a_partial_mask_and_bad_masks():
    (g, g_mask), (s, s_mask) = pruned_pair()
    only_fc1 = {"fc1.weight": g_mask["fc1.weight"]}  # names left out are entirely free
    plane = landscape.plane_through(g, s, seed=1, mask=only_fc1)
    assert plane.v["fc1.weight"][~only_fc1["fc1.weight"]].abs().max().item() == 0.0
    assert plane.v["fc2.weight"].count_nonzero() == plane.v["fc2.weight"].numel()
    u, v = flat(plane.u), flat(plane.v)
    assert abs(torch.dot(u, v).item()) < 1e-6 * u.norm().item()  # u moves entries outside the mask: still orthogonal
    with pytest.raises(ValueError, match="unknown parameter"):
        landscape.plane_through(g, s, mask={"fc9.weight": g_mask["fc1.weight"]})
    with pytest.raises(ValueError, match="bool tensor of shape"):
        landscape.plane_through(g, s, mask={"fc1.weight": g_mask["fc1.weight"].float()})
    with pytest.raises(ValueError, match="dict"):
        landscape.plane_through(g, s, mask=[g_mask])
    nothing = {n: torch.zeros_like(m) for n, m in g_mask.items()}
    with pytest.raises(ValueError, match="no direction orthogonal"):
        landscape.plane_through(g, s, mask=nothing)


def test_masked_plane_grid_at_the_solutions_equals_the_models():
    (g, g_mask), (s, s_mask) = pruned_pair()
    x, y = images(40)
    batches = [(x, y)]
    plane = landscape.plane_through(g, s, seed=0, mask=landscape.union_mask(g_mask, s_mask))
    maps = landscape.evaluate_grid(plane, [0.0, 1.0], [0.0, 0.5], batches, progress=False)
    for model, j in ((g, 0), (s, 1)):
        loss, error = direct(model, batches)
        assert abs(maps["loss"][0, j] - loss) <= 1e-5 * loss and maps["error"][0, j] == error


def test_bad_input():
    g, s = pair("lenet300")
    x, y = images(4)
    with pytest.raises(ValueError, match="same architecture|one architecture"):
        landscape.plane_through(g, models.build("lenet5"))
    with pytest.raises(ValueError, match="names and shapes"):
        landscape.plane_through(g, models.build("lenet300", num_classes=5))
    with pytest.raises(ValueError, match="identical"):
        landscape.plane_through(g, copy.deepcopy(g))
    plane = landscape.plane_through(g, s)
    with pytest.raises(ValueError, match="a_values must be a non-empty"):
        landscape.evaluate_grid(plane, [], [0.0], [(x, y)])
    with pytest.raises(ValueError, match="b_values must be a non-empty"):
        landscape.evaluate_grid(plane, [0.0], [[0.0, 1.0]], [(x, y)])
    with pytest.raises(ValueError, match="re-iterable"):
        landscape.evaluate_grid(plane, [0.0], [0.0], iter([(x, y)]))
    with pytest.raises(ValueError, match="distinct names"):
        landscape.evaluate_grid(plane, [0.0], [0.0], [(x, y)], metrics=[Loss(), Loss()])
    with pytest.raises(ValueError, match="points_per_pass"):
        landscape.evaluate_grid(plane, [0.0], [0.0], [(x, y)], points_per_pass=0)
    with pytest.raises(ValueError, match="at least one batch"):
        landscape.evaluate_grid(plane, [0.0], [0.0], [])
    assert Error().name == "error"
