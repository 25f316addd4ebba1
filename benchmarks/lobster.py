"""LOBSTER cost: time per epoch against plain SGD, and wall time to 98 % sparsity.

Run: python benchmarks/lobster.py [--epochs 30] [--repeats 3]

1. LeNet-300 on mnist-5k, same data, seed and schedule: per-epoch wall time of plain SGD
   (``train.fit``) and of SGD + LOBSTER shrinkage and masks (pruning events disabled by a
   patience longer than the run). Median over `repeats` runs of each, interleaved. Goal:
   the regulariser adds at most 20 %.
2. The quick-profile LOBSTER run (psputil.experiments, "lenet300-mnist") from scratch,
   stopped at 98 %: wall time until it reaches 98 % sparsity, with the sparsity and test error reached and
   the dense baseline's test error.
"""

import argparse
import dataclasses
import statistics
import time

import torch

from psputil import data, models, train

from psputil.experiments import runs as experiments

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

    setup = experiments.setup("lenet300-mnist", "quick")
    setup = dataclasses.replace(setup, lobster=dataclasses.replace(setup.lobster, target=98.0))  # stop at 98 %
    start = time.perf_counter()
    result = experiments.compute_lobster(experiments.LobsterRun(setup, seed=0), device="cpu")
    seconds = time.perf_counter() - start
    reached = [row for row in result["events"] if row["sparsity"] >= 98.0]
    dense = experiments.compute_dense(experiments.DenseRun(setup, seed=0), device="cpu")
    print(f"quick LOBSTER run (lam {setup.lobster.lam}, pwe {setup.lobster.pwe}, twt {setup.lobster.twt}, "
          f"lr {setup.lobster_train.lr}): {seconds:.1f} s wall, {len(result['history'])} epochs, "
          f"{len(result['events'])} pruning events, stopped: {result['stopped']}")
    if reached:
        row = reached[0]
        print(f"98% reached at epoch {row['epoch']}: sparsity {row['sparsity']:.2f}%, test error {row['test_error']:.2f}% "
              f"(dense baseline {dense['test_error']:.2f}%)")
    else:
        last = result["events"][-1] if result["events"] else {"sparsity": 0.0, "test_error": float("nan")}
        print(f"98% NOT reached: last sparsity {last['sparsity']:.2f}%, test error {last['test_error']:.2f}%")


if __name__ == "__main__":
    main()
