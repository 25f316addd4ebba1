"""The cached experiments of Section 5.1: what notebooks and scripts call, through one ``Context``.

Each function looks its units up in the run store and computes only the missing ones
(``psputil.scale.sweep`` on the context's executor), so a driver killed halfway redoes
only unfinished units. The driver resolves every unit's upstream inputs (dense states
for 1-S, G's masks for the controls) and passes them in; workers never read or write
the store.

A LOBSTER run is stored as it goes: each finished compression level's G
(``level-NNNN``) and the latest resume checkpoint (``resume``) are written at every
pruning event, so a run killed after event k restarts from event k and ends
bit-identical (on the CPU) to an uninterrupted one; ``summary`` marks it finished.
"""

import contextlib
import functools
import multiprocessing
import threading

from psputil import checks, models
from psputil.experiments import units
from psputil.pruning import lobster as lobster_algorithm
from psputil.pruning import oneshot
from psputil.scale import sweep

LOBSTER = "lobster"


def dense(ctx, runs):
    """Dense trainings (``units.DenseRun``), computed where missing; returns their results in order."""
    runs = list(runs)
    sweep.run_or_raise(functools.partial(units.compute_dense, device=ctx.device_name), runs, "dense", ctx,
                       units.resources, what="dense trainings")
    return sweep.results(runs, "dense", ctx.store)


def lobster(ctx, runs):
    """LOBSTER runs (``units.LobsterRun``): their summaries {"history", "levels", "stopped"}, in order.

    Each run starts from its stored resume checkpoint when there is one. In-process and on a
    process pool, every pruning event's checkpoint is stored as it happens (pool workers send
    theirs back to this driver through a queue; see the module docstring). On Ray a whole run is
    one unit and nothing is stored before it ends: a run killed midway there starts again
    (from a checkpoint only if an in-process or pool attempt stored one).
    """
    runs = list(runs)
    todo = [r for r in dict.fromkeys(runs) if not ctx.store.has(LOBSTER, r, "summary")]
    if todo and ctx.executor.name == "in-process":
        for run in todo:
            _lobster_resumable(ctx, run)
    elif todo:
        ctx.store.check_writable()
        with _checkpoint_channel(ctx) as channel:
            unit = functools.partial(units.compute_lobster_streaming, device=ctx.device_name, channel=channel)
            sweep.run_or_raise(unit, todo, LOBSTER, ctx, units.resources, name="summary", what="LOBSTER runs",
                               save=functools.partial(_store_lobster, ctx),
                               inputs=lambda run: {"resume": _stored_resume(ctx, run)})
    return [ctx.store.load(LOBSTER, r, "summary") for r in runs]


def level(ctx, run, rate):
    """G of a LOBSTER run at the first level reaching `rate` percent: ({"state", "mask"}, level row).

    Raises:
        ValueError: `rate` is not in [0, 100) or the run never reached it (names the highest level).
    """
    checks.number("rate", rate, 0, 100, high_open=True)
    summary = lobster(ctx, [run])[0]
    index = lobster_algorithm.level_at(summary["levels"], rate)
    return ctx.store.load(LOBSTER, run, _level_name(index)), summary["levels"][index]


def g_model(ctx, run, rate):
    """G as a ready model (eval mode, on the context's device): (model, mask, level row)."""
    checkpoint, row = level(ctx, run, rate)
    return ready_model(run.model, checkpoint["state"], ctx.device), checkpoint["mask"], row


def oneshot_runs(ctx, runs):
    """1-S runs (``units.OneShotRun``); their dense runs go first. Returns their results in order."""
    runs = list(runs)
    todo = [r for r in runs if not ctx.store.has("oneshot", r, "result")]
    if todo:
        dense_runs = list({r.dense: None for r in todo})
        states = {d: {k: v for k, v in result.items() if k in ("state", "rewind_state")}
                  for d, result in zip(dense_runs, dense(ctx, dense_runs))}
        sweep.run_or_raise(functools.partial(units.compute_oneshot, device=ctx.device_name), todo, "oneshot", ctx,
                           units.resources, what="one-shot retrainings",
                           inputs=lambda run: {"dense_states": states[run.dense]})
    return sweep.results(runs, "oneshot", ctx.store)


def oneshot_model(ctx, run):
    """1-S as a ready model (eval mode): (model, mask, result without state and mask)."""
    result = oneshot_runs(ctx, [run])[0]
    info = {k: v for k, v in result.items() if k not in ("state", "mask")}
    return ready_model(run.dense.model, result["state"], ctx.device), result["mask"], info


def controls(ctx, runs):
    """Retraining controls (``units.ControlRun``); G's masks are resolved here. Returns results in order."""
    runs = list(runs)
    todo = [r for r in runs if not ctx.store.has("control", r, "result")]
    masks = {source: level(ctx, *source)[0]["mask"] for source in {(r.lobster, r.rate) for r in todo}}
    sweep.run_or_raise(functools.partial(units.compute_control, device=ctx.device_name), todo, "control", ctx,
                       units.resources, what="retraining controls",
                       inputs=lambda run: {"g_mask": masks[(run.lobster, run.rate)]})
    return sweep.results(runs, "control", ctx.store)


def control_summary(ctx, setup, lobster_seed, rates, seeds):
    """Test errors of the three controls of one LOBSTER run at each rate.

    Returns:
        dict rate -> {"sparsity", "g": G's level row, and per kind "lottery"/"reinit"/"random":
        {"mean", "std", "n", "values"} of the test error in percent}.
    """
    seeds = checks.numbers_list("seeds", list(seeds), 0, integers=True)
    out = {}
    for rate in rates:
        _, row = level(ctx, setup.lobster_run(lobster_seed), rate)
        entry = {"sparsity": row["sparsity"], "g": row}
        for kind in oneshot.CONTROL_KINDS:
            results = controls(ctx, [setup.control_run(lobster_seed, rate, kind, s) for s in seeds])
            entry[kind] = oneshot.summarize(r["test_error"] for r in results)
        out[rate] = entry
    return out


def ready_model(architecture, state, device):
    """``models.build(architecture)`` holding `state`, on `device`, in eval mode."""
    model = models.build(architecture)
    model.load_state_dict(state)
    return model.to(device).eval()


def _lobster_resumable(ctx, run):
    ctx.store.check_writable()
    resume = _stored_resume(ctx, run)
    task = _lobster_task(ctx, run, resume)

    def on_event(checkpoint):
        _store_checkpoint(ctx, run, checkpoint)
        _report_event(task, checkpoint)

    with task:
        result = units.compute_lobster(run, ctx.device_name, resume=resume, on_event=on_event)
    _store_lobster(ctx, run, result)


def _lobster_task(ctx, run, checkpoint=None):
    """The progress task of one LOBSTER run in epochs of its budget, starting where `checkpoint` is (None: 0)."""
    what = f"LOBSTER {run.model}/{run.data.name} seed {run.seed}"
    if checkpoint is None:
        return ctx.progress.task(what, run.train.epochs, unit="epoch")
    return ctx.progress.task(what, run.train.epochs, unit="epoch", done=checkpoint["epoch"],
                             elapsed=sum(r.get("seconds", 0.0) for r in checkpoint["history"]),
                             sparsity=_sparsity_reached(checkpoint))


def _report_event(task, checkpoint):
    """Move a LOBSTER run's task to the checkpoint's epoch, with the sparsity reached."""
    task.update(checkpoint["epoch"] - task.done, sparsity=_sparsity_reached(checkpoint))


def _sparsity_reached(checkpoint):
    """The sparsity of a checkpoint's latest level as progress text ("98.50 %"; "-" before any level)."""
    levels = checkpoint["levels"]
    return f"{levels[-1]['sparsity']:.2f} %" if levels else "-"


def _stored_resume(ctx, run):
    """The run's latest stored checkpoint with its levels' states, or None."""
    if not ctx.store.has(LOBSTER, run, "resume"):
        return None
    resume = ctx.store.load(LOBSTER, run, "resume")
    resume["states"] = [ctx.store.load(LOBSTER, run, _level_name(i)) for i in range(resume["stored_levels"])]
    return resume


def _store_checkpoint(ctx, run, checkpoint, first=0):
    """Store a pruning event's checkpoint: each new level's G apart, the rest as the run's "resume" object.

    Args:
        first: the level index of ``checkpoint["states"][0]`` (workers send only new levels).
    """
    states = checkpoint["states"]
    for offset, state in enumerate(states):
        if not ctx.store.has(LOBSTER, run, _level_name(first + offset)):
            ctx.store.save(LOBSTER, run, _level_name(first + offset), state)
    slim = {k: v for k, v in checkpoint.items() if k != "states"}
    slim["stored_levels"] = first + len(states)
    ctx.store.save(LOBSTER, run, "resume", slim)


@contextlib.contextmanager
def _checkpoint_channel(ctx):
    """A queue pool workers put (run, checkpoint) on, drained into the store by a thread of this driver.

    Each checkpoint also moves that run's progress task (epochs, sparsity), as in-process.
    Only for the process pool (a ``multiprocessing.Manager`` queue reaches local processes);
    on Ray it yields None and units send nothing.
    """
    if ctx.executor.name != "process-pool":
        yield None
        return
    with multiprocessing.Manager() as manager:
        channel = manager.Queue()

        tasks, failed = {}, []  # run -> its progress task (made at its first event); the thread's error

        def drain():
            while (item := channel.get()) is not None:
                if failed:
                    continue  # keep draining so workers never block; the error is raised below
                try:
                    _store_checkpoint(ctx, *item)
                except Exception as error:  # noqa: BLE001 (re-raised in the driver after the sweep)
                    failed.append(error)
                    continue
                run, checkpoint = item[0], item[1]
                if run not in tasks:
                    tasks[run] = _lobster_task(ctx, run, checkpoint)
                else:
                    _report_event(tasks[run], checkpoint)
                if checkpoint.get("finished"):
                    tasks.pop(run).close()

        thread = threading.Thread(target=drain, daemon=True)
        thread.start()
        try:
            yield channel
        finally:
            try:
                channel.put(None)
                thread.join()
            finally:
                for task in tasks.values():
                    task.close()
        if failed:
            raise RuntimeError("storing a LOBSTER checkpoint sent by a pool worker failed; the runs' results are "
                               "stored, their resume checkpoints may be behind") from failed[0]


def _store_lobster(ctx, run, result):
    for index, state in enumerate(result["states"]):
        if not ctx.store.has(LOBSTER, run, _level_name(index)):
            ctx.store.save(LOBSTER, run, _level_name(index), state)
    ctx.store.save(LOBSTER, run, "summary", {k: result[k] for k in ("history", "levels", "stopped")})


def _level_name(index):
    return f"level-{index:04d}"
