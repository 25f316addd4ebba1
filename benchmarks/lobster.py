"""LOBSTER cost: time per epoch against plain SGD, and wall time to 98 % sparsity.

Run: python benchmarks/lobster.py [--epochs 30] [--repeats 3] [--profile quick] [--target 98]
     python benchmarks/lobster.py --epochs 1 --repeats 1 --profile smoke --target 80   # seconds (CI)

1. LeNet-300 on mnist-5k, same data, seed and schedule: per-epoch wall time of plain SGD
   (``train.fit``) and of SGD + LOBSTER shrinkage and masks (pruning events disabled by a
   patience longer than the run). Median over `repeats` runs of each, interleaved. Goal:
   the regulariser adds at most 20 %.
2. The quick-profile LOBSTER run (``setups.setup("lenet300-mnist", "quick").lobster_run(0)``) from
   scratch with its target set to 98 %: wall time until the pruning event that reaches 98 % sparsity
   (the run then trains on at that level until the next plateau; its whole wall time is printed too),
   with the sparsity reached, G's test error at that level and the dense baseline's test error.
"""

import argparse
import dataclasses
import statistics
import time

import torch

from psputil import data, models, train
from psputil.experiments import setups, units
from psputil.pruning import lobster


def per_epoch(run, epochs):
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) / epochs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: stable on a shared CPU)")
    parser.add_argument("--profile", choices=("smoke", "quick"), default="quick", help="setup profile of part 2")
    parser.add_argument("--target", type=float, default=98.0, help="sparsity (percent) part 2 prunes to")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    splits = data.load("mnist-5k")
    config = train.TrainConfig(epochs=args.epochs, lr=0.1, batch_size=100)
    no_events = lobster.LobsterConfig(lam=1e-3, pwe=10 * args.epochs)
    model = models.build("lenet300")
    plain, regularised = [], []
    for _ in range(args.repeats):
        plain.append(per_epoch(lambda: train.fit(models.build("lenet300"), splits, config, device="cpu", progress=False), args.epochs))
        regularised.append(per_epoch(lambda: lobster.run(model, splits, no_events, config, device="cpu"), args.epochs))
    p, r = statistics.median(plain), statistics.median(regularised)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, LeNet-300 / mnist-5k, batch 100, "
          f"{args.epochs} epochs, median of {args.repeats}")
    print(f"plain SGD      : {1000 * p:7.1f} ms/epoch")
    print(f"SGD + LOBSTER  : {1000 * r:7.1f} ms/epoch")
    print(f"ratio LOBSTER/SGD: {r / p:.3f}  (goal <= 1.20)")

    target = args.target
    setup = setups.setup("lenet300-mnist", args.profile)
    setup = dataclasses.replace(setup, lobster=dataclasses.replace(setup.lobster, target=target))
    units.load_splits(setup.data)  # data loading is not LOBSTER's time
    event_seconds = {}  # epoch of each pruning event -> wall seconds since the start

    def on_event(checkpoint):  # also called once at the end (no event then)
        event_seconds.setdefault(checkpoint["epoch"], time.perf_counter() - start)

    start = time.perf_counter()
    result = units.compute_lobster(setup.lobster_run(0), device="cpu", on_event=on_event)
    seconds = time.perf_counter() - start
    events = result["levels"][1:]  # level k >= 1 starts with pruning event k
    reached = [row for row in events if row["sparsity"] >= target]
    dense = units.compute_dense(setup.dense_run(0), device="cpu")
    print(f"{args.profile} LOBSTER run (lam {setup.lobster.lam}, pwe {setup.lobster.pwe}, twt {setup.lobster.twt}, "
          f"lr {setup.lobster_train.lr}, target {target:g}%): {seconds:.1f} s wall, {len(result['history'])} epochs, "
          f"{len(events)} pruning events, stopped: {result['stopped']}")
    if reached:
        row = reached[0]
        print(f"{target:g}% reached at epoch {row['start_epoch']} after {event_seconds[row['start_epoch']]:.1f} s: "
              f"sparsity {row['sparsity']:.2f}%, test error of G at that level {row['best']['test_error']:.2f}% "
              f"({row['after_pruning']['test_error']:.2f}% right after pruning; dense baseline {dense['test_error']:.2f}%)")
    else:
        last = result["levels"][-1]
        print(f"{target:g}% NOT reached: last sparsity {last['sparsity']:.2f}%, test error of G "
              f"{last['best']['test_error']:.2f}% (dense baseline {dense['test_error']:.2f}%)")


if __name__ == "__main__":
    main()
