"""Top-5 Hessian eigenvalues of LeNet-300: ours (exact HVPs + Lanczos) vs PyHessian (power iteration).

LeNet-300 trained for a few epochs on 2,000 mnist-5k training images; the Hessian
is that of the mean cross-entropy over those 2,000 images, given as one batch
(PyHessian's fastest mode: it keeps its gradient graph) and as 5 batches of 400
(its data-loader mode, which recomputes every batch at every product; ours keeps
the graphs of all batches when they fit in memory). The
reference is Lanczos with float64 products and tol 1e-10. Each method runs
`--repeats` times, interleaved; the best time counts (and the median is shown).
Also timed when installed: curvlinops-for-pytorch's ``HessianLinearOperator`` under the
same ``eigsh`` (``pip install curvlinops-for-pytorch``), and our operator without its
feature-major Linear layers. Printed once: the residuals ``||Hv - lambda v||`` of our
eigenpairs and the gradient norm at the model.

    pip install --no-deps pyhessian
    python benchmarks/hessian.py [--epochs 3] [--repeats 3] [--device cpu] [--threads N]

On a CPU shared with other jobs, ``--threads 1`` gives steadier ratios.
"""

import argparse
import copy
import importlib
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from psputil import data, devices, models, train
from psputil.hessian import HessianOperator, gradient_norm, largest_eigenvalues, top_eigenpairs


def ours(model, batches, k, tol, feature_major=True):
    start = time.perf_counter()
    operator = HessianOperator(model, F.cross_entropy, batches, feature_major=feature_major)
    values = largest_eigenvalues(operator, k=k, seed=0, tol=tol)  # what top_eigenvalues does
    return values, operator.hvps, time.perf_counter() - start


def run_pyhessian(model, batches, k):
    """PyHessian's power iteration with deflation (its defaults: maxIter 100, tol 1e-3)."""
    ph = importlib.import_module("pyhessian.hessian")  # the module (the package re-exports the class under this name)
    count = [0]
    single, product = ph.hessian_vector_product, ph.hessian.dataloader_hv_product

    def counted_single(*args):
        count[0] += 1
        return single(*args)

    def counted_loader(self, v):
        count[0] += 1
        return product(self, v)

    ph.hessian_vector_product, ph.hessian.dataloader_hv_product = counted_single, counted_loader
    try:
        model = copy.deepcopy(model)  # PyHessian leaves the model in eval mode with .grad graphs attached
        torch.manual_seed(0)  # its start vectors come from the global generator
        cuda = batches[0][0].is_cuda
        start = time.perf_counter()
        if len(batches) == 1:
            engine = ph.hessian(model, F.cross_entropy, data=batches[0], cuda=cuda)
        else:
            engine = ph.hessian(model, F.cross_entropy, dataloader=batches, cuda=cuda)
        values, _ = engine.eigenvalues(top_n=k)
        seconds = time.perf_counter() - start
    finally:
        ph.hessian_vector_product, ph.hessian.dataloader_hv_product = single, product
    return sorted(values, reverse=True), count[0], seconds


def run_curvlinops(model, batches, k, tol):
    """curvlinops' Hessian operator (recomputes forward and gradient at every product) under the same eigsh."""
    from curvlinops import HessianLinearOperator
    from scipy.sparse.linalg import eigsh

    model = copy.deepcopy(model).eval()
    start = time.perf_counter()
    operator = HessianLinearOperator(model, torch.nn.CrossEntropyLoss(), list(model.parameters()), batches,
                                     check_deterministic=False).to_scipy()
    count = [0]
    matvec = operator.matvec

    def counted(v):
        count[0] += 1
        return matvec(v)

    operator.matvec = counted
    v0 = np.random.default_rng(0).standard_normal(operator.shape[0])
    values = eigsh(operator, k=k, which="LA", v0=v0, tol=tol, return_eigenvectors=False)
    return sorted((float(v) for v in values), reverse=True), count[0], time.perf_counter() - start


def reference(model, batch, k):
    model64 = copy.deepcopy(model).double()
    operator = HessianOperator(model64, F.cross_entropy, [(batch[0].double(), batch[1])])
    return largest_eigenvalues(operator, k=k, seed=1, tol=1e-10), operator.hvps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--tol", type=float, default=1e-4, help="our ARPACK tolerance (1e-4: the library default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--no-curvlinops", action="store_true", help="skip curvlinops even when installed")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = devices.resolve(args.device)
    torch.manual_seed(0)
    splits = data.load(data.DataConfig(train_size=2000), device=device)
    model = models.build("lenet300").to(device)
    history = train.fit(model, splits, train.TrainConfig(epochs=args.epochs, lr=0.1), device=device, progress=False)
    batch = (splits.train.images, splits.train.labels)
    print(f"LeNet-300 on {len(batch[1])} mnist-5k images, {args.epochs} epochs: train loss {history[-1]['train_loss']:.4f}, "
          f"device {devices.environment(device)['device']}, torch threads {torch.get_num_threads()}")

    exact, exact_hvps = reference(model, batch, args.k)
    print(f"reference (float64 HVPs, eigsh tol 1e-10, {exact_hvps} HVPs): {np.round(exact, 6).tolist()}")
    try:
        import pyhessian  # noqa: F401  (benchmark-only dependency: pip install pyhessian)
        have_pyhessian = True
    except ImportError as error:
        have_pyhessian = False
        print(f"PyHessian unavailable ({error}); running ours only")

    try:
        import curvlinops  # noqa: F401  (optional: pip install curvlinops-for-pytorch)
        have_curvlinops = not args.no_curvlinops
    except ImportError:
        have_curvlinops = False

    one = [batch]
    five = [(batch[0][i : i + 400], batch[1][i : i + 400]) for i in range(0, len(batch[1]), 400)]
    contenders = {"ours, 1 batch of 2000": lambda: ours(model, one, args.k, args.tol)}
    if have_pyhessian:
        contenders["PyHessian, 1 batch of 2000"] = lambda: run_pyhessian(model, one, args.k)
    contenders["ours row-major, 1 batch"] = lambda: ours(model, one, args.k, args.tol, feature_major=False)
    if have_curvlinops:
        contenders["curvlinops, 1 batch of 2000"] = lambda: run_curvlinops(model, one, args.k, args.tol)
    contenders["ours, 5 batches of 400"] = lambda: ours(model, five, args.k, args.tol)
    if have_pyhessian:
        contenders["PyHessian, 5 batches of 400"] = lambda: run_pyhessian(model, five, args.k)
    runs = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, run in contenders.items():
            runs[name].append(run())
    best = {}
    for name, results in runs.items():
        values, hvps, _ = results[0]
        best[name] = min(r[2] for r in results)
        median = statistics.median(r[2] for r in results)
        error = max(abs(v - e) / abs(e) for v, e in zip(values, exact))
        print(f"{name:28s}: {np.round(values, 5).tolist()}  HVPs {hvps:3d}  best of {len(results)}: "
              f"{best[name]:.3f} s (median {median:.3f} s)  max rel. error {error:.1e}")
    for setting in ("1 batch of 2000", "5 batches of 400"):
        if f"PyHessian, {setting}" in best:
            print(f"speed-up ours vs PyHessian, {setting}: {best[f'PyHessian, {setting}'] / best[f'ours, {setting}']:.2f}x "
                  f"(goal >= 3x with max rel. error <= 1e-6)")
    if "curvlinops, 1 batch of 2000" in best:
        print(f"curvlinops / ours time, 1 batch: {best['curvlinops, 1 batch of 2000'] / best['ours, 1 batch of 2000']:.2f}x "
              "(adopt only if <= 1.2x)")
    print(f"feature-major Linear layers: {best['ours row-major, 1 batch'] / best['ours, 1 batch of 2000']:.2f}x "
          "faster than row-major")
    pairs = top_eigenpairs(model, F.cross_entropy, one, k=args.k, tol=args.tol)
    print(f"residuals ||Hv - lambda v||: {[f'{r:.1e}' for r in pairs.residuals]} ({pairs.hvps} HVPs with the residuals); "
          f"gradient norm at the model: {gradient_norm(model, F.cross_entropy, one):.4f}")

if __name__ == "__main__":
    main()
