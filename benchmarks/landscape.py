"""A 21 x 21 loss map: our batched grid evaluator vs a per-point ``load_state_dict`` loop.

Two models per architecture (LeNet-300 and LeNet-5, seeds 0 and 1) trained briefly
on mnist-5k span the plane; the map covers a in [-0.5, 1.5], b in [-1, 1] on
`--samples` test images, batches of 500, for both methods in one run,
interleaved slice by slice (3 grid rows at a time; times summed). The
baseline is what one writes without vmap: for every grid point, load the state
dict into a model and run the batches. We also time the vmapped evaluator with the
input-layer factoring switched off, to show where the gain comes from.

    python benchmarks/landscape.py [--samples 1000] [--lenet5-samples 200] [--points 21] [--threads N]
"""

import argparse
import copy
import time

import numpy as np
import torch
import torch.nn.functional as F

from psputil import data, landscape, models, train


def loop_map(plane, model, a_values, b_values, batches):
    model = copy.deepcopy(model).eval()
    out = np.empty((len(b_values), len(a_values)))
    with torch.no_grad():
        for i, b in enumerate(b_values):
            for j, a in enumerate(a_values):
                model.load_state_dict(plane.state_dict_at(a, b))
                total = sum(F.cross_entropy(model(x), y, reduction="sum").item() for x, y in batches)
                out[i, j] = total / sum(len(y) for _, y in batches)
    return out


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=21, help="grid points per axis")
    parser.add_argument("--samples", type=int, default=1000, help="test images for LeNet-300")
    parser.add_argument("--lenet5-samples", type=int, default=200, help="test images for LeNet-5 (its loop is slow on 2 cores)")
    parser.add_argument("--points-per-pass", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = data.load("mnist-5k")
    a_values = np.linspace(-0.5, 1.5, args.points)
    b_values = np.linspace(-1.0, 1.0, args.points)
    print(f"{args.points}x{args.points} grid, batches of 500, CPU with {torch.get_num_threads()} torch threads, "
          f"points per pass {args.points_per_pass}")
    for name, samples in (("lenet300", args.samples), ("lenet5", args.lenet5_samples)):
        pair = []
        for seed in (0, 1):
            model = models.build(name, seed=seed)
            train.fit(model, splits, train.TrainConfig(epochs=args.epochs, lr=0.05), seed=seed, device="cpu", progress=False)
            pair.append(model)
        plane = landscape.plane_through(*pair, seed=0)
        test = splits.test.subset(samples, seed=0)
        batches = list(test.batches(500))

        # Interleave the three methods slice by slice (3 rows of the grid at a time) so
        # that load from other processes hits them alike; sum the times.
        maps = {"batched": [], "batched, no factoring": [], "loop": []}
        seconds = dict.fromkeys(maps, 0.0)
        for start in range(0, len(b_values), 3):
            rows = b_values[start : start + 3]
            for method in maps:
                if method == "loop":
                    part, spent = timed(lambda: loop_map(plane, pair[0], a_values, rows, batches))
                else:
                    part, spent = timed(lambda: landscape.evaluate_grid(
                        plane, a_values, rows, batches, points_per_pass=args.points_per_pass,
                        factor_input_layers=method == "batched", progress=False)["loss"])
                maps[method].append(part)
                seconds[method] += spent
        ours, plain, baseline = (np.concatenate(maps[m]) for m in ("batched", "batched, no factoring", "loop"))
        difference = max(np.abs(m - baseline).max() / np.abs(baseline).max() for m in (ours, plain))
        loop_s, ours_s, plain_s = seconds["loop"], seconds["batched"], seconds["batched, no factoring"]
        at_g = ours[np.argmin(np.abs(b_values)), np.argmin(np.abs(a_values))]
        print(f"{name:8s} ({samples} images): loop {loop_s:6.2f} s | batched {ours_s:6.2f} s -> {loop_s / ours_s:4.1f}x | "
              f"batched without input-layer factoring {plain_s:6.2f} s -> {loop_s / plain_s:4.1f}x | "
              f"max relative difference {difference:.1e} | loss at G {at_g:.4f}")

if __name__ == "__main__":
    main()
