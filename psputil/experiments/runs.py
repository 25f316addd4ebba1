"""The experiments of Section 5.1 per setup and profile, cached in the run store.

A *setup* is a model, a data set and hyperparameters (``Setup``) for one profile:
"smoke" (seconds, tests), "quick" (CPU minutes, the book's default) or "paper" (the
authors' values, full data, GPU). Every independent unit of work is a pure function of
one frozen dataclass that returns plain dicts and tensors (``compute_dense``,
``compute_lobster``, ``compute_oneshot``, ``compute_control``); the functions the
notebooks call (``dense_run``, ``lobster_run``, ``oneshot_run``, ``controls``,
``g_model``, ``oneshot_model``) only look results up in a ``RunStore`` or compute and
store them, one unit at a time, so a sweep killed halfway redoes only unfinished units.

The setups themselves (``Setup``, ``setup``, ``SETUP_NAMES``, ``PROFILES``) live in
``psputil.setups`` and are re-exported here.
"""

import functools
from dataclasses import dataclass

from psputil import data as datasets
from psputil import devices, models
from psputil.pruning import lobster
from psputil.pruning import oneshot
from psputil.scale import sweep
from psputil.experiments.setups import PROFILES, SETUP_NAMES, Setup, setup  # noqa: F401 (re-exported)
from psputil.store import RunStore

NEW_INIT_OFFSET = 1000  # fresh inits of the controls use model seed NEW_INIT_OFFSET + seed
GPU_SHARE = {"lenet300": 0.25, "lenet5": 0.25, "resnet32": 1.0}  # of one GPU per unit on Ray


@dataclass(frozen=True)
class DenseRun:
    setup: Setup
    seed: int = 0  # model init and batch order
    rewind_iteration: int = 0


@dataclass(frozen=True)
class LobsterRun:
    setup: Setup
    seed: int = 0  # model init and batch order


@dataclass(frozen=True)
class OneShotRun:
    setup: Setup
    sparsity: float  # percent
    seed: int = 0  # model init and batch order (same as the dense run it prunes)
    rewind_iteration: int = 0


@dataclass(frozen=True)
class ControlRun:
    setup: Setup
    kind: str  # "lottery" | "reinit" | "random"
    milestone: float  # requested compression rate; the mask is G's at the first event reaching it
    seed: int = 0  # batch order; fresh init and random mask for "reinit"/"random"
    lobster_seed: int = 0

    def __post_init__(self):
        if self.kind not in oneshot.CONTROL_KINDS:
            raise ValueError(f"unknown control {self.kind!r}; valid: {', '.join(oneshot.CONTROL_KINDS)}")


# -- units of work: pure functions of one dataclass (plus, optionally, upstream results) --

def compute_dense(run, device="auto", progress=False):
    """Dense training of ``models.build(model, seed=run.seed)``; see ``oneshot.train_dense``."""
    s = run.setup
    splits = _splits(s.data, str(devices.resolve(device)))
    return oneshot.train_dense(models.build(s.model, seed=run.seed), splits, s.train, run.seed,
                               run.rewind_iteration, device, progress)


def compute_lobster(run, device="auto", progress=False):
    """LOBSTER from ``models.build(model, seed=run.seed)``; see ``lobster.run``."""
    s = run.setup
    splits = _splits(s.data, str(devices.resolve(device)))
    return lobster.run(models.build(s.model, seed=run.seed), splits, s.lobster, s.lobster_train,
                       run.seed, device, progress)


def compute_oneshot(run, dense=None, device="auto", progress=False):
    """1-S: prune the dense run of the same seed to ``run.sparsity``, rewind, retrain.

    Args:
        dense: the ``compute_dense`` result of ``DenseRun(setup, seed, rewind_iteration)``
            (computed here when None).
    """
    if not 0 <= run.sparsity < 100:
        raise ValueError(f"sparsity must be a percentage in [0, 100), got {run.sparsity}")
    s = run.setup
    if dense is None:
        dense = compute_dense(DenseRun(s, run.seed, run.rewind_iteration), device, progress)
    model = models.build(s.model, seed=run.seed)
    start, mask = oneshot.prune_and_rewind(model, dense["state"], dense["rewind_state"], run.sparsity)
    splits = _splits(s.data, str(devices.resolve(device)))
    return oneshot.retrain(start, splits, s.train, mask, run.seed, device, progress)


def compute_control(run, g_mask=None, device="auto", progress=False):
    """One retraining control from G's mask at ``run.milestone``.

    Args:
        g_mask: G's mask at the milestone (from the LOBSTER run of ``run.lobster_seed``;
            computed here when None).
    """
    s = run.setup
    if g_mask is None:
        result = compute_lobster(LobsterRun(s, run.lobster_seed), device, progress)
        g_mask = result["checkpoints"][lobster.event_at(result["events"], run.milestone)]["mask"]
    original = models.build(s.model, seed=run.lobster_seed).state_dict()
    fresh = models.build(s.model, seed=NEW_INIT_OFFSET + run.seed).state_dict()
    state, mask = oneshot.control_start(run.kind, g_mask, original, fresh, run.seed)
    model = models.build(s.model)
    model.load_state_dict(state)
    splits = _splits(s.data, str(devices.resolve(device)))
    return oneshot.retrain(model, splits, s.train, mask, run.seed, device, progress)


def resources(run):
    """Ray resources of one unit (any run with a ``setup``): one CPU and a GPU share by model.

    A quarter GPU for the LeNets (four retrainings share a GPU), a whole one for ResNet-32;
    ``executors.RayExecutor`` drops the GPU request on a cluster without GPUs.
    """
    return {"num_cpus": 1, "num_gpus": GPU_SHARE[run.setup.model]}


def _oneshot_unit(run, dense, device="auto"):
    """``compute_oneshot`` with the dense run of ``run.seed`` from `dense` (seed -> states)."""
    return compute_oneshot(run, dense[run.seed], device)


# -- cached callers (what the notebooks use) --

def dense_run(setup, seed=0, store=None, device="auto", progress=False):
    """Cached ``compute_dense`` (rewind to init)."""
    run = DenseRun(setup, seed)
    return _store(store).cached("dense", run, "result", lambda: compute_dense(run, device, progress))


def lobster_run(setup, seed=0, store=None, device="auto", progress=False):
    """Cached LOBSTER run: dict with "history", "events", "stopped" (checkpoints stored apart)."""
    store, run = _store(store), LobsterRun(setup, seed)
    if not store.has("lobster", run, "summary"):
        result = compute_lobster(run, device, progress)
        for index, checkpoint in enumerate(result["checkpoints"]):
            store.save("lobster", run, f"checkpoint_{index:04d}", checkpoint)
        store.save("lobster", run, "final", {"state": result["state"], "mask": result["mask"]})
        store.save("lobster", run, "summary", {k: result[k] for k in ("history", "events", "stopped")})
    return store.load("lobster", run, "summary")


def g_checkpoint(setup, sparsity=None, seed=0, store=None, device="auto", progress=False):
    """G at the first pruning event reaching `sparsity` (None: the final G): (checkpoint, event row)."""
    store = _store(store)
    summary = lobster_run(setup, seed, store, device, progress)
    run = LobsterRun(setup, seed)
    if sparsity is None:
        return store.load("lobster", run, "final"), (summary["events"][-1] if summary["events"] else None)
    index = lobster.event_at(summary["events"], sparsity)
    return store.load("lobster", run, f"checkpoint_{index:04d}"), summary["events"][index]


def g_model(setup, sparsity=None, seed=0, store=None, device="auto", progress=False):
    """G as a ready model (eval mode) at a milestone: (model, mask, event row)."""
    checkpoint, row = g_checkpoint(setup, sparsity, seed, store, device, progress)
    return _model(setup, checkpoint["state"], device), checkpoint["mask"], row


def oneshot_run(setup, sparsity, seed=0, store=None, device="auto", progress=False):
    """Cached 1-S at `sparsity` percent (its dense run is cached too)."""
    store, run = _store(store), OneShotRun(setup, float(sparsity), seed)
    if store.has("oneshot", run, "result"):
        return store.load("oneshot", run, "result")
    dense = dense_run(setup, seed, store, device, progress)
    return store.cached("oneshot", run, "result", lambda: compute_oneshot(run, dense, device, progress))


def oneshot_runs(setup, sparsities, seeds=(0,), store=None, device="auto", progress=False, executor=None):
    """Cached 1-S runs for every sparsity and seed, run as sweeps on `executor`.

    The dense runs of the seeds still needed go first (one sweep, stage "dense"), then
    the 1-S units (stage "oneshot"); keys are those of ``dense_run`` and ``oneshot_run``.

    Returns:
        dict (sparsity percent, seed) -> result.

    Raises:
        sweep.SweepFailed: some units failed every attempt (the others are stored).
    """
    store = _store(store)
    runs = [OneShotRun(setup, float(sparsity), seed) for sparsity in sparsities for seed in seeds]
    todo = [r for r in runs if not store.has("oneshot", r, "result")]
    if todo:
        dense_runs = [DenseRun(setup, seed) for seed in sorted({r.seed for r in todo})]
        _sweep(functools.partial(compute_dense, device=device), dense_runs, "dense", store, executor, progress)
        dense = {r.seed: {k: v for k, v in store.load("dense", r, "result").items() if k in ("state", "rewind_state")}
                 for r in dense_runs}
        _sweep(functools.partial(_oneshot_unit, dense=dense, device=device), todo, "oneshot", store, executor, progress)
    return {(r.sparsity, r.seed): store.load("oneshot", r, "result") for r in runs}


def oneshot_model(setup, sparsity=None, seeds=(0,), lobster_seed=0, store=None, device="auto", progress=False,
                  executor=None):
    """1-S as a ready model at G's sparsity: the seed with the lowest validation loss.

    Args:
        sparsity: milestone of G (None: the final G); 1-S prunes to G's exact sparsity there.
        executor: a ``psputil.executors`` executor for the missing seeds (default: one by one here).

    Returns:
        (model, mask, result without state).
    """
    _, row = g_checkpoint(setup, sparsity, lobster_seed, store, device, progress)
    target = row["sparsity"] if row else 0.0
    if executor is not None:  # compute the missing seeds in parallel first
        oneshot_runs(setup, [target], seeds, store, device, progress, executor)
    results = [oneshot_run(setup, target, seed, store, device, progress) for seed in seeds]
    best = min(results, key=lambda r: r["valid_loss"])
    info = {k: v for k, v in best.items() if k not in ("state", "mask")}
    return _model(setup, best["state"], device), best["mask"], info


def controls(setup, milestones=None, seeds=None, lobster_seed=0, store=None, device="auto", progress=False,
             executor=None):
    """Test error of the three retraining controls at each milestone.

    Each retraining is one ``ControlRun`` unit run through ``psputil.sweep`` and stored as
    it finishes, so a sweep killed halfway and restarted computes only the missing units.

    Args:
        milestones: compression rates in percent (default ``setup.milestones``).
        seeds: seeds of every control kind (default ``range(setup.seeds)``); "lottery" varies
            only the batch order, "reinit" also the init, "random" also the mask.
        executor: a ``psputil.executors`` executor (default: in-process).

    Returns:
        dict milestone -> {"sparsity", "lobster_test_error", and per kind "lottery" / "reinit" /
        "random": {"mean", "std", "n", "values"} of the test error in percent}.

    Raises:
        sweep.SweepFailed: some units failed every attempt (the others are stored).
    """
    store = _store(store)
    milestones = setup.milestones if milestones is None else tuple(milestones)
    seeds = list(range(setup.seeds) if seeds is None else seeds)
    out = {}
    for milestone in milestones:
        checkpoint, row = g_checkpoint(setup, milestone, lobster_seed, store, device, progress)
        runs = {kind: [ControlRun(setup, kind, float(milestone), seed, lobster_seed) for seed in seeds]
                for kind in oneshot.CONTROL_KINDS}
        unit = functools.partial(compute_control, g_mask=checkpoint["mask"], device=device)
        _sweep(unit, [r for kind in runs.values() for r in kind], "control", store, executor, progress)
        entry = {"sparsity": row["sparsity"], "lobster_test_error": row["test_error"]}
        for kind, kind_runs in runs.items():
            entry[kind] = oneshot.summarize(r["test_error"] for r in sweep.results(kind_runs, "control", store))
        out[milestone] = entry
    return out


@functools.lru_cache(maxsize=2)
def _splits(config, device):
    """Data splits, loaded once per process and configuration (loading mnist-5k takes ~1 s)."""
    return datasets.load(config, device)


def _sweep(fn, runs, stage, store, executor, progress):
    """``sweep.run`` with the units' resources; raises ``sweep.SweepFailed`` if a unit failed."""
    report = sweep.run(fn, runs, stage, store, executor=executor, resources=resources, progress=progress)
    if not report.ok:
        raise sweep.SweepFailed(report)
    return report


def _store(store):
    return store if isinstance(store, RunStore) else RunStore(store)


def _model(setup, state, device):
    model = models.build(setup.model)
    model.load_state_dict(state)
    return model.to(devices.resolve(device)).eval()
