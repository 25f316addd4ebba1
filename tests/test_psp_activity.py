"""Always-off and always-on neurons against a hand-built network whose dead and saturated neurons are known."""

import copy

import pytest
import torch
from torch import nn

from psputil import psp


class Known(nn.Module):
    """conv 2@2x2 on 1x3x3 (8 neurons), fc 4, output 2; weights set by hand.

    On inputs whose pixel (0, 0) is positive and whose other pixels have random signs:

    * conv channel 0 (weights 0, bias -1): all 4 positions always off;
    * conv channel 1 (only the kernel's top-left weight, 1): position (0, 0) reads pixel
      (0, 0), always on; positions (0, 1), (1, 0), (1, 1) read random-sign pixels: mixed;
    * fc neuron 0 (bias -1): always off; neuron 1 (bias +1): always on; neuron 2 reads
      conv channel 1 at (0, 1) = relu(x01): mixed (z = 0 counts as off); neuron 3 reads
      minus channel 1 at (0, 0) = -x00 < 0: always off.
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 2)
        self.relu1 = nn.ReLU()
        self.fc = nn.Linear(8, 4)
        self.relu2 = nn.ReLU()
        self.out = nn.Linear(4, 2)
        with torch.no_grad():
            for p in (self.conv.weight, self.conv.bias, self.fc.weight, self.fc.bias):
                p.zero_()
            self.conv.bias[0] = -1.0
            self.conv.weight[1, 0, 0, 0] = 1.0
            self.fc.bias[0], self.fc.bias[1] = -1.0, 1.0
            self.fc.weight[2, 5] = 1.0  # channel 1 at (0, 1): flat index 1 * 4 + 0 * 2 + 1
            self.fc.weight[3, 4] = -1.0  # channel 1 at (0, 0)

    def forward(self, x):
        return self.out(self.relu2(self.fc(self.relu1(self.conv(x)).flatten(1))))


EXPECTED_LIVE = {"relu1": [False] * 4 + [True] * 4, "relu2": [False, True, True, False]}
EXPECTED_ON = {"relu1": [False] * 4 + [True, False, False, False], "relu2": [False, True, False, False]}


def data(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 3, 3, generator=g)
    x[:, 0, 0, 0] = x[:, 0, 0, 0].abs() + 0.1
    return x, torch.randint(0, 2, (n,), generator=g)


def batches(x, y, size):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


def test_known_dead_and_always_on_neurons():
    x, y = data()
    result = psp.activity(Known(), batches(x, y, 64))
    assert {n: m.tolist() for n, m in result.live.items()} == EXPECTED_LIVE
    assert {n: m.tolist() for n, m in result.always_on.items()} == EXPECTED_ON
    assert result.off == {"relu1": 0.5, "relu2": 0.5}
    assert result.on == {"relu1": 0.125, "relu2": 0.25}
    assert result.off_total == pytest.approx(6 / 12) and result.on_total == pytest.approx(2 / 12)
    assert result.samples == 200
    assert result.fractions() == {"relu1": {"off": 0.5, "on": 0.125}, "relu2": {"off": 0.5, "on": 0.25}}
    stored = result.to_dict()
    assert stored["off"] == result.off and stored["live"]["relu2"].tolist() == EXPECTED_LIVE["relu2"]


def test_against_a_direct_loop_over_samples():
    """Random weights: the fractions equal a loop over samples of the directly computed PSPs."""
    torch.manual_seed(3)
    model = Known()
    nn.init.normal_(model.fc.weight)
    with torch.no_grad():
        model.fc.bias.copy_(torch.tensor([-3.0, 3.0, 0.0, -0.5]))
    x, y = data(150, seed=1)
    result = psp.activity(model, batches(x, y, 16))
    with torch.no_grad():
        z1 = model.conv(x)
        zs = {"relu1": z1.flatten(1), "relu2": model.fc(torch.relu(z1).flatten(1))}
    for name, z in zs.items():
        for i in range(z.shape[1]):
            states = [bool(z[s, i] > 0) for s in range(len(z))]
            assert bool(result.live[name][i]) == any(states)
            assert bool(result.always_on[name][i]) == all(states)


def test_one_pass_streaming_and_model_left_as_found():
    x, y = data()
    model = Known().train()
    before = copy.deepcopy(model.state_dict())
    whole = psp.activity(model, batches(x, y, 200))
    streamed = psp.activity(model, batches(x, y, 7))
    assert whole.off == streamed.off and whole.on == streamed.on
    assert model.training and all(m.training for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    only = psp.activity(model, batches(x, y, 50), layers=["relu2"])
    assert list(only.off) == ["relu2"]


def test_metric_on_stacked_points_and_with_other_metrics_in_one_pass():
    x, y = data()
    model, other = Known(), Known()
    with torch.no_grad():
        other.fc.bias[0] = 1.0  # neuron 0 of relu2 turns always on
    metric = psp.Activity()
    state = metric.init(2, "cpu")
    for xb, yb in batches(x, y, 50):
        zs = []
        for net in (model, other):
            z1 = net.conv(xb)
            zs.append({"relu1": z1, "relu2": net.fc(torch.relu(z1).flatten(1))})
        psps = {n: torch.stack([z[n] for z in zs]).detach() for n in ("relu1", "relu2")}
        state = metric.update(state, None, yb, psps)
    assert metric.result(state).tolist() == pytest.approx([6 / 12, 5 / 12])
    assert metric.summarize(state, 1).on == {"relu1": 0.125, "relu2": 0.5}
    found = psp.measure(model, batches(x, y, 64), [psp.Activity(), psp.PSPL2(), psp.PSPEntropy(1, 2)])
    assert set(found) == {"dead_fraction", "psp_l2", "psp_entropy1"}
    assert found["dead_fraction"].off == {"relu1": 0.5, "relu2": 0.5}


def test_bad_input():
    x, y = data()
    with pytest.raises(ValueError, match="no samples"):
        psp.activity(Known(), [])
    with pytest.raises(ValueError, match="unknown relu layers"):
        psp.activity(Known(), batches(x, y, 50), layers=["fc"])
    with pytest.raises(ValueError, match="nn.ReLU"):
        psp.activity(nn.Sequential(nn.Flatten(), nn.Linear(9, 2)), batches(x, y, 50))
    with pytest.raises(ValueError, match="distinct names"):
        psp.measure(Known(), batches(x, y, 50), [psp.Activity(), psp.Activity()])
