"""The cached experiment functions on the smoke profile, with a temporary run store."""

import pytest
import torch

from psputil import pruning, store

from psputil.experiments import runs as experiments


class Killed(BaseException):
    """Stands in for the process being killed (not an Exception: executors do not catch it)."""


@pytest.fixture(scope="module")
def smoke():
    return experiments.setup("lenet300-mnist", "smoke")


def test_every_setup_and_profile_builds_and_bad_names_raise():
    for name in experiments.SETUP_NAMES:
        for profile in experiments.PROFILES:
            s = experiments.setup(name, profile)
            assert s.name == name and s.milestones and s.seeds >= 1
            store.key(experiments.LobsterRun(s))  # describable into a run key
    paper = experiments.setup("lenet5-mnist", "paper")
    assert (paper.lobster.lam, paper.lobster.twt, paper.lobster.pwe) == (1e-4, 0.05, 20)
    assert (paper.lobster_train.lr, paper.lobster_train.batch_size, paper.lobster_train.schedule) == (0.1, 100, "plateau")
    with pytest.raises(ValueError, match="lenet300-mnist"):
        experiments.setup("lenet300-cifar")
    with pytest.raises(ValueError, match="smoke, quick, paper"):
        experiments.setup("lenet300-mnist", "fast")
    with pytest.raises(ValueError, match="lottery"):
        experiments.ControlRun(experiments.setup("lenet300-mnist", "smoke"), "shuffle", 50.0)


def test_lobster_g_and_oneshot_are_cached(tmp_path, smoke, monkeypatch):
    runs = store.RunStore(tmp_path)
    summary = experiments.lobster_run(smoke, store=runs)
    assert summary["events"] and summary["events"][-1]["sparsity"] >= 30.0
    g, mask, row = experiments.g_model(smoke, 30.0, store=runs)
    assert pruning.sparsity(g) == pytest.approx(row["sparsity"]) and not g.training
    one, one_mask, info = experiments.oneshot_model(smoke, 30.0, store=runs)
    assert pruning.sparsity(one) == pytest.approx(row["sparsity"], abs=1e-3)
    assert set(one_mask) == set(mask) and "state" not in info

    def fail(*args, **kwargs):
        raise AssertionError("recomputed a cached result")

    for name in ("compute_lobster", "compute_dense", "compute_oneshot"):
        monkeypatch.setattr(experiments, name, fail)
    again, _, _ = experiments.g_model(smoke, 30.0, store=runs)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), g.state_dict().values()))
    experiments.oneshot_model(smoke, 30.0, store=runs)
    with pytest.raises(ValueError, match="never reached"):
        experiments.g_model(smoke, 99.9, store=runs)


def test_interrupted_control_sweep_resumes_with_only_the_missing_runs(tmp_path, smoke, monkeypatch):
    runs = store.RunStore(tmp_path)
    experiments.lobster_run(smoke, store=runs)
    real = experiments.compute_control
    calls = []

    def killed_at_third(run, **kwargs):
        calls.append(run)
        if len(calls) == 3:
            raise Killed()
        return real(run, **kwargs)

    monkeypatch.setattr(experiments, "compute_control", killed_at_third)
    with pytest.raises(Killed):
        experiments.controls(smoke, store=runs)
    done = calls[:2]
    calls.clear()
    monkeypatch.setattr(experiments, "compute_control", lambda run, **kw: calls.append(run) or real(run, **kw))
    result = experiments.controls(smoke, store=runs)
    all_runs = [experiments.ControlRun(smoke, kind, 30.0, seed) for kind in ("lottery", "reinit", "random") for seed in (0, 1)]
    assert sorted(map(store.key, calls)) == sorted(store.key(r) for r in all_runs if r not in done)
    entry = result[30.0]
    for kind in ("lottery", "reinit", "random"):
        assert entry[kind]["n"] == 2 and 0 <= entry[kind]["mean"] <= 100
    calls.clear()
    assert experiments.controls(smoke, store=runs) == result and calls == []
