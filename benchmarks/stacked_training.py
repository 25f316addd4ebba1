"""K trainings of one architecture at once (``train_stacked.fit_stacked``) against K sequential ``train.fit`` runs.

Each member is a retraining as the controls run it: its own init (model seed k), a
90 % random mask, its own batch-order seed, plain SGD lr 0.1, batch 100, plateau
schedule. Per model and K, the K sequential runs (``fit`` with a ``MaskHook``) and the
stacked run are timed interleaved, `--repeats` rounds; printed: best and median wall
time, throughput in member-epochs per minute and the ratio sequential / stacked.

    python benchmarks/stacked_training.py [--ks 1 4 16] [--epochs 1] [--repeats 2] [--threads N]
                                          [--data mnist-5k] [--device cpu|cuda]

The default data is mnist-5k (3,600 training images): the ratio does not depend on the
data size. On a CUDA device the stacked run uses a grouped convolution and no
channels-last; on the CPU one convolution per member (first layer: one product over
patches) and channels-last.
"""

import argparse
import statistics
import time

import torch

from psputil import data, devices, models, pruning, train
from psputil.train_stacked import Member, fit_stacked


def members_for(model_name, k, config):
    out = []
    for seed in range(k):
        model = models.build(model_name, seed=seed)
        mask = pruning.random_mask(pruning.magnitude_mask(model, 90.0), seed)
        out.append(Member(model.state_dict(), config, seed=seed, mask=mask))
    return out


def sequential(model_name, splits, members, device):
    for member in members:
        model = models.build(model_name)
        model.load_state_dict(member.state)
        train.fit(model, splits, member.config, seed=member.seed, device=device, hooks=[pruning.MaskHook(member.mask)],
                  progress=False)


def timed(fn):
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--models", nargs="+", default=["lenet300", "lenet5"])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data", default="mnist-5k")
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = devices.resolve(args.device)
    splits = data.load(data.DataConfig(args.data, train_size=args.train_size), device=device)
    config = train.TrainConfig(epochs=args.epochs, lr=0.1, batch_size=100, schedule="plateau")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {devices.environment(device)['device']}; "
          f"{args.data}: {len(splits.train)} training images, {args.epochs} epoch(s) per member, "
          f"{args.repeats} interleaved rounds")
    for model_name in args.models:
        for k in args.ks:
            members = members_for(model_name, k, config)
            runs = {"sequential fit": lambda: sequential(model_name, splits, members, device),
                    "stacked": lambda: fit_stacked(models.build(model_name), splits, members, device=device, progress=False)}
            times = {name: [] for name in runs}
            for _ in range(args.repeats):
                for name, run in runs.items():
                    times[name].append(timed(run))
            best = {name: min(t) for name, t in times.items()}
            line = " | ".join(f"{name} {best[name]:7.2f} s (median {statistics.median(times[name]):7.2f}), "
                              f"{60 * k * args.epochs / best[name]:6.1f} member-epochs/min" for name in runs)
            print(f"{model_name:9s} K={k:2d}: {line} | ratio {best['sequential fit'] / best['stacked']:.2f}x")


if __name__ == "__main__":
    main()
