import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from psputil import data, paths


def write_idx(path, array, compress=False):
    """Write `array` (uint8) in the IDX format of MNIST."""
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def indexed_images(n, shape=(28, 28)):
    """Images whose first two pixels encode their index, so splits can be traced back."""
    images = np.random.default_rng(0).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n) % 256
    images[:, 0, 1] = np.arange(n) // 256
    return images


def write_mnist_folder(folder, n_train=300, n_test=50, compress=False):
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.arange(n_train) % 10
    write_idx(folder / "train-images-idx3-ubyte", indexed_images(n_train), compress)
    write_idx(folder / "train-labels-idx1-ubyte", labels, compress)
    write_idx(folder / "t10k-images-idx3-ubyte", indexed_images(n_test), compress)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.arange(n_test) % 10, compress)


def image_index(split, name):
    mean, std = data.NORMALIZATION[name]
    pixels = (split.images[:, 0, 0, :2] * std[0] + mean[0]) * 255
    pixels = pixels.round().long()
    return (pixels[:, 0] + 256 * pixels[:, 1]).tolist()


def test_mnist_through_torchvision_from_idx_files(tmp_path):
    write_mnist_folder(tmp_path / "MNIST" / "raw")
    splits = data.load(data.DataConfig("mnist", valid_fraction=0.2), root=tmp_path)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (240, 60, 50)
    assert splits.input_shape == (1, 28, 28) and splits.num_classes == 10
    train, valid = image_index(splits.train, "mnist"), image_index(splits.valid, "mnist")
    assert set(train).isdisjoint(valid) and set(train) | set(valid) == set(range(300))
    # Labels travel with their images.
    assert [i % 10 for i in train] == splits.train.labels.tolist()


def test_splits_are_seeded(tmp_path):
    write_mnist_folder(tmp_path / "MNIST" / "raw")
    first = data.load(data.DataConfig("mnist", split_seed=1), root=tmp_path)
    again = data.load(data.DataConfig("mnist", split_seed=1), root=tmp_path)
    other = data.load(data.DataConfig("mnist", split_seed=2), root=tmp_path)
    assert torch.equal(first.train.images, again.train.images)
    assert torch.equal(first.valid.labels, again.valid.labels)
    assert not torch.equal(first.train.images, other.train.images)


def test_subsampling_is_seeded_and_sized(tmp_path):
    write_mnist_folder(tmp_path / "MNIST" / "raw")
    config = data.DataConfig("mnist", train_size=100, test_size=20)
    a, b = data.load(config, root=tmp_path), data.load(config, root=tmp_path)
    assert (len(a.train), len(a.test)) == (100, 20)
    assert torch.equal(a.train.images, b.train.images)


def test_fashion_mnist_from_debian_gz_files(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    write_mnist_folder(debian, compress=True)
    monkeypatch.setattr(paths, "DEBIAN_FASHION_MNIST", debian)
    splits = data.load("fashion-mnist", root=tmp_path / "root")
    assert len(splits.train) + len(splits.valid) == 300 and len(splits.test) == 50
    assert (tmp_path / "root" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()


def test_cifar10_through_torchvision_from_pickles(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), "labels": list(range(10)) * 2}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}, protocol=2))
    # Our synthetic files cannot match torchvision's MD5 sums of the real ones.
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    splits = data.load("cifar10", root=tmp_path)
    assert len(splits.train) + len(splits.valid) == 100 and len(splits.test) == 20
    assert splits.input_shape == (3, 32, 32)
    raw = torch.from_numpy(pickle.loads((folder / "test_batch").read_bytes())["data"][0]).view(3, 32, 32)
    mean, std = data.NORMALIZATION["cifar10"]
    expected = (raw.float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.allclose(splits.test.images[0], expected, atol=1e-6)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "fashion-mnist"])
def test_missing_data_set_says_where_and_how(tmp_path, monkeypatch, name):
    monkeypatch.setattr(paths, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    with pytest.raises(FileNotFoundError) as error:
        data.load(name, root=tmp_path)
    message = str(error.value)
    assert name in message and str(tmp_path) in message
    assert "download=True" in message and "mnist-5k" in message
    if name == "fashion-mnist":
        assert "apt-get install dataset-fashion-mnist" in message and "no-debian" in message


def test_mnist_5k_is_shuffled_before_splitting():
    splits = data.load("mnist-5k")
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (3600, 400, 1000)
    for split in (splits.train, splits.valid, splits.test):
        counts = torch.bincount(split.labels, minlength=10)
        assert (counts > 0.05 * len(split)).all()  # every class present: not sorted by label
        assert (split.labels[1:] != split.labels[:-1]).float().mean() > 0.7
    assert abs(splits.train.images.mean().item()) < 0.1 and abs(splits.train.images.std().item() - 1) < 0.1


def test_bad_config():
    with pytest.raises(ValueError, match="mnist-5k, mnist, fashion-mnist, cifar10"):
        data.DataConfig("imagenet")
    with pytest.raises(ValueError, match="valid_fraction"):
        data.DataConfig(valid_fraction=1.5)


def test_batches_cover_every_sample_once():
    split = data.TensorSplit(torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10))
    seen = torch.cat([y for _, y in split.batches(3, shuffle=True, generator=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))
    assert [len(y) for _, y in split.batches(4)] == [4, 4, 2]


def test_crop_flip_is_a_shifted_window_of_the_padded_image():
    images = torch.randn(64, 3, 32, 32)
    out = data.crop_flip(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    black = torch.tensor(data._black_value(3)).view(3, 1, 1)
    for original, crop in zip(images, out):
        padded = black.expand(3, 40, 40).clone()
        padded[:, 4:36, 4:36] = original
        windows = [padded[:, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(crop, w) or torch.equal(crop, w.flip(2)) for w in windows)
    flipped = sum(not torch.equal(o, c) for o, c in zip(images, out))
    assert flipped > 32  # most images moved or flipped
