"""Training throughput: our in-memory tensor pipeline vs a per-sample torchvision DataLoader.

One training epoch on mnist-5k (3,600 training images), batch 100, SGD, same model,
same machine, measured in one run. The baseline is the authors' pipeline: a Dataset
returning PIL images, ``ToTensor`` + ``Normalize`` per sample, a ``DataLoader``.

    python benchmarks/train_throughput.py [--epochs 3] [--workers 0]
"""

import argparse
import time

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from psputil import data, models, train


class PILDataset(torch.utils.data.Dataset):
    """The same images as torchvision's MNIST class serves them: one PIL image per sample."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = Image.fromarray(self.images[index].numpy(), mode="L")
        return self.transform(image), int(self.labels[index])


def baseline_epoch_seconds(model_name, images, labels, epochs, workers):
    mean, std = data.info("mnist").mean, data.info("mnist").std
    dataset = PILDataset(images, labels, transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=100, shuffle=True, num_workers=workers,
                                         generator=torch.Generator().manual_seed(0))
    model = models.build(model_name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    return min(times)


def ours_epoch_seconds(model_name, splits, epochs):
    model = models.build(model_name)
    history = train.fit(model, splits, train.TrainConfig(epochs=epochs, lr=0.05), device="cpu", progress=False)
    return min(r["seconds"] for r in history)  # includes the per-epoch validation pass


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per pipeline; the fastest is reported")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the baseline")
    args = parser.parse_args()
    splits = data.load("mnist-5k")
    # The baseline sees the same training images, de-normalised back to uint8.
    mean, std = data.info("mnist").mean, data.info("mnist").std
    raw = (splits.train.images[:, 0] * std[0] + mean[0]).mul(255).round().clamp(0, 255).to(torch.uint8)
    n = len(splits.train)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {n} training samples, batch 100")
    for name in ("lenet300", "lenet5"):
        ours = ours_epoch_seconds(name, splits, args.epochs)
        base = baseline_epoch_seconds(name, raw, splits.train.labels, args.epochs, args.workers)
        print(f"{name:9s} ours {n / ours:9.0f} samples/s | DataLoader+ToTensor ({args.workers} workers) "
              f"{n / base:9.0f} samples/s | speed-up {base / ours:5.2f}x")


if __name__ == "__main__":
    main()
