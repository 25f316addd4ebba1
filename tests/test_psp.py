"""PSP L2 norm and PSP-entropy against brute-force loops over neurons, pairs, classes and samples."""

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from psputil import psp

from psputil.psp import counts as psp_counts

NUM_CLASSES = 4


class TinyNet(nn.Module):
    """conv 2@3x3 on 1x5x5 (18 PSPs), fc 6 (two neurons forced always on / off), fc 4."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 2, 3)
        self.relu1 = nn.ReLU()
        self.fc1 = nn.Linear(18, 6)
        self.relu2 = nn.ReLU()
        self.fc2 = nn.Linear(6, NUM_CLASSES)
        with torch.no_grad():
            self.fc1.weight[4:] = 0.0
            self.fc1.bias[4], self.fc1.bias[5] = 100.0, -100.0  # always active, always silent

    def forward(self, x):
        return self.fc2(self.relu2(self.fc1(self.relu1(self.conv(x)).flatten(1))))

    def psps(self, x):
        """The ReLU inputs, computed directly (no hooks), flattened to (B, N)."""
        z1 = self.conv(x)
        z2 = self.fc1(torch.relu(z1).flatten(1))
        return {"relu1": z1.flatten(1), "relu2": z2}


@pytest.fixture(scope="module")
def setup():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(300, 1, 5, 5, generator=generator)
    y = torch.randint(0, NUM_CLASSES, (300,), generator=generator)
    return TinyNet(), x, y


def batches(x, y, size):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


def clamped_plogp(p, eps):
    p = min(max(p, eps), 1 - eps)
    return 0.0 if p == 0 else -p * math.log2(p)


def brute_states(z, y, neurons, eps):
    """sum_c of the entropy of the joint state of `neurons`, by counting samples one by one."""
    total = 0.0
    for c in range(NUM_CLASSES):
        counts, n_c = {}, 0
        for s in range(len(y)):
            if y[s] != c:
                continue
            n_c += 1
            state = tuple(z[s][i] > 0 for i in neurons)
            counts[state] = counts.get(state, 0) + 1
        for state in itertools.product((False, True), repeat=len(neurons)):
            total += clamped_plogp(counts.get(state, 0) / n_c, eps)
    return total


def brute_force(model, x, y, order, eps):
    """Per layer: per-neuron values (orders 1, 2) and the mean over neurons / pairs / subsets."""
    with torch.no_grad():
        zs = {name: z.tolist() for name, z in model.psps(x).items()}
    labels = y.tolist()
    out = {}
    for name, z in zs.items():
        n = len(z[0])
        if order == 1:
            values = [brute_states(z, labels, (i,), eps) for i in range(n)]
            out[name] = (values, sum(values) / n)
        else:
            table = {s: brute_states(z, labels, s, eps) for s in itertools.combinations(range(n), order)}
            mean = sum(table.values()) / len(table)
            if order == 2:
                per_neuron = [sum(table[tuple(sorted((i, j)))] for j in range(n) if j != i) / (n - 1) for i in range(n)]
                out[name] = (per_neuron, mean, len(table))
            else:
                out[name] = (None, mean, len(table))
    return out


@pytest.mark.parametrize("eps", [0.0, 1e-4])
def test_first_order_matches_brute_force(setup, eps):
    model, x, y = setup
    result = psp.entropy(model, batches(x, y, 64), order=1, num_classes=NUM_CLASSES, eps=eps)
    expected = brute_force(model, x, y, 1, eps)
    for name, (per_neuron, mean) in expected.items():
        assert result.per_neuron[name].tolist() == pytest.approx(per_neuron, abs=1e-6)
        assert result.per_layer[name] == pytest.approx(mean, abs=1e-6)
        assert result.per_class[name].shape == (len(per_neuron), NUM_CLASSES)
    all_neurons = [h for per_neuron, _ in expected.values() for h in per_neuron]
    assert result.total == pytest.approx(sum(all_neurons) / len(all_neurons), abs=1e-6)


@pytest.mark.parametrize("eps", [0.0, 1e-4])
def test_second_order_matches_brute_force(setup, eps):
    model, x, y = setup
    result = psp.entropy(model, batches(x, y, 64), order=2, num_classes=NUM_CLASSES, eps=eps)
    expected = brute_force(model, x, y, 2, eps)
    for name, (per_neuron, mean, _) in expected.items():
        assert result.per_neuron[name].tolist() == pytest.approx(per_neuron, abs=1e-6)
        assert result.per_layer[name] == pytest.approx(mean, abs=1e-6)
    pairs = sum(p for _, _, p in expected.values())
    total = sum(mean * p for _, mean, p in expected.values()) / pairs
    assert result.total == pytest.approx(total, abs=1e-6)


def test_eps_reproduces_authors_clamped_formula(setup):
    model, x, y = setup
    result = psp.entropy(model, batches(x, y, 100), order=1, num_classes=NUM_CLASSES, eps=1e-4)
    z = model.psps(x)["relu2"].detach()
    for c in range(NUM_CLASSES):
        mask = (y == c).float()[:, None]
        p = (((z > 0) * mask).sum(0) / mask.sum()).clamp(1e-4, 1 - 1e-4)
        q = (((z <= 0) * mask).sum(0) / mask.sum()).clamp(1e-4, 1 - 1e-4)
        authors = -(p * torch.log2(p) + q * torch.log2(q))
        assert torch.allclose(result.per_class["relu2"][:, c].float(), authors, atol=1e-6)


def test_blocked_equals_unblocked_and_streaming_equals_one_batch(setup):
    model, x, y = setup
    whole = psp.entropy(model, batches(x, y, 300), order=2, num_classes=NUM_CLASSES, block_size=1024)
    blocked = psp.entropy(model, batches(x, y, 7), order=2, num_classes=NUM_CLASSES, block_size=5)
    assert blocked.total == pytest.approx(whole.total, abs=1e-12)
    for name in whole.per_class:
        assert torch.allclose(blocked.per_class[name], whole.per_class[name], atol=1e-12)
    first_small = psp.entropy(model, batches(x, y, 7), num_classes=NUM_CLASSES)
    first_whole = psp.entropy(model, batches(x, y, 300), num_classes=NUM_CLASSES)
    assert first_small.total == pytest.approx(first_whole.total, abs=1e-12)


def test_constant_neurons_have_zero_entropy(setup):
    model, x, y = setup
    first = psp.entropy(model, batches(x, y, 100), num_classes=NUM_CLASSES)
    assert first.per_class["relu2"][4:].abs().max().item() == 0.0  # always active, always silent
    assert first.per_neuron["relu2"][:4].min() > 0


def test_sampled_third_order_within_three_standard_errors(setup):
    model, x, y = setup
    exact = brute_force(model, x, y, 3, 0.0)["relu1"][1]
    result = psp.entropy(model, batches(x, y, 100), order=3, num_classes=NUM_CLASSES, layers=["relu1"], samples=400, seed=3)
    assert result.samples == {"relu1": 400}
    assert result.stderr > 0
    assert abs(result.total - exact) < 3 * result.stderr
    again = psp.entropy(model, batches(x, y, 50), order=3, num_classes=NUM_CLASSES, layers=["relu1"], samples=400, seed=3)
    assert again.total == result.total  # seeded


def test_hooks_removed_and_model_unchanged(setup):
    model, x, y = setup
    model.train()
    before = copy.deepcopy(model.state_dict())
    psp.entropy(model, batches(x, y, 100), order=2, num_classes=NUM_CLASSES)
    psp.l2(model, batches(x, y, 100))

    def failing():
        yield x[:10], y[:10]
        raise RuntimeError("data loader broke")

    with pytest.raises(RuntimeError):
        psp.entropy(model, failing(), num_classes=NUM_CLASSES)
    assert model.training and all(m.training for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_l2_matches_direct_computation(setup):
    model, x, y = setup
    result = psp.l2(model, batches(x, y, 32))
    with torch.no_grad():
        direct = {name: float((z.double() ** 2).sum(1).mean()) for name, z in model.psps(x).items()}
    for name, value in direct.items():
        assert result.per_layer[name] == pytest.approx(value, rel=1e-10)
    assert result.total == pytest.approx(sum(direct.values()), rel=1e-10)


def test_metrics_on_stacked_points_agree_with_model_level(setup):
    model, x, y = setup
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.conv.weight.mul_(-0.7)
    metrics = [psp.PSPL2(), psp.PSPEntropy(1, NUM_CLASSES, eps=1e-4), psp.PSPEntropy(2, NUM_CLASSES, block_size=4)]
    states = [m.init(2, "cpu") for m in metrics]
    with torch.no_grad():
        for xb, yb in batches(x, y, 64):
            outputs = torch.stack([model(xb), other(xb)])
            zs = [model.psps(xb), other.psps(xb)]
            psps = {"relu1": torch.stack([z["relu1"].view(-1, 2, 3, 3) for z in zs]), "relu2": torch.stack([z["relu2"] for z in zs])}
            states = [m.update(s, outputs, yb, psps) for m, s in zip(metrics, states)]
    results = [m.result(s) for m, s in zip(metrics, states)]
    for point, net in enumerate((model, other)):
        data = batches(x, y, 100)
        assert results[0][point].item() == pytest.approx(psp.l2(net, data).total, rel=1e-10)
        assert results[1][point].item() == pytest.approx(psp.entropy(net, data, 1, NUM_CLASSES, eps=1e-4).total, abs=1e-10)
        assert results[2][point].item() == pytest.approx(psp.entropy(net, data, 2, NUM_CLASSES).total, abs=1e-10)
    assert results[0].shape == (2,) and metrics[2].name == "psp_entropy2"


def test_pack_unpack_round_trip():
    active = torch.rand(3, 5, 13, generator=torch.Generator().manual_seed(0)) > 0.5
    packed = psp_counts.pack_bits(active)
    assert packed.shape == (3, 5, 2)
    assert torch.equal(psp_counts.unpack_bits(packed, 0, 13).bool(), active)
    assert torch.equal(psp_counts.unpack_bits(packed, 5, 11).bool(), active[..., 5:11])


def test_bad_input(setup):
    model, x, y = setup
    with pytest.raises(ValueError, match="order"):
        psp.entropy(model, batches(x, y, 100), order=0, num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="nn.ReLU"):
        psp.entropy(nn.Sequential(nn.Linear(25, 3)), [(x.flatten(1), y)], num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match=r"labels of batch 0 must lie in \[0, 4\)"):
        psp.entropy(model, [(x, y + 1)], num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="no samples"):
        psp.entropy(model, [], num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="no samples"):
        psp.l2(model, iter(()))
    with pytest.raises(ValueError, match="unknown relu layers"):
        psp.entropy(model, batches(x, y, 100), num_classes=NUM_CLASSES, layers=["fc1"])
    with pytest.raises(ValueError, match="eps"):
        psp.entropy(model, batches(x, y, 100), num_classes=NUM_CLASSES, eps=0.7)


def brute_live(model, x):
    """Per layer, the neurons with z > 0 on at least one sample, by a loop over samples."""
    with torch.no_grad():
        zs = model.psps(x)
    return {name: torch.tensor([any(z[s, i] > 0 for s in range(len(z))) for i in range(z.shape[1])])
            for name, z in zs.items()}


def brute_pairs(model, x, y, eps):
    """Per layer, the entropy of every pair (i, j), i < j, by counting samples one by one."""
    with torch.no_grad():
        zs = {name: z.tolist() for name, z in model.psps(x).items()}
    labels = y.tolist()
    return {name: {p: brute_states(z, labels, p, eps) for p in itertools.combinations(range(len(z[0])), 2)}
            for name, z in zs.items()}


@pytest.mark.parametrize("eps", [0.0, 1e-4])
def test_live_entropy_averages_the_live_subset_of_the_all_neuron_values(setup, eps):
    model, x, y = setup
    live = brute_live(model, x)
    assert live["relu2"].tolist() == [True] * 5 + [False]  # neuron 5 is forced always off
    first = brute_force(model, x, y, 1, eps)
    pairs = brute_pairs(model, x, y, eps)
    data = batches(x, y, 64)
    one = psp.entropy(model, data, 1, NUM_CLASSES, eps, neurons="live")
    two = psp.entropy(model, data, 2, NUM_CLASSES, eps, neurons="live", block_size=4)
    assert one.neurons == two.neurons == "live"
    sums, counts = [0.0, 0.0], [0, 0]  # first order, second order
    for name, mask in live.items():
        keep = mask.nonzero().squeeze(1).tolist()
        assert one.live[name].tolist() == two.live[name].tolist() == mask.tolist()
        values = [first[name][0][i] for i in keep]
        assert one.per_neuron[name].tolist() == pytest.approx(values, abs=1e-6)
        assert one.per_layer[name] == pytest.approx(sum(values) / len(values), abs=1e-6)
        table = {p: h for p, h in pairs[name].items() if p[0] in keep and p[1] in keep}  # no dead member
        assert two.per_layer[name] == pytest.approx(sum(table.values()) / len(table), abs=1e-6)
        partners = [sum(table[tuple(sorted((i, j)))] for j in keep if j != i) / (len(keep) - 1) for i in keep]
        assert two.per_neuron[name].tolist() == pytest.approx(partners, abs=1e-6)
        sums[0], counts[0] = sums[0] + sum(values), counts[0] + len(values)
        sums[1], counts[1] = sums[1] + sum(table.values()), counts[1] + len(table)
    assert one.total == pytest.approx(sums[0] / counts[0], abs=1e-6)
    assert two.total == pytest.approx(sums[1] / counts[1], abs=1e-6)
    every = psp.entropy(model, data, 2, NUM_CLASSES, eps)
    assert two.per_layer["relu1"] == pytest.approx(every.per_layer["relu1"], abs=1e-12)  # relu1 has no dead neuron


def test_live_entropy_with_a_given_mask_and_sampled_third_order(setup):
    model, x, y = setup
    mask = {"relu1": torch.arange(18) % 3 != 0, "relu2": torch.tensor([True, False, True, True, True, False])}
    pairs = brute_pairs(model, x, y, 0.0)
    result = psp.entropy(model, batches(x, y, 50), 2, NUM_CLASSES, neurons="live", live=mask)
    for name, m in mask.items():
        keep = set(m.nonzero().squeeze(1).tolist())
        table = [h for (i, j), h in pairs[name].items() if i in keep and j in keep]
        assert result.per_layer[name] == pytest.approx(sum(table) / len(table), abs=1e-6)
    keep = mask["relu2"].nonzero().squeeze(1).tolist()
    with torch.no_grad():
        z = model.psps(x)["relu2"].tolist()
    exact = [brute_states(z, y.tolist(), s, 0.0) for s in itertools.combinations(keep, 3)]
    third = psp.entropy(model, batches(x, y, 100), 3, NUM_CLASSES, layers=["relu2"], samples=300, seed=1,
                        neurons="live", live={"relu2": mask["relu2"]})
    assert abs(third.total - sum(exact) / len(exact)) < 3 * third.stderr + 1e-9
    assert third.live["relu2"].tolist() == mask["relu2"].tolist()


def test_live_metric_on_the_grid_uses_each_points_own_live_neurons(setup):
    model, x, y = setup
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.fc1.bias[5] = 100.0  # the dead neuron comes alive (always on) at the second point
    metric = psp.PSPEntropy(1, NUM_CLASSES, neurons="live")
    assert metric.name == "psp_entropy1_live"
    state = metric.init(2, "cpu")
    with torch.no_grad():
        for xb, yb in batches(x, y, 64):
            zs = [model.psps(xb), other.psps(xb)]
            psps = {"relu1": torch.stack([z["relu1"] for z in zs]), "relu2": torch.stack([z["relu2"] for z in zs])}
            state = metric.update(state, None, yb, psps)
    for point, net in enumerate((model, other)):
        assert metric.summarize(state, point).total == pytest.approx(
            psp.entropy(net, batches(x, y, 100), 1, NUM_CLASSES, neurons="live").total, abs=1e-12)
    assert metric.summarize(state, 0).live["relu2"].tolist() == [True] * 5 + [False]
    assert metric.summarize(state, 1).live["relu2"].all()


def test_live_entropy_bad_input_and_no_live_neuron(setup):
    model, x, y = setup
    data = batches(x, y, 100)
    with pytest.raises(ValueError, match="neurons"):
        psp.entropy(model, data, 1, NUM_CLASSES, neurons="alive")
    with pytest.raises(ValueError, match='neurons="live"'):
        psp.entropy(model, data, 1, NUM_CLASSES, live={"relu2": torch.ones(6, dtype=torch.bool)})
    with pytest.raises(ValueError, match="bool"):
        psp.entropy(model, data, 1, NUM_CLASSES, neurons="live", live={"relu2": torch.ones(6)})
    with pytest.raises(ValueError, match="no mask"):
        psp.entropy(model, data, 1, NUM_CLASSES, neurons="live", live={"relu2": torch.ones(6, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        psp.entropy(model, data, 1, NUM_CLASSES, layers=["relu2"], neurons="live",
                    live={"relu2": torch.ones(5, dtype=torch.bool)})
    one_live = {"relu2": torch.tensor([True] + [False] * 5)}
    none = psp.entropy(model, data, 2, NUM_CLASSES, layers=["relu2"], neurons="live", live=one_live)
    assert math.isnan(none.total) and none.per_layer == {}  # one live neuron: no pair to average
