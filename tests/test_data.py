"""Data: embedded digits, fixed splits, deterministic shuffling, npz ImageNet, padding, and
clear errors for missing datasets and impossible shapes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from inv_flow.config import ConfigError, DEFAULTS, fill_templates
from inv_flow.data import (DatasetNotFoundError, ZeroPad, check_image_shape, digits_images,
                           load_datasets, make_loader, set_loader_epoch, split_train_val)


def data_config(tmp_path, **overrides):
    config = dict(DEFAULTS, data_root=str(tmp_path), output_dir=str(tmp_path / "run"))
    config.update(overrides)
    if not config["dataset"]:
        config["dataset"] = config["preset"]
    return fill_templates(config)


def test_digits_are_real_8x8_images_rescaled_to_0_255():
    images = digits_images()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.uint8
    values = set(images.unique().tolist())
    assert values == {round(v * 255 / 16) for v in range(17)}  # 17 levels, 0 and 255 included
    raw = digits_images(num_levels=17)
    assert raw.max() == 16 and torch.equal(torch.round(raw.double() * 255 / 16).to(torch.uint8), images)


def test_embedded_digits_equal_scikit_learns_copy():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    reference = sklearn_datasets.load_digits().images  # float64 (1797, 8, 8), values 0..16
    raw = digits_images(num_levels=17)[:, 0]
    assert raw.shape == reference.shape and np.array_equal(raw.numpy(), reference)


def test_digits_need_neither_scikit_learn_nor_network(tmp_path):
    # scikit-learn blocked at import: the embedded default must still load.
    code = ("import sys; sys.modules['sklearn'] = None; "
            "from inv_flow.data import digits_images; "
            "images = digits_images(); assert images.shape == (1797, 1, 8, 8), images.shape")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def test_digits_splits_loader_shapes_and_values(tmp_path):
    splits = load_datasets(data_config(tmp_path, dataset="digits", val_fraction=0.1))
    assert len(splits.train) + len(splits.val) == 1797
    assert len(splits.val) == 180 and splits.test is None
    assert splits.image_shape == (1, 8, 8)
    batch = next(iter(make_loader(splits.train, batch_size=32, shuffle=True, seed=0)))
    assert batch.shape == (32, 1, 8, 8) and batch.dtype == torch.float32
    assert batch.min() >= 0 and batch.max() <= 255 and torch.equal(batch, batch.round())


def test_digits_do_not_import_torchvision(tmp_path):
    code = ("import sys; from inv_flow.config import resolve_config; "
            "from inv_flow.data import load_datasets; "
            "load_datasets(resolve_config('digits', {})); "
            "assert 'torchvision' not in sys.modules, 'torchvision imported'")
    package_dir = str(Path(__file__).resolve().parents[1] / "python")
    env = dict(os.environ, PYTHONPATH=package_dir + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path)


def test_split_is_fixed_by_split_seed_only():
    data = torch.arange(100)
    train_a, val_a = split_train_val(data, 0.2, split_seed=7)
    torch.manual_seed(123)  # the global RNG must not matter
    train_b, val_b = split_train_val(data, 0.2, split_seed=7)
    assert train_a.indices == train_b.indices and val_a.indices == val_b.indices
    assert not set(train_a.indices) & set(val_a.indices) and len(val_a) == 20
    assert split_train_val(data, 0.2, split_seed=8)[1].indices != val_a.indices


def test_shuffling_depends_only_on_seed_and_epoch():
    data = torch.arange(50).float()
    loader = make_loader(data, batch_size=10, shuffle=True, seed=3)

    def epoch_order(epoch):
        set_loader_epoch(loader, epoch)
        return torch.cat(list(loader)).tolist()

    first, second = epoch_order(0), epoch_order(1)
    assert sorted(first) == list(range(50)) and first != second
    torch.manual_seed(99)
    assert epoch_order(0) == first and epoch_order(1) == second


def test_missing_datasets_say_where_to_put_them(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"imagenet32.*train_data_batch_\*\.npz.*image-net.org"):
        load_datasets(data_config(tmp_path, dataset="imagenet32", image_shape=(3, 32, 32)))
    pytest.importorskip("torchvision")
    with pytest.raises(DatasetNotFoundError, match="MNIST.*download=true"):
        load_datasets(data_config(tmp_path, dataset="mnist", image_shape=(1, 32, 32), pad_to=(32, 32)))
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py"):
        load_datasets(data_config(tmp_path, dataset="cifar10", image_shape=(3, 32, 32)))
    with pytest.raises(DatasetNotFoundError, match="celeba"):
        load_datasets(data_config(tmp_path, dataset="celeba64", image_shape=(3, 64, 64)))


def test_imagenet_npz_batches(tmp_path):
    folder = tmp_path / "imagenet32"
    folder.mkdir()
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, (30, 3 * 32 * 32), dtype=np.uint8)
    np.savez(folder / "train_data_batch_1.npz", data=first, labels=np.zeros(30))
    np.savez(folder / "train_data_batch_2.npz", data=first[:10], labels=np.zeros(10))
    np.savez(folder / "val_data.npz", data=first[:5], labels=np.zeros(5))
    splits = load_datasets(data_config(tmp_path, dataset="imagenet32", image_shape=(3, 32, 32),
                                       val_fraction=0.25))
    assert len(splits.train) == 30 and len(splits.val) == 10 and len(splits.test) == 5
    # CHW layout of the npz rows is kept.
    assert torch.equal(splits.test[0], torch.from_numpy(first[0].reshape(3, 32, 32)).float())


def test_zero_padding_centres_the_image():
    image = torch.ones(1, 28, 28)
    padded = ZeroPad([image], (32, 32))[0]
    assert padded.shape == (1, 32, 32) and padded.sum() == 28 * 28
    assert padded[0, 2, 2] == 1 and padded[0, 1, 2] == 0 and padded[0, 29, 29] == 1


def test_impossible_shapes_are_config_errors():
    with pytest.raises(ConfigError, match="channel"):
        check_image_shape("digits", (3, 8, 8))
    with pytest.raises(ConfigError, match="not resized"):
        check_image_shape("digits", (1, 16, 16))
    with pytest.raises(ConfigError, match="unknown dataset"):
        check_image_shape("svhn", (3, 32, 32))
    with pytest.raises(ConfigError, match="pad_to"):
        check_image_shape("mnist", (1, 24, 24), pad_to=(24, 24))
    assert check_image_shape("celeba64", (3, 48, 48)) == (3, 48, 48)  # resized by the loader
    assert check_image_shape("mnist", (1, 32, 32), pad_to=(32, 32)) == (1, 32, 32)


def _write_fake_mnist(root: Path, count: int) -> np.ndarray:
    """Tiny MNIST in torchvision's raw idx format (uncompressed)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, (count, 28, 28), dtype=np.uint8)
    labels = np.zeros(count, dtype=np.uint8)
    for prefix in ("train", "t10k"):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            np.array([2051, count, 28, 28], dtype=">i4").tobytes() + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            np.array([2049, count], dtype=">i4").tobytes() + labels.tobytes())
    return images


def test_mnist_through_torchvision_is_padded_to_32(tmp_path):
    pytest.importorskip("torchvision")
    images = _write_fake_mnist(tmp_path, count=20)
    splits = load_datasets(data_config(tmp_path, dataset="mnist", image_shape=(1, 32, 32),
                                       pad_to=(32, 32), val_fraction=0.25))
    assert len(splits.train) == 15 and len(splits.val) == 5 and len(splits.test) == 20
    first = splits.test[0]
    assert first.shape == (1, 32, 32) and first.dtype == torch.float32
    assert torch.equal(first[0, 2:30, 2:30], torch.from_numpy(images[0]).float())
    assert first[0, :2].sum() == 0 and first[0, :, 30:].sum() == 0
