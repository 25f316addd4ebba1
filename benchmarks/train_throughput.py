"""Training throughput as a fraction of the CPU's matmul peak, measured in one run.

For LeNet-300 and LeNet-5, one epoch of ``train.fit`` (batch 100, the authors'
setting; SGD with a ``MaskHook``, as the retrainings run) on full MNIST
(``$PSPUTIL_DATA/MNIST/raw``; mnist-5k when absent), timed as ``fit`` records it
(steps plus the validation pass). Achieved FLOP/s count, per sample, the model's
multiply-accumulates (MACs) of Linear and Conv2d layers from one traced forward:

    FLOPs per epoch = 6 x MACs x n_train   (forward 2 x MACs, backward 4 x MACs)
                    + 2 x MACs x n_valid   (the validation forward)

LeNet-300: 266,200 MACs per sample; LeNet-5: 2,293,000. (The backward of the first
layer needs no input gradient, so 6 x MACs slightly overcounts: the usual convention.)
The peak is a 2048 x 2048 float32 ``torch.mm`` timed between the epochs (best of 5).

Variants, interleaved (`--repeats` rounds; best and median epoch):
  fit          ``train.fit`` as it is (conv models train channels-last on the CPU);
  fit+patch    LeNet-5's first convolution as one product over patches
               (``train_stacked.patch_conv2d``, monkeypatched: a candidate, not adopted);
  stacked K=1  ``train_stacked.fit_stacked`` with one member (same kernels, its own SGD).

Measured on this CPU (2026-12-04, idle, 1 thread): LeNet-5's step is ~60 % convolutions
(conv2 channels-last at ~75 % of peak, conv1 with one input channel at ~35 %), the rest
ReLU, pooling and their backward (memory-bound); ``torch.compile`` of the model made the
step slower (54 vs 30 ms), so eager kernels stay.

    python benchmarks/train_throughput.py [--epochs 1] [--repeats 3] [--threads N] [--data mnist|mnist-5k]
"""

import argparse
import os
import statistics
import time

import torch
from torch import nn

from psputil import data, models, pruning, train
from psputil.train_stacked import Member, fit_stacked, patch_conv2d

MACS = {"lenet300": 784 * 300 + 300 * 100 + 100 * 10,
        "lenet5": 20 * 24 * 24 * 25 + 50 * 8 * 8 * 500 + 800 * 500 + 500 * 10}


def traced_macs(model, sample):
    """MACs of the Linear and Conv2d layers of `model` on one sample (forward hooks)."""
    total = [0]

    def hook(module, inputs, output):
        if isinstance(module, nn.Linear):
            total[0] += module.in_features * module.out_features
        else:
            total[0] += output[0].numel() * module.weight[0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        model(sample[:1])
    for handle in handles:
        handle.remove()
    return total[0]


def matmul_peak(size=2048, repeats=5):
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def patched_first_conv(model):
    """A candidate (not adopted), monkeypatched on one model: conv1 as a product over patches."""
    conv = model.conv1
    plain = conv.forward

    def forward(x):
        if (x.requires_grad or x.device.type != "cpu" or conv.groups != 1 or conv.padding_mode != "zeros"
                or torch._C._are_functorch_transforms_active()):
            return plain(x)
        return patch_conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation)

    conv.forward = forward
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1, help="epochs per run (the best epoch counts)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--data", default=None, help="mnist (default when its files are there) or mnist-5k")
    parser.add_argument("--models", nargs="+", default=["lenet300", "lenet5"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.data
    if name is None:
        try:
            splits = data.load(data.DataConfig("mnist"))
            name = "mnist"
        except FileNotFoundError:
            name = "mnist-5k"
    splits = data.load(data.DataConfig(name))
    n_train, n_valid = len(splits.train), len(splits.valid)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {name}: {n_train} training and {n_valid} "
          f"validation samples per epoch, batch 100, {args.repeats} interleaved rounds (PSPUTIL_DATA="
          f"{os.environ.get('PSPUTIL_DATA', '')})")
    config = train.TrainConfig(epochs=args.epochs, lr=0.05, batch_size=100)
    for model_name in args.models:
        model = models.build(model_name)
        macs = traced_macs(model, splits.train.images)
        assert macs == MACS[model_name], (macs, MACS[model_name])
        flops = 6 * macs * n_train + 2 * macs * n_valid
        mask = pruning.full_mask(model)

        def fit(patch_conv=False):
            net = models.build(model_name)
            if patch_conv:
                patched_first_conv(net)
            history = train.fit(net, splits, config, hooks=[pruning.MaskHook(mask)], device="cpu", progress=False)
            return min(r["seconds"] for r in history)

        def stacked():
            member = Member(models.build(model_name).state_dict(), config, seed=0, mask=mask)
            history = fit_stacked(models.build(model_name), splits, [member], device="cpu", progress=False)[0]["history"]
            return min(r["seconds"] for r in history)

        variants = {"fit": fit, "stacked K=1": stacked}
        if model_name == "lenet5":
            variants = {"fit": fit, "fit+patch": lambda: fit(True), "stacked K=1": stacked}
        seconds = {v: [] for v in variants}
        peaks = []
        for _ in range(args.repeats):
            for variant, run in variants.items():
                peaks.append(matmul_peak())
                seconds[variant].append(run())
        peak = max(peaks)
        print(f"\n{model_name}: {macs:,} MACs/sample; {flops / 1e9:.1f} GFLOP per epoch; matmul peak "
              f"{peak / 1e9:.1f} GFLOP/s (best of {len(peaks) * 5}; median of rounds "
              f"{statistics.median(peaks) / 1e9:.1f})")
        base = min(seconds["fit"])
        for variant, times in seconds.items():
            best, median = min(times), statistics.median(times)
            print(f"  {variant:13s} epoch best {best:7.2f} s (median {median:7.2f}) | {flops / best / 1e9:6.1f} GFLOP/s = "
                  f"{100 * flops / best / peak:4.0f} % of peak (median {100 * flops / median / peak:3.0f} %) | "
                  f"{base / best:4.2f}x fit")
    print("\ngoals: LeNet-5 >= 60 % of peak, LeNet-300 >= 70 %")


if __name__ == "__main__":
    main()
