"""The GPU path of the paper profile: throughput, utilisation ratios and a LOBSTER run's wall time.

On the device (CUDA when present, else the CPU; data resident on the device):

1. Matmul peak (4096^2 float32; on CUDA also bf16): the reference for the ratios below.
2. Training throughput of one ``train.fit`` epoch (batch 100; ResNet-32: batch 128, on
   synthetic CIFAR-shaped tensors) as GFLOP/s (6 x MACs per training sample) and as a
   fraction of the peak, i.e. the step time over the time of a same-size matmul. Variants:
   ResNet-32 fp32 / bf16 autocast / channels-last; LeNets: ``fit`` vs the stacked trainer
   (K members per step, the launch-bound fix) and, on CUDA, a CUDA-graph replay of the step.
3. LOBSTER, LeNet-5, authors' settings (lam 1e-4, twt 0.05, pwe 20, target 99.5 %, SGD lr
   0.1, batch 100, ReduceLROnPlateau threshold 0 / cooldown 50): ``--lobster measure``
   (default) times `--lobster-epochs` epochs and projects the 2,000-epoch budget;
   ``--lobster full`` runs to the target and prints the wall time; ``off`` skips it.

    python benchmarks/gpu.py [--device auto] [--lobster measure|full|off] [--lobster-epochs 20]
    python benchmarks/gpu.py --tiny      # seconds on a CPU, tiny data (what CI runs)

Full MNIST is read from $PSPUTIL_DATA/MNIST/raw (mnist-5k when absent).
"""

import argparse
import contextlib
import dataclasses
import time

import torch
import torch.nn.functional as F
from torch import nn

from psputil import data, devices, models, train
from psputil.train_stacked import Member, fit_stacked


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def matmul_rate(device, dtype=torch.float32, size=4096, reps=10):
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    a @ b
    best = min(timed(lambda: [a @ b for _ in range(reps)], device)[0] for _ in range(3))
    return 2 * size**3 * reps / best


def macs(model, sample):
    total = [0]

    def hook(module, inputs, output):
        total[0] += (module.in_features * module.out_features if isinstance(module, nn.Linear)
                     else output[0].numel() * module.weight[0].numel())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad(), train.eval_mode(model):
        model(sample[:2])
    for handle in handles:
        handle.remove()
    return total[0]


@contextlib.contextmanager
def channels_last(enabled):
    """Conv models train channels-last inside ``fit`` (the proposed train.py patch, monkeypatched)."""
    original = train._train_epoch

    def epoch(state, hooks, augment, device):
        state.model.to(memory_format=torch.channels_last)
        try:
            return original(state, hooks, augment, device)
        finally:
            state.model.to(memory_format=torch.contiguous_format)

    if enabled:
        train._train_epoch = epoch
    try:
        yield
    finally:
        train._train_epoch = original


def synthetic_cifar(n, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    split = lambda m: data.TensorSplit(torch.randn(m, 3, 32, 32, generator=g), torch.randint(0, 10, (m,), generator=g))
    splits = data.DataSplits(data.DataConfig("cifar10-synthetic"), split(n), split(max(n // 8, 16)), split(16),
                             10, (3, 32, 32))
    return splits.to(device)


def report(label, seconds, flops, peak, extra=""):
    rate = flops / seconds
    print(f"  {label:34s} {seconds:8.3f} s  {rate / 1e9:8.1f} GFLOP/s  {100 * rate / peak:5.1f} % of peak{extra}")


def throughput(args, device, splits, peak, peak_bf16):
    print("\ntraining throughput (one epoch incl. validation; 6 x MACs per training sample):")
    n = len(splits.train)
    for name in ("lenet300", "lenet5"):
        model = models.build(name)
        flops = 6 * macs(model, splits.train.images) * n
        config = train.TrainConfig(epochs=1, lr=0.05, batch_size=100)
        seconds, history = timed(lambda: train.fit(models.build(name), splits, config, device=device, progress=False), device)
        steps = -(-n // 100)
        report(f"{name} fit", seconds, flops, peak, f"  {1e3 * seconds / steps:6.2f} ms/step")
        k = args.stack
        members = [Member(models.build(name, seed=s).state_dict(), config, seed=s) for s in range(k)]
        seconds_k, _ = timed(lambda: fit_stacked(models.build(name), splits, members, device=device, progress=False), device)
        report(f"{name} stacked K={k}", seconds_k, k * flops, peak, f"  {seconds * k / seconds_k:5.2f}x fit per member")
        if device.type == "cuda":
            step_eager, step_graph = graphed_step_times(name, splits, device)
            print(f"  {name} one step: eager {1e3 * step_eager:.3f} ms, CUDA graph {1e3 * step_graph:.3f} ms "
                  f"({step_eager / step_graph:.2f}x)")
    cifar = synthetic_cifar(args.resnet_samples, device)
    flops = 6 * macs(models.build("resnet32"), cifar.train.images) * len(cifar.train)
    base = dataclasses.replace(train.RESNET32_RECIPE, epochs=1, augment=False)
    bf16 = dataclasses.replace(base, precision="bf16")
    variants = [("resnet32 fp32", base, False, peak), ("resnet32 fp32 channels-last", base, True, peak)]
    if device.type == "cuda":  # bf16 autocast is a GPU option (CPUs without AMX emulate it slowly)
        variants += [("resnet32 bf16 autocast", bf16, False, peak_bf16), ("resnet32 bf16 channels-last", bf16, True, peak_bf16)]
    for label, config, cl, reference in variants:
        with channels_last(cl):
            seconds, _ = timed(lambda: train.fit(models.build("resnet32"), cifar, config, device=device, progress=False), device)
        report(label, seconds, flops, reference)


def graphed_step_times(name, splits, device, batch=100, steps=50):
    """(eager, CUDA-graph) seconds per training step (forward, backward, SGD) of one model."""
    model = models.build(name).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = splits.train.images[:batch].clone(), splits.train.labels[:batch].clone()

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    eager, _ = timed(lambda: [step() for _ in range(steps)], device)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    replay, _ = timed(lambda: [graph.replay() for _ in range(steps)], device)
    return eager / steps, replay / steps


def lobster_run(args, device, splits):
    from psputil.pruning import lobster

    authors = {"plateau_threshold": 0.0, "plateau_cooldown": 50}
    epochs = args.lobster_epochs if args.lobster == "measure" else args.lobster_budget
    config = train.TrainConfig(epochs=epochs, lr=0.1, batch_size=100, schedule="plateau", **authors)
    pwe = 1 if args.tiny else 20
    lob = lobster.LobsterConfig(lam=1e-4, twt=0.05, pwe=pwe, target=99.5)
    seconds, result = timed(lambda: lobster.run(models.build("lenet5"), splits, lob, config, seed=0, device=device,
                                                progress=args.progress), device)
    history, levels = result["history"], result["levels"]
    reached = max([row["sparsity"] for row in levels] + [r["sparsity"] for r in history] + [0.0])
    first = next((row["start_epoch"] for row in levels if row["sparsity"] >= 99.5), None)  # the event reaching it
    print(f"\nLOBSTER LeNet-5 (lam 1e-4, twt 0.05, pwe {pwe}, target 99.5 %, lr 0.1, batch 100, plateau {authors}): "
          f"{len(history)} epochs in {seconds:.1f} s ({seconds / max(len(history), 1):.2f} s/epoch), "
          f"max sparsity {reached:.2f} %, stopped: {result['stopped']}")
    if args.lobster == "measure":
        print(f"  projected 2,000-epoch budget: {2000 * seconds / max(len(history), 1) / 3600:.2f} h")
    elif first is not None:
        print(f"  99.5 % first reached at epoch {first}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny", action="store_true", help="tiny data, seconds on a CPU (CI)")
    parser.add_argument("--lobster", choices=("measure", "full", "off"), default="measure")
    parser.add_argument("--lobster-epochs", type=int, default=20, help="epochs timed by --lobster measure")
    parser.add_argument("--lobster-budget", type=int, default=2000, help="epoch budget of --lobster full")
    parser.add_argument("--stack", type=int, default=16, help="members of the stacked LeNet runs")
    parser.add_argument("--resnet-samples", type=int, default=5120)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    device = devices.resolve(args.device)
    if args.tiny:
        torch.set_num_threads(1)  # code paths, not speed: one thread is steadiest on a shared CPU
        splits = data.load(data.DataConfig("mnist-5k", train_size=200, test_size=100), device=device)
        args.stack, args.resnet_samples, args.lobster_epochs = 2, 16, 1
        args.lobster_budget = min(args.lobster_budget, 1)
    else:
        try:
            splits = data.load(data.DataConfig("mnist"), device=device)
        except FileNotFoundError:
            splits = data.load(data.DataConfig("mnist-5k"), device=device)
    size = 256 if args.tiny else 4096
    peak = matmul_rate(device, torch.float32, size, reps=2 if args.tiny else 10)
    peak_bf16 = matmul_rate(device, torch.bfloat16, size, reps=2 if args.tiny else 10) if device.type == "cuda" else peak
    print(f"{devices.environment(device)}; threads {torch.get_num_threads()}")
    print(f"data {splits.config.name}: {len(splits.train)} training images resident on {splits.train.images.device}; "
          f"matmul peak {size}^2: fp32 {peak / 1e9:.1f} GFLOP/s, bf16 {peak_bf16 / 1e9:.1f} GFLOP/s"
          + (f", TF32 allowed: {torch.backends.cuda.matmul.allow_tf32}" if device.type == "cuda" else ""))
    throughput(args, device, splits, peak, peak_bf16)
    if args.lobster != "off":
        lobster_run(args, device, splits)


if __name__ == "__main__":
    main()
