"""Sweep executors: 16 LeNet-300/mnist-5k retrainings in-process vs process pool vs Ray, and a paper projection.

    python benchmarks/sweep.py [--profile quick|smoke] [--epochs N] [--units 16] [--workers 2]
    python benchmarks/sweep.py --profile smoke --epochs 1 --units 1 --workers 1 --skip-ray --projection-steps 1  # CI

Units: ``setup.control_run(0, 90, "reinit", seed)`` of the chosen profile (quick: 30 epochs
on 3,600 images, the book's default retraining), all from one fixed 90 % magnitude
mask of the seed-0 init, each sweep into its own temporary run store. The in-process
baseline uses torch's default thread count (all cores), as ``reproduce`` does; pool
and Ray workers run one torch thread per unit. Ray's per-task overhead is measured
two ways: trivial tasks through the executor, and (Ray wall x workers - summed unit
time) / units. Start-up (Ray's ``init``, spawning workers, their imports) is timed apart, not in the sweep wall times.

Then the paper profile's wall time on N GPUs is projected by simulating a greedy
scheduler over every unit (LOBSTER, dense, 1-S, controls) with its GPU share and its
dependencies; per-run times come from epochs x steps x an assumed GPU time per step
(printed with the CPU time per step measured here). Every assumption is printed.
"""

import argparse
import dataclasses
import functools
import heapq
import itertools
import os
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from psputil import models
from psputil.experiments import setups, units
from psputil.pruning import oneshot
from psputil.scale import context, executors, sweep
from psputil.scale.progress import Progress
from psputil.store import RunStore

# --- projection assumptions (edit these; they are printed) ---------------------------
GPU_STEP_MS = {"lenet300": 1.0, "lenet5": 1.5, "resnet32": 20.0}  # one SGD step, paper batch, fp32, incl. eval share
LOBSTER_EPOCHS = {"lenet300": 2000, "lenet5": 2000, "resnet32": 1000}  # epochs LOBSTER runs before it stops
TRAIN_SIZE = {"mnist": 54000, "fashion-mnist": 54000, "cifar10": 45000}  # 90 % of the training set (10 % valid)
ONESHOT_PER_MILESTONE = True  # 1-S of every LOBSTER seed at every milestone, plus the dense run it prunes


def noop(config):
    return config


def warm(config):
    """Start-up work of a fresh worker (imports), kept out of the timed sweeps."""
    import psputil.experiments.units  # noqa: F401

    return config


def start(executor):
    """Seconds to make `executor` and warm its workers (imports), and the executor."""
    tick = time.perf_counter()
    ex = executor()
    list(ex.run(warm, range(2 * ex.workers)))
    return time.perf_counter() - tick, ex


def timed_sweep(executor, fn, runs):
    with tempfile.TemporaryDirectory() as root:
        ctx = context.Context(RunStore(root), torch.device("cpu"), executor, Progress())  # silent; not closed here
        report = sweep.run(fn, runs, "bench", ctx, units.resources, retries=0)
    if not report.ok:
        raise sweep.SweepFailed(report)
    return report


def trivial_overhead(executor, n):
    """Seconds per trivial task through `executor` (throughput, all workers busy)."""
    list(executor.run(noop, range(2 * executor.workers)))  # warm the workers
    start = time.perf_counter()
    list(executor.run(noop, range(n)))
    return (time.perf_counter() - start) / n


def cpu_step_seconds(model_name, batch_size, steps):
    """Measured seconds per SGD step here (one torch thread) on random data of the model's input shape."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = models.build(model_name)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(batch_size, *models.INPUT_SHAPES[model_name])
        y = torch.randint(0, 10, (batch_size,))
        for i in range(steps + 1):
            if i == 1:
                start = time.perf_counter()  # the first step warms up
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        return (time.perf_counter() - start) / steps
    finally:
        torch.set_num_threads(threads)


def paper_units():
    """Every unit of the paper profile: (name, setup name, model, epochs, steps/epoch, GPU share, deps).

    As ``experiments.curves.pruning_curves`` runs it: per LOBSTER seed its run, the dense run of
    that seed, its 1-S at every milestone (from G's sparsity there and the dense run) and
    ``control_seeds`` runs of every control kind at every milestone (from G's masks).
    """
    out = []
    for name in setups.SETUP_NAMES:
        s = setups.setup(name, "paper")
        share = units.GPU_SHARE[s.model]
        steps = -(-TRAIN_SIZE[s.data.name] // s.train.batch_size)
        lob_steps = -(-TRAIN_SIZE[s.data.name] // s.lobster_train.batch_size)
        for lseed in range(s.lobster_seeds):
            lob, dense = f"{name}/lobster{lseed}", f"{name}/dense{lseed}"
            out.append((lob, name, s.model, LOBSTER_EPOCHS[s.model], lob_steps, share, ()))
            out.append((dense, name, s.model, s.train.epochs, steps, share, ()))
            for m in s.milestones:
                if ONESHOT_PER_MILESTONE:
                    out.append((f"{name}/1s{m}/{lseed}", name, s.model, s.train.epochs, steps, share, (lob, dense)))
                for kind in oneshot.CONTROL_KINDS:
                    for seed in range(s.control_seeds):
                        out.append((f"{name}/{kind}{m}/{lseed}/{seed}", name, s.model, s.train.epochs, steps, share,
                                    (lob,)))
    return out


def simulate(units, gpus, seconds):
    """Makespan of greedy list scheduling (longest ready unit first, first-fit GPU share).

    Ready units wait in one heap per GPU share (longest first, ties in arrival order), so each
    placement looks at one head per share instead of every ready unit.
    """
    by_name = {u[0]: u for u in units}
    waiting = {u[0]: set(u[6]) for u in units}
    dependents = {}
    for u in units:
        for d in u[6]:
            dependents.setdefault(d, []).append(u[0])
    ready, arrivals = {}, itertools.count()  # share -> heap of (-seconds, arrival, name)

    def arrive(name):
        heapq.heappush(ready.setdefault(by_name[name][5], []), (-seconds[name], next(arrivals), name))

    for u in units:
        if not u[6]:
            arrive(u[0])
    free, running, now = [1.0] * gpus, [], 0.0
    while any(ready.values()) or running:
        while True:  # place the longest ready unit that fits somewhere, until none fits
            room = max(free)
            fits = [heap[0] + (share,) for share, heap in ready.items() if heap and share <= room + 1e-9]
            if not fits:
                break
            _, _, name, share = min(fits)
            heapq.heappop(ready[share])
            gpu = next(g for g in range(gpus) if free[g] >= share - 1e-9)
            free[gpu] -= share
            heapq.heappush(running, (now + seconds[name], name, gpu))
        now, name, gpu = heapq.heappop(running)
        free[gpu] += by_name[name][5]
        for child in dependents.get(name, ()):
            waiting[child].discard(name)
            if not waiting[child]:
                arrive(child)
    return now


def hours(seconds):
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("smoke", "quick"), default="quick")
    parser.add_argument("--units", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=None, help="epochs per retraining (default: the profile's)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-ray", action="store_true", help="no Ray part (ray not installed)")
    parser.add_argument("--projection-steps", type=int, default=None,
                        help="SGD steps timed per model for the CPU s/step (default: 50 LeNet-300, 20 LeNet-5, "
                             "3 ResNet-32)")
    args = parser.parse_args(argv)

    setup = setups.setup("lenet300-mnist", args.profile)
    if args.epochs:
        setup = dataclasses.replace(setup, train=dataclasses.replace(setup.train, epochs=args.epochs))
    init = models.build(setup.model, seed=0)
    _, mask = oneshot.prune_and_rewind(init, init.state_dict(), init.state_dict(), 90.0)
    runs = [setup.control_run(0, 90.0, "reinit", seed) for seed in range(args.units)]
    fn = functools.partial(units.compute_control, g_mask=mask, device="cpu")
    print(f"{args.units} LeNet-300/mnist-5k retrainings ({args.profile}: {setup.train.epochs} epochs, "
          f"{setup.data.train_size or 3600} images), {os.cpu_count()} CPUs, torch {torch.__version__}")

    walls = {}
    with executors.InProcessExecutor() as ex:
        report = timed_sweep(ex, fn, runs)
    walls["in-process"] = report.seconds
    print(f"  in-process ({torch.get_num_threads()} torch threads): {report.seconds:7.1f} s")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the serial baseline of what each worker does
    try:
        with executors.InProcessExecutor() as ex:
            report = timed_sweep(ex, fn, runs)
    finally:
        torch.set_num_threads(threads)
    walls["serial"] = report.seconds
    print(f"  in-process (1 torch thread):   {report.seconds:7.1f} s")
    startup, pool = start(lambda: executors.ProcessPoolExecutor(args.workers))
    with pool as ex:
        report = timed_sweep(ex, fn, runs)
        pool_trivial = trivial_overhead(ex, 200)
    walls["process-pool"] = report.seconds
    unit_seconds = report.unit_seconds / args.units
    print(f"  process pool ({args.workers} workers): {report.seconds:7.1f} s  "
          f"(x{walls['in-process'] / report.seconds:.2f} vs in-process, x{walls['serial'] / report.seconds:.2f} vs "
          f"1 thread; start-up {startup:.1f} s not included; one unit {unit_seconds:.2f} s on one thread)")
    if not args.skip_ray:
        startup, ray_executor = start(lambda: executors.RayExecutor(workers=args.workers))
        with ray_executor as ex:
            report = timed_sweep(ex, fn, runs)
            ray_trivial = trivial_overhead(ex, 200)
        walls["ray"] = report.seconds
        idle = (report.seconds * args.workers - report.unit_seconds) / args.units
        print(f"  ray ({args.workers} workers):          {report.seconds:7.1f} s  "
              f"(x{walls['in-process'] / report.seconds:.2f} vs in-process, x{walls['serial'] / report.seconds:.2f} vs "
              f"1 thread; start-up {startup:.1f} s not included)")
        print(f"  ray overhead per task: trivial tasks {1e3 * ray_trivial:.1f} ms (pool {1e3 * pool_trivial:.1f} ms); "
              f"(wall x workers - unit time) / units {1e3 * idle:.0f} ms; "
              f"(ray wall - 1-thread in-process wall / {args.workers}) / units "
              f"{1e3 * (report.seconds - walls['serial'] / args.workers) / args.units:.0f} ms")

    print("\nProjection of the paper profile (assumptions: GPU_STEP_MS, LOBSTER_EPOCHS, TRAIN_SIZE in this file)")
    paper = setups.setup("lenet300-mnist", "paper")
    print(f"  units per setup (as the book runs them): {paper.lobster_seeds} LOBSTER runs, each with its dense run, "
          f"its 1-S at every milestone{'' if ONESHOT_PER_MILESTONE else ' (left out)'} and {paper.control_seeds} runs "
          f"of each of the {len(oneshot.CONTROL_KINDS)} controls at every milestone")
    steps_here = {"lenet300": (100, 50), "lenet5": (100, 20), "resnet32": (128, 3)}
    if args.projection_steps:
        steps_here = {m: (b, args.projection_steps) for m, (b, _) in steps_here.items()}
    cpu_step = {m: cpu_step_seconds(m, b, n) for m, (b, n) in steps_here.items()}
    quick_steps = setup.train.epochs * -(-(setup.data.train_size or 3600) // setup.train.batch_size)
    print(f"  measured here, one thread: s/step " + ", ".join(f"{m} {1e3 * t:.1f} ms" for m, t in cpu_step.items())
          + f"; one {args.profile} retraining = {quick_steps} steps -> predicted {quick_steps * cpu_step['lenet300']:.2f} s, "
          f"measured {unit_seconds:.2f} s (x{unit_seconds / (quick_steps * cpu_step['lenet300']):.2f}: eval + loop overhead)")
    print(f"  assumed GPU s/step: " + ", ".join(f"{m} {v:g} ms" for m, v in GPU_STEP_MS.items())
          + f" (CPU/GPU ratio {', '.join(f'{1e3 * cpu_step[m] / v:.0f}x' for m, v in GPU_STEP_MS.items())})")
    all_units = paper_units()
    seconds = {u[0]: u[3] * u[4] * GPU_STEP_MS[u[2]] / 1e3 for u in all_units}
    print("\n| setup | units | GPU time, one run | GPU-hours (share-weighted) | LOBSTER (critical path) |")
    print("|---|---|---|---|---|")
    for name in setups.SETUP_NAMES:
        mine = [u for u in all_units if u[1] == name]
        one = seconds[f"{name}/dense0"]
        work = sum(seconds[u[0]] * u[5] for u in mine)
        print(f"| {name} | {len(mine)} | {hours(one)} | {work / 3600:.1f} | {hours(seconds[name + '/lobster0'])} |")
    total = sum(seconds[u[0]] * u[5] for u in all_units)
    print(f"| all | {len(all_units)} | | {total / 3600:.1f} | |")
    print("\n| GPUs | projected wall time | speed-up vs 1 GPU |")
    print("|---|---|---|")
    one_gpu = simulate(all_units, 1, seconds)
    for gpus in (1, 2, 4, 8, 16, 32):
        wall = one_gpu if gpus == 1 else simulate(all_units, gpus, seconds)
        print(f"| {gpus} | {hours(wall)} | x{one_gpu / wall:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
