"""Masks, sparsity and keeping pruned weights at zero, against explicit computations."""

import pytest
import torch
from torch import nn

from psputil import models, pruning, train
from psputil.data import DataConfig, DataSplits, TensorSplit


def tiny_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    split = lambda m: TensorSplit(torch.randn(m, 1, 28, 28, generator=g), torch.randint(0, 10, (m,), generator=g))
    return DataSplits(DataConfig(), split(n), split(32), split(32), 10, (1, 28, 28))


def test_prunable_names_are_conv_and_linear_weights_and_biases():
    assert list(pruning.prunable(models.build("lenet5"))) == [
        "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    names = pruning.prunable(models.build("resnet32"))
    assert "bn1.weight" not in names and "conv1.weight" in names and "fc.bias" in names


def test_sparsity_counts_zero_weights_and_biases():
    model = models.build("lenet300")
    with torch.no_grad():
        model.fc1.weight[:10].zero_()  # 7,840 zeros
        model.fc3.bias.zero_()  # 10 zeros
    assert pruning.sparsity(model) == pytest.approx(100 * 7850 / 266610)
    per_layer = pruning.layer_sparsity(model)
    assert per_layer["fc1"] == pytest.approx(100 * 7840 / (784 * 300 + 300))
    assert per_layer["fc2"] == 0.0
    assert per_layer["fc3"] == pytest.approx(100 * 10 / 1010)


def test_magnitude_mask_prunes_exactly_the_smallest_fraction():
    model = models.build("lenet300", seed=3)
    mask = pruning.magnitude_mask(model, 90.0)
    magnitudes = torch.cat([p.detach().abs().flatten() for p in pruning.prunable(model).values()])
    keep = torch.cat([m.flatten() for m in mask.values()])
    assert int((~keep).sum()) == round(0.9 * 266610)
    assert magnitudes[~keep].max() <= magnitudes[keep].min()
    assert pruning.mask_sparsity(mask) == pytest.approx(100 * round(0.9 * 266610) / 266610)
    # Pruning further from an existing mask only removes survivors.
    more = pruning.magnitude_mask(model, 95.0, mask)
    assert all(not (more[n] & ~mask[n]).any() for n in mask)
    assert pruning.mask_sparsity(more) == pytest.approx(100 * round(0.95 * 266610) / 266610)


def test_random_masks_have_exact_counts_and_differ_across_seeds():
    model = models.build("lenet5")
    reference = pruning.magnitude_mask(model, 80.0)
    a, b, again = pruning.random_mask(reference, 0), pruning.random_mask(reference, 1), pruning.random_mask(reference, 0)
    assert pruning.survivors(a) == pruning.survivors(reference) == pruning.survivors(b)
    assert any(not torch.equal(a[n], b[n]) for n in a)
    assert all(torch.equal(a[n], again[n]) for n in a)
    assert all(a[n].dtype == torch.bool and a[n].shape == reference[n].shape for n in a)


@pytest.mark.parametrize("nesterov", [False, True])
def test_pruned_weights_stay_zero_with_momentum_and_weight_decay(nesterov):
    model = models.build("lenet300")
    mask = pruning.magnitude_mask(model, 70.0)
    config = train.TrainConfig(epochs=3, batch_size=16, lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=1e-2)
    hook = pruning.MaskHook(mask)
    optimizers = []

    class Grab(train.Hook):
        def before_training(self, state):
            optimizers.append(state.optimizer)

    train.fit(model, tiny_data(), config, hooks=[hook, Grab()], progress=False)
    params = pruning.prunable(model)
    for name, p in params.items():
        assert torch.all(p[~mask[name]] == 0), name
        assert torch.all(optimizers[0].state[p]["momentum_buffer"][~mask[name]] == 0), name
    assert (params["fc1.weight"][mask["fc1.weight"]] != 0).all()  # survivors trained, not zeroed
    assert pruning.sparsity(model) == pytest.approx(pruning.mask_sparsity(mask))


def test_bad_masks_and_targets_raise_value_error():
    model = models.build("lenet300")
    mask = pruning.full_mask(model)
    with pytest.raises(ValueError, match="valid"):
        pruning.apply_mask(model, {k: v for k, v in mask.items() if k != "fc3.bias"})
    with pytest.raises(ValueError, match="shape"):
        pruning.apply_mask(model, {**mask, "fc3.bias": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="bool"):
        pruning.check_mask(model, {**mask, "fc3.bias": torch.ones(10)})
    with pytest.raises(ValueError, match=r"\[0, 100\)"):
        pruning.magnitude_mask(model, 100.0)
    with pytest.raises(ValueError, match=r"\[0, 100\)"):
        pruning.magnitude_mask(model, -1.0)
    with pytest.raises(ValueError):
        pruning.apply_mask(nn.Linear(3, 2), mask)
