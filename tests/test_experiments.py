"""The cached experiments on the smoke profile, with a temporary run store."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from psputil import pruning, store
from psputil.experiments import runs, setups, units
from psputil.scale import context
from psputil.scale.progress import Progress


class Killed(BaseException):
    """Stands in for the process being killed (not an Exception: executors do not catch it)."""


@pytest.fixture(scope="module")
def smoke():
    return setups.setup("lenet300-mnist", "smoke")


def make_ctx(root, executor="in-process"):
    return context.make(store=root, device="cpu", executor=executor)


def test_every_setup_and_profile_builds_and_bad_names_raise():
    for name in setups.SETUP_NAMES:
        for profile in setups.PROFILES:
            s = setups.setup(name, profile)
            assert s.name == name and s.milestones and s.control_seeds >= 1 and s.lobster_seeds >= 1
    paper = setups.setup("lenet5-mnist", "paper")
    assert (paper.lobster.lam, paper.lobster.twt, paper.lobster.pwe) == (1e-4, 0.05, 20)
    assert (paper.lobster_train.lr, paper.lobster_train.batch_size, paper.lobster_train.schedule) == (0.1, 100, "plateau")
    with pytest.raises(ValueError, match="lenet300-mnist"):
        setups.setup("lenet300-cifar")
    with pytest.raises(ValueError, match="smoke, quick, paper"):
        setups.setup("lenet300-mnist", "fast")
    s = setups.setup("lenet300-mnist", "smoke")
    with pytest.raises(ValueError, match="lottery"):
        s.control_run(0, 30.0, "shuffle", 0)
    with pytest.raises(ValueError, match="rate"):
        s.control_run(0, -5, "lottery", 0)
    with pytest.raises(ValueError, match="sparsity"):
        s.oneshot_run(0, 100)


def test_lobster_g_and_oneshot_are_cached(tmp_path, smoke, monkeypatch):
    ctx = make_ctx(tmp_path)
    summary = runs.lobster(ctx, [smoke.lobster_run(0)])[0]
    assert summary["levels"][-1]["sparsity"] >= 30.0
    g, mask, row = runs.g_model(ctx, smoke.lobster_run(0), 30.0)
    assert pruning.sparsity(g) == pytest.approx(row["sparsity"]) and not g.training
    one_run = smoke.oneshot_run(0, row["sparsity"])
    one, one_mask, info = runs.oneshot_model(ctx, one_run)
    assert pruning.sparsity(one) == pytest.approx(row["sparsity"], abs=1e-3)
    assert set(one_mask) == set(mask) and "state" not in info

    def fail(*args, **kwargs):
        raise AssertionError("recomputed a cached result")

    for name in ("compute_lobster", "compute_dense", "compute_oneshot"):
        monkeypatch.setattr(units, name, fail)
    again, _, _ = runs.g_model(ctx, smoke.lobster_run(0), 30.0)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), g.state_dict().values()))
    runs.oneshot_model(ctx, one_run)
    with pytest.raises(ValueError, match="reached"):
        runs.g_model(ctx, smoke.lobster_run(0), 99.9)


def test_interrupted_control_sweep_resumes_with_only_the_missing_runs(tmp_path, smoke, monkeypatch):
    ctx = make_ctx(tmp_path)
    runs.lobster(ctx, [smoke.lobster_run(0)])
    real = units.compute_control
    calls = []

    def killed_at_third(run, **kwargs):
        calls.append(run)
        if len(calls) == 3:
            raise Killed()
        return real(run, **kwargs)

    all_runs = [smoke.control_run(0, 30.0, kind, seed) for kind in ("lottery", "reinit", "random") for seed in (0, 1)]
    monkeypatch.setattr(units, "compute_control", killed_at_third)
    with pytest.raises(Killed):
        runs.controls(ctx, all_runs)
    done = calls[:2]
    calls.clear()
    monkeypatch.setattr(units, "compute_control", lambda run, **kw: calls.append(run) or real(run, **kw))
    results = runs.controls(ctx, all_runs)
    assert sorted(map(store.key, calls)) == sorted(store.key(r) for r in all_runs if r not in done)
    summary = runs.control_summary(ctx, smoke, 0, [30.0], [0, 1])[30.0]
    for kind in ("lottery", "reinit", "random"):
        assert summary[kind]["n"] == 2 and 0 <= summary[kind]["mean"] <= 100
    assert len(results) == 6


KILL_SCRIPT = textwrap.dedent("""
    import sys, torch
    from psputil.experiments import runs, setups, units
    from psputil.scale import context
    torch.set_num_threads(1)
    ctx = context.make(store=sys.argv[1], device="cpu")
    real = units.compute_lobster
    def slow_after_second_event(run, device, resume=None, on_event=None):
        events = []
        def hook(checkpoint):
            on_event(checkpoint)
            events.append(1)
            if len(events) == 2 and resume is None:
                print("second event stored", flush=True)
                import time; time.sleep(600)  # the parent kills us here
        return real(run, device, resume=resume, on_event=hook)
    units.compute_lobster = slow_after_second_event
    s = setups.setup("lenet300-mnist", "smoke")
    runs.lobster(ctx, [s.lobster_run(0)])
    print("finished", flush=True)
""")


def test_a_lobster_run_killed_after_its_second_event_resumes_bit_identical(tmp_path, smoke):
    reference = runs.lobster(make_ctx(tmp_path / "reference"), [smoke.lobster_run(0)])[0]
    assert len(reference["levels"]) >= 3, "the smoke run must prune at least twice for this test"
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(killed)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = process.stdout.readline()
    assert "second event stored" in line, line
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    ctx = make_ctx(killed)
    run = smoke.lobster_run(0)
    assert ctx.store.has("lobster", run, "resume") and not ctx.store.has("lobster", run, "summary")
    resumed = runs.lobster(ctx, [run])[0]
    assert resumed["levels"] == reference["levels"] and resumed["history"] == _without_time(reference["history"],
                                                                                             resumed["history"])
    reference_ctx = make_ctx(tmp_path / "reference")
    for index in range(len(reference["levels"])):
        a = reference_ctx.store.load("lobster", run, f"level-{index:04d}")
        b = ctx.store.load("lobster", run, f"level-{index:04d}")
        assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
        assert all(torch.equal(a["mask"][k], b["mask"][k]) for k in a["mask"])


def _without_time(reference, resumed):
    """The reference history with the wall-clock seconds of the resumed one (the only field allowed to differ)."""
    return [{**r, "seconds": s["seconds"]} for r, s in zip(reference, resumed)]


def test_a_pool_worker_never_touches_the_store(tmp_path, smoke):
    ctx = make_ctx(tmp_path, executor="process-pool")
    try:
        runs.lobster(ctx, [smoke.lobster_run(0)])  # whole-run units on the pool, stored by this driver
        before = {p for p in tmp_path.rglob("*") if p.is_file()}
        checkpoint, _ = runs.level(ctx, smoke.lobster_run(0), 30.0)
        item = (smoke.control_run(0, 30.0, "lottery", 0), checkpoint["mask"], str(tmp_path / "empty"))
        [outcome] = list(ctx.executor.run(_control_in_empty_store, [item]))
        assert outcome.ok, outcome.error
        assert outcome.worker.split(":")[1] != str(os.getpid())  # it ran in a pool process
        assert not (tmp_path / "empty").exists()
        assert {p for p in tmp_path.rglob("*") if p.is_file()} == before
    finally:
        ctx.close()


def _control_in_empty_store(item):
    run, mask, root = item
    os.environ["PSPUTIL_STORE"] = root
    return units.compute_control(run, mask, "cpu")


def test_a_lobster_run_on_a_pool_stores_its_events_as_they_happen_and_matches_in_process(tmp_path, smoke):
    reference = runs.lobster(make_ctx(tmp_path / "in-process"), [smoke.lobster_run(0)])[0]
    lines = tmp_path / "progress.jsonl"
    ctx = context.make(store=tmp_path / "pool", device="cpu", executor="process-pool", progress=Progress(path=str(lines)))
    saved = []
    real = ctx.store.save
    ctx.store.save = lambda stage, config, name, obj: (saved.append(name), real(stage, config, name, obj))[1]
    try:
        pooled = runs.lobster(ctx, [smoke.lobster_run(0)])[0]
    finally:
        ctx.close()
    assert saved.index("resume") < saved.index("summary")  # events arrived through the queue before the end
    assert pooled["levels"] == reference["levels"]
    # the driver turns the worker's events into that run's progress, in epochs, as in-process
    records = [json.loads(line) for line in lines.read_text().splitlines()]
    mine = [r for r in records if r["what"] == "LOBSTER lenet300/mnist-5k seed 0"]
    assert mine and mine[-1]["unit"] == "epoch" and "sparsity" in mine[-1]
    assert all(r["done"] > 0 for r in mine)  # made at the first event: never a "0/N epochs" line


def test_pruning_curves_of_starts_every_setups_lobster_and_dense_runs_before_any_control(tmp_path, monkeypatch):
    from psputil.experiments import curves
    from psputil.scale import sweep

    both = {name: setups.setup(name, "smoke") for name in ("lenet300-mnist", "lenet5-mnist")}
    ctx = make_ctx(tmp_path / "together")
    events, real_sweep, real_lobster = [], sweep.run_or_raise, runs.lobster
    monkeypatch.setattr(sweep, "run_or_raise", lambda fn, configs, stage, *a, **k: (
        events.append((stage, len(configs))), real_sweep(fn, configs, stage, *a, **k))[1])
    monkeypatch.setattr(runs, "lobster", lambda ctx, todo: (
        events.append(("lobster", sorted({r.model for r in todo}))), real_lobster(ctx, todo))[1])
    together = curves.pruning_curves_of(ctx, both, [0], [0], rates=[50])
    # every setup's LOBSTER runs in one call (one sweep on a pool), then every dense run in one sweep
    assert events[:2] == [("lobster", ["lenet300", "lenet5"]), ("dense", 2)]
    assert list(together) == list(both) and all(r["milestones"] == [50.0] for r in together.values())
    monkeypatch.undo()
    for name, s in both.items():  # setup by setup in a fresh store: the same results
        alone = curves.pruning_curves(make_ctx(tmp_path / name), s, [0], [0], rates=[50])
        assert alone["curve"] == together[name]["curve"] and alone["claims"] == together[name]["claims"]
    with pytest.raises(ValueError, match="control_seeds"):  # checked before any LOBSTER run
        curves.pruning_curves_of(make_ctx(tmp_path / "bad"), both, [0], [-1])
    assert not (tmp_path / "bad" / "lobster").exists()
