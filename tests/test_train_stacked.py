"""Stacked training against one-at-a-time ``train.fit`` runs (the oracle), on tiny real data.

Tolerance: a member of the stack computes the same float32 operations as its own ``fit``
run, only grouped differently (batched products, a first convolution as a product over
patches, summation order), so the two drift apart by rounding: after the ~12 steps here
most weights differ by < 1e-7. Rounding can also flip a near-tie (a ReLU input within
rounding of 0 for one sample, a max-pool pair of equal values): that neuron's fan-in row
then takes a slightly different step (seen: one fc1 row of LeNet-5 off by 2.5e-5). So per
tensor we require 99 % of the entries within atol 1e-5 / rtol 1e-4 (100x the rounding
drift, 100x below one SGD step here, lr x gradient ~1e-3) and every entry within 1e-3.
A wrong batch order, mask, learning rate or momentum moves most entries by a full step
and fails (``test_tolerance_detects_a_wrong_seed``).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from psputil import data, models, pruning, train
from psputil.train_stacked import Member, fit_stacked, patch_conv2d

ATOL, RTOL = 1e-5, 1e-4


@pytest.fixture(scope="module")
def splits():
    return data.load(data.DataConfig("mnist-5k", train_size=240, split_seed=0))


def _members(name):
    """Three members with different inits, seeds, masks, optimisers, schedules and budgets."""
    configs = [
        train.TrainConfig(epochs=3, lr=0.1, batch_size=60),
        train.TrainConfig(epochs=2, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, batch_size=60,
                          schedule="step", milestones=(1,), gamma=0.5),
        train.TrainConfig(epochs=3, lr=0.2, momentum=0.5, batch_size=60, schedule="plateau", plateau_patience=0),
    ]
    members = []
    for k, config in enumerate(configs):
        model = models.build(name, seed=k)
        mask = None if k == 0 else pruning.magnitude_mask(model, 50.0 + 20 * k)
        if k == 2:
            mask = pruning.random_mask(mask, seed=5)
        members.append(Member(model.state_dict(), config, seed=10 + k, mask=mask))
    return members


def _fit_one(name, member, splits, hooks=()):
    model = models.build(name)
    model.load_state_dict(member.state)
    hooks = list(hooks) + ([pruning.MaskHook(member.mask)] if member.mask is not None else [])
    history = train.fit(model, splits, member.config, seed=member.seed, device="cpu", hooks=hooks, progress=False)
    return model.state_dict(), history


def _close_fraction(ours, theirs):
    return float(torch.isclose(ours, theirs, atol=ATOL, rtol=RTOL).float().mean())


def _assert_same_run(result, state, history, fraction=0.99):
    for name, tensor in state.items():
        assert _close_fraction(result["state"][name], tensor) >= fraction, name
        assert float((result["state"][name] - tensor).abs().max()) <= 1e-3, name
    assert [r["epoch"] for r in result["history"]] == [r["epoch"] for r in history]
    for ours, theirs in zip(result["history"], history):
        assert ours["lr"] == theirs["lr"]  # the schedules are torch's own objects: exact
        assert ours["train_error"] == pytest.approx(theirs["train_error"], abs=0.5)  # one sample at most
        assert ours["valid_error"] == pytest.approx(theirs["valid_error"], abs=0.5)
        for key in ("train_loss", "valid_loss"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-5), key


@pytest.mark.parametrize("name", ["lenet300", "lenet5"])
def test_members_match_one_at_a_time_fit(name, splits):
    members = _members(name)
    results = fit_stacked(models.build(name), splits, members, device="cpu", progress=False)
    for member, result in zip(members, results):
        state, history = _fit_one(name, member, splits)
        assert result["error"] is None
        _assert_same_run(result, state, history)
        if member.mask is not None:  # pruned weights exactly zero
            for n, m in member.mask.items():
                assert torch.all(result["state"][n][~m] == 0), n


def test_grouped_convolution_matches(splits):
    """The CUDA layout (groups=K convolution, no channels-last) on the CPU.

    Here the stack takes the CPU's contiguous-layout convolution kernels while the reference
    ``fit`` runs channels-last, so their backward passes sum in different orders; with the
    second member's momentum 0.9 and 70 % mask (many exactly equal pooled values, so more
    near-ties to flip) the drift grows faster than in the test above. Measured on a 2-core
    x86 CPU: 95.2 % of conv1's entries within ATOL/RTOL, 98.6 % of conv2's, largest
    difference 1.1e-4 in any tensor. So 90 % within tolerance and every entry within 1e-3:
    a wrong seed, mask or schedule still moves most entries by a full step.
    """
    members = _members("lenet5")[:2]
    results = fit_stacked(models.build("lenet5"), splits, members, device="cpu", progress=False,
                          conv="grouped", channels_last=False)
    for member, result in zip(members, results):
        _assert_same_run(result, *_fit_one("lenet5", member, splits), fraction=0.9)


class _StopAfter(train.Hook):
    def __init__(self, epoch):
        self.epoch = epoch

    def after_epoch(self, state, record):
        return state.epoch >= self.epoch


def test_early_end_keeps_weights_while_others_go_on(splits):
    members = _members("lenet300")
    results = fit_stacked(models.build("lenet300"), splits, members, device="cpu", progress=False,
                          stop=lambda index, history: index == 0 and len(history) == 1)
    assert [len(r["history"]) for r in results] == [1, 2, 3]
    _assert_same_run(results[0], *_fit_one("lenet300", members[0], splits, hooks=[_StopAfter(1)]))
    _assert_same_run(results[2], *_fit_one("lenet300", members[2], splits))


def test_tolerance_detects_a_wrong_seed(splits):
    member = _members("lenet300")[0]
    result = fit_stacked(models.build("lenet300"), splits, [member], device="cpu", progress=False)[0]
    other, _ = _fit_one("lenet300", Member(member.state, member.config, seed=member.seed + 1), splits)
    assert _close_fraction(result["state"]["fc1.weight"], other["fc1.weight"]) < 0.5


def test_nonfinite_member(splits):
    good, _, _ = _members("lenet300")
    bad = Member(good.state, train.TrainConfig(epochs=3, lr=1e6, batch_size=60), seed=1)
    with pytest.raises(train.NonFiniteLossError, match="member 1"):
        fit_stacked(models.build("lenet300"), splits, [good, bad], device="cpu", progress=False)
    results = fit_stacked(models.build("lenet300"), splits, [good, bad], device="cpu", progress=False, errors="keep")
    assert results[0]["error"] is None and len(results[0]["history"]) == 3
    assert "member 1" in results[1]["error"] and results[1]["state"] is not None


def test_model_is_not_changed(splits):
    model = models.build("lenet5", seed=7)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    fit_stacked(model, splits, _members("lenet5")[:1], device="cpu", progress=False)
    for n, t in model.state_dict().items():
        assert torch.equal(t, before[n]), n


def test_bad_input(splits):
    member = _members("lenet300")[0]
    model = models.build("lenet300")
    with pytest.raises(ValueError, match="members is empty"):
        fit_stacked(model, splits, [], progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        other = Member(member.state, train.TrainConfig(epochs=1, batch_size=50))
        fit_stacked(model, splits, [member, other], progress=False)
    with pytest.raises(ValueError, match="state dict with the keys"):
        fit_stacked(model, splits, [Member({"fc1.weight": member.state["fc1.weight"]}, member.config)], progress=False)
    with pytest.raises(ValueError, match="mask"):
        fit_stacked(model, splits, [Member(member.state, member.config, mask={"fc1.weight": torch.ones(3)})],
                    progress=False)
    with pytest.raises(ValueError, match="conv mode"):
        fit_stacked(model, splits, [member], conv="fast", progress=False)
    with pytest.raises(ValueError, match="buffers"):
        net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.BatchNorm1d(10))
        fit_stacked(net, splits, [Member(net.state_dict(), member.config)], device="cpu", progress=False)


@pytest.mark.parametrize("stride, padding, dilation", [(1, 0, 1), (2, 1, 1), ((2, 1), (0, 2), 2)])
def test_patch_conv2d_matches_conv2d(stride, padding, dilation):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 12, 13, generator=g)
    w = torch.randn(5, 3, 3, 2, generator=g, requires_grad=True)
    b = torch.randn(5, generator=g, requires_grad=True)
    ours, theirs = patch_conv2d(x, w, b, stride, padding, dilation), F.conv2d(x, w, b, stride, padding, dilation)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert ours.is_contiguous(memory_format=torch.channels_last)
    grad = torch.randn(theirs.shape, generator=g)
    for a, e in zip(torch.autograd.grad(ours, [w, b], grad), torch.autograd.grad(theirs, [w, b], grad)):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="no input gradient"):
        patch_conv2d(x.requires_grad_(), w, b)


def test_gpu_benchmark_tiny_runs_on_the_cpu():
    """benchmarks/gpu.py --tiny: every code path of the GPU benchmark but CUDA's, in seconds (CI)."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu.py"), "--tiny", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    for line in ("matmul peak", "lenet300 fit", "lenet5 stacked K=2", "resnet32 fp32 channels-last", "LOBSTER LeNet-5"):
        assert line in done.stdout, (line, done.stdout)


def test_retrain_stacked_matches_oneshot_retrain(splits):
    from psputil.pruning import oneshot
    from psputil.train_stacked import retrain_stacked

    members = _members("lenet300")[1:]
    ours = retrain_stacked(models.build("lenet300"), splits, members, device="cpu")
    for member, result in zip(members, ours):
        start = models.build("lenet300")
        start.load_state_dict(member.state)
        theirs = oneshot.retrain(start, splits, member.config, member.mask, seed=member.seed, device="cpu")
        assert set(theirs) <= set(result)
        assert result["sparsity"] == pytest.approx(theirs["sparsity"])
        for key in ("valid_loss", "test_loss"):
            assert result[key] == pytest.approx(theirs[key], rel=1e-4)
        for name, m in theirs["mask"].items():
            assert torch.equal(result["mask"][name], m)
