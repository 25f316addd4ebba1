"""ResNet-32 / CIFAR-10 end to end on the smoke profile: the path the paper profile runs on a GPU.

Synthetic CIFAR-10 files in the real pickle format (``data.write_synthetic_cifar10``), dense
training with crop-and-flip augmentation, LOBSTER with BatchNorm shrinkage, 1-S at G's
sparsity and the three retraining controls, all through the cached experiment functions.
The path, not the numbers: after a few steps on 180 noisy images the network is near
chance, so the first pruning event removes almost everything LOBSTER may remove (the
bisection keeps at least one weight) and the errors stay near 90 %.
"""

import pytest
import torch
from torch import nn

from psputil import models, pruning
from psputil.experiments import runs, setups
from psputil.scale import context


@pytest.mark.slow
def test_resnet32_smoke_setup_runs_every_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("PSPUTIL_DATA", str(tmp_path / "data"))  # the synthetic files are written here
    s = setups.setup("resnet32-cifar10", "smoke")
    assert s.train.augment and s.lobster.batchnorm
    ctx = context.make(store=tmp_path / "store", device="cpu")
    dense = runs.dense(ctx, [s.dense_run(0)])[0]
    assert len(dense["history"]) == s.train.epochs and all(torch.isfinite(torch.tensor(h["train_loss"]))
                                                           for h in dense["history"])
    summary = runs.lobster(ctx, [s.lobster_run(0)])[0]
    top = max(level["sparsity"] for level in summary["levels"])
    assert top >= min(s.milestones), f"LOBSTER reached only {top:.2f} %"

    g, mask, row = runs.g_model(ctx, s.lobster_run(0), min(s.milestones))
    assert pruning.sparsity(g) == pytest.approx(row["sparsity"])
    fresh = models.build("resnet32", seed=0)
    bn = [(m, f) for m, f in zip(g.modules(), fresh.modules()) if isinstance(m, nn.BatchNorm2d)]
    # BatchNorm scales were shrunk and trained (never pruned): they moved off their initial 1.0, none is zero
    assert any(not torch.equal(m.weight, f.weight) for m, f in bn)
    assert all(bool((m.weight != 0).all()) for m, _ in bn)

    one, one_mask, info = runs.oneshot_model(ctx, s.oneshot_run(0, row["sparsity"]))
    assert info["sparsity"] == pytest.approx(row["sparsity"], abs=0.01)
    assert all(bool((one.state_dict()[n][~m] == 0).all()) for n, m in one_mask.items())

    results = runs.controls(ctx, [s.control_run(0, min(s.milestones), kind, 0) for kind in ("lottery", "reinit", "random")])
    for result in results:
        assert 0 <= result["test_error"] <= 100
        assert pruning.mask_sparsity(result["mask"]) == pytest.approx(row["sparsity"], abs=0.01)
