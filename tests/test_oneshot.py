"""One-shot pruning with rewinding, the retraining controls, and their summaries."""

import statistics

import pytest
import torch

from psputil import models, pruning, train

from psputil.pruning import oneshot
from psputil.data import DataConfig, DataSplits, TensorSplit


def tiny_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    split = lambda m: TensorSplit(torch.randn(m, 1, 28, 28, generator=g), torch.randint(0, 10, (m,), generator=g))
    return DataSplits(DataConfig(), split(n), split(32), split(32), 10, (1, 28, 28))


def test_prune_and_rewind_prunes_the_smallest_and_rewinds_bit_for_bit():
    model = models.build("lenet5", seed=0)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    trained = {k: v + 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(1)) for k, v in init.items()}
    start, mask = oneshot.prune_and_rewind(model, trained, init, 95.0)
    total = sum(p.numel() for p in pruning.prunable(model).values())
    names = list(mask)
    magnitudes = torch.cat([trained[n].abs().flatten() for n in names])
    keep = torch.cat([mask[n].flatten() for n in names])
    assert int((~keep).sum()) == round(0.95 * total)
    assert magnitudes[~keep].max() <= magnitudes[keep].min()
    state = start.state_dict()
    for name in names:
        assert torch.equal(state[name][mask[name]], init[name][mask[name]])
        assert torch.all(state[name][~mask[name]] == 0)
    assert all(torch.equal(model.state_dict()[k], init[k]) for k in init)  # caller's model untouched


def test_rewind_to_iteration_k_keeps_the_weights_after_k_steps():
    config = train.TrainConfig(epochs=1, batch_size=16, lr=0.05)  # 4 steps
    after_all = oneshot.train_dense(models.build("lenet300"), tiny_data(), config, rewind_iteration=4, device="cpu")
    assert all(torch.equal(after_all["rewind_state"][k], v) for k, v in after_all["state"].items())
    at_zero = oneshot.train_dense(models.build("lenet300"), tiny_data(), config, device="cpu")
    assert all(torch.equal(at_zero["rewind_state"][k], v) for k, v in models.build("lenet300").state_dict().items())
    with pytest.raises(ValueError, match="exceeds"):
        oneshot.train_dense(models.build("lenet300"), tiny_data(), config, rewind_iteration=5, device="cpu")


def test_one_shot_retrains_with_the_mask_fixed():
    config = train.TrainConfig(epochs=2, batch_size=16, lr=0.05, momentum=0.9)
    result = oneshot.one_shot(models.build("lenet300"), tiny_data(), config, 80.0, device="cpu")
    assert result["sparsity"] == pytest.approx(100 * round(0.8 * 266610) / 266610)
    assert pruning.mask_sparsity(result["mask"]) == pytest.approx(result["sparsity"])
    assert set(result["dense"]) >= {"history", "test_error"} and 0 <= result["test_error"] <= 100
    with pytest.raises(ValueError, match=r"\[0, 100\)"):
        oneshot.one_shot(models.build("lenet300"), tiny_data(), config, 100.0)


def test_control_starts():
    model = models.build("lenet300")
    mask = pruning.magnitude_mask(model, 90.0)
    original, fresh = models.build("lenet300", seed=0).state_dict(), models.build("lenet300", seed=7).state_dict()
    state, m = oneshot.control_start("lottery", mask, original, fresh, seed=0)
    assert state is original and m is mask
    state, m = oneshot.control_start("reinit", mask, original, fresh, seed=0)
    assert state is fresh and m is mask
    state, m = oneshot.control_start("random", mask, original, fresh, seed=0)
    assert state is fresh and pruning.survivors(m) == pruning.survivors(mask)
    assert any(not torch.equal(m[n], mask[n]) for n in mask)
    with pytest.raises(ValueError, match="lottery, reinit, random"):
        oneshot.control_start("shuffle", mask, original, fresh, seed=0)


def test_summarize_against_statistics():
    values = [1.5, 2.0, 4.25, 3.0]
    out = oneshot.summarize(values)
    assert out["n"] == 4 and out["mean"] == pytest.approx(statistics.mean(values))
    assert out["std"] == pytest.approx(statistics.stdev(values))
    assert oneshot.summarize([2.0])["std"] == 0.0
