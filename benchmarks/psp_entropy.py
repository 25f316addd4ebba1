"""PSP-entropy on LeNet-5 / mnist-5k (all 5,000 samples): ours against the authors' algorithm.

1. First order: ``psputil.psp.entropy`` (one pass, one matrix product per layer and
   batch) against the authors' released algorithm re-implemented here (hooks on
   the ReLUs; per batch, per layer, a Python loop over classes with boolean masks
   counting z > 0 and z <= 0; the whole pass repeated once per layer, as their
   ``compute_PSPentropy`` does). Same values asserted; one run each.
2. Second order on every hidden layer, in a fresh child process so that its peak
   resident memory (``resource.getrusage`` ru_maxrss, the kernel's high-water mark;
   ``tracemalloc`` does not see torch's allocations) is not masked by training.
   The achieved FLOP/s counts the pair-count matrix products and divides by the
   whole time (forward pass, packing, entropies included); the reference is a
   plain ``torch.matmul`` of the same tile shape timed in the same process.

Run: ``python benchmarks/psp_entropy.py`` (about a minute or two on 2 CPU cores).
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from psputil import data, models, psp, train

BATCH = 100
EPS = 1e-4  # the authors' clamp
BLOCK = 1024


def all_samples():
    splits = data.load("mnist-5k")
    images = torch.cat([splits.train.images, splits.valid.images, splits.test.images])
    labels = torch.cat([splits.train.labels, splits.valid.labels, splits.test.labels])
    return splits, data.TensorSplit(images, labels)


def authors_first_order(model, split, classes=10):
    """The authors' algorithm: per-layer boolean-mask counting, one full pass per layer."""
    relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    outputs = [None] * len(relus)

    def keeper(index):
        def hook(module, inputs, output):
            outputs[index] = output

        return hook

    handles = [m.register_forward_hook(keeper(i)) for i, m in enumerate(relus)]
    model.eval()
    try:
        with torch.no_grad():
            model(split.images[:1])
            for _ in relus:  # their compute_PSPentropy calls the whole computation once per layer
                sizes = torch.zeros(classes)
                pos = [torch.zeros(o[0].numel(), classes) for o in outputs]
                neg = [torch.zeros(o[0].numel(), classes) for o in outputs]
                for xb, yb in split.batches(BATCH):
                    for c in range(classes):
                        sizes[c] += torch.sum(yb == c).item()
                    model(xb)
                    for idx, out in enumerate(outputs):
                        flat = out.view(len(yb), -1)
                        for c in range(classes):
                            mask = (yb == c).float().unsqueeze(1)
                            pos[idx][:, c] += torch.sum((flat > 0) * mask, dim=0)
                            neg[idx][:, c] += torch.sum((flat <= 0) * mask, dim=0)
                entropies = []
                for idx in range(len(outputs)):
                    p = torch.clamp(pos[idx] / sizes, EPS, 1 - EPS)
                    q = torch.clamp(neg[idx] / sizes, EPS, 1 - EPS)
                    entropies.append((-(p * torch.log2(p) + q * torch.log2(q))).sum(1))
    finally:
        for handle in handles:
            handle.remove()
    return entropies


def second_order_child(state_path, result_path):
    """Second order on every hidden layer; writes time, memory and FLOP figures as JSON."""
    _, split = all_samples()
    model = models.build("lenet5")
    model.load_state_dict(torch.load(state_path, weights_only=True))
    rss_before = _current_rss_mib()
    start = time.perf_counter()
    result = psp.entropy(model, split.batches(BATCH), order=2, num_classes=10, eps=EPS, block_size=BLOCK)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    flops = 0
    n = len(split)
    for neurons in (11520, 3200, 500):  # LeNet-5 hidden layers
        starts = range(0, neurons, BLOCK)
        for i in starts:
            for j in starts:
                if j >= i:
                    flops += 2 * n * min(BLOCK, neurons - i) * min(BLOCK, neurons - j)
    class_size = n // 10
    a = (torch.rand(class_size, BLOCK) > 0.5).float()
    a.T @ a
    reps, t0 = 20, time.perf_counter()
    for _ in range(reps):
        a.T @ a
    plain = 2 * class_size * BLOCK * BLOCK * reps / (time.perf_counter() - t0)
    Path(result_path).write_text(json.dumps({
        "seconds": seconds, "peak_mib": peak, "rss_before_mib": rss_before, "flops": flops,
        "plain_flops_per_s": plain, "total": result.total, "per_layer": result.per_layer,
    }))


def _current_rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main():
    torch.manual_seed(0)
    splits, split = all_samples()
    model = models.build("lenet5", seed=0)
    config = train.TrainConfig(epochs=2, batch_size=100, lr=0.05, momentum=0.9)
    train.fit(model, splits, config, seed=0, device="cpu", progress=False)
    _, error = train.evaluate(model, splits.test)
    print(f"LeNet-5 trained 2 epochs on mnist-5k: test error {error:.2f}%; analysing all {len(split)} samples")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU (shared with other jobs)")

    start = time.perf_counter()
    ours = psp.entropy(model, split.batches(BATCH), order=1, num_classes=10, eps=EPS)
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    theirs = authors_first_order(model, split)
    t_theirs = time.perf_counter() - start
    for (name, h), reference in zip(ours.per_neuron.items(), theirs):
        assert torch.allclose(h.float(), reference, atol=1e-4), name
    print("first order, mean bits per layer:", {n: round(v, 4) for n, v in ours.per_layer.items()}, f"total {ours.total:.4f}")
    print(f"first order: ours {t_ours:.2f} s, authors' algorithm {t_theirs:.2f} s, speed-up {t_theirs / t_ours:.1f}x (1 run each)")

    with tempfile.TemporaryDirectory() as folder:
        state_path, result_path = Path(folder) / "lenet5.pt", Path(folder) / "second.json"
        torch.save(model.state_dict(), state_path)
        subprocess.run([sys.executable, __file__, "--second-order-child", str(state_path), str(result_path)], check=True)
        figures = json.loads(result_path.read_text())
    achieved = figures["flops"] / figures["seconds"]
    print("second order, mean bits per layer:", {n: round(v, 4) for n, v in figures["per_layer"].items()}, f"total {figures['total']:.4f}")
    print(
        f"second order (all 3 hidden layers, 15,220 neurons, block {BLOCK}): {figures['seconds']:.1f} s; "
        f"peak RSS {figures['peak_mib']:.0f} MiB ({figures['peak_mib'] - figures['rss_before_mib']:.0f} MiB above the "
        f"{figures['rss_before_mib']:.0f} MiB before the call)"
    )
    print(
        f"second order: {figures['flops'] / 1e12:.3f} TFLOP of pair counts at {achieved / 1e9:.1f} GFLOP/s = "
        f"{100 * achieved / figures['plain_flops_per_s']:.0f}% of a plain float32 torch.matmul "
        f"({BLOCK}x{len(split) // 10}) @ ({len(split) // 10}x{BLOCK}) at {figures['plain_flops_per_s'] / 1e9:.1f} GFLOP/s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--second-order-child", nargs=2, metavar=("STATE", "RESULT"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.second_order_child:
        second_order_child(*arguments.second_order_child)
    else:
        main()
