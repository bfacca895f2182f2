"""The offline CIFAR-shaped dataset ``photo_crops``: 3×32×32 crops of scikit-learn's two sample
photographs, train / validation / test from disjoint vertical bands (checked against the
photographs read directly through scikit-learn)."""

from __future__ import annotations

import csv
import math
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
from sklearn.datasets import load_sample_images  # noqa: E402

from inv_flow import compare, data  # noqa: E402
from inv_flow.config import resolve_config  # noqa: E402


@pytest.fixture(scope="module")
def splits():
    return data.load_datasets(resolve_config("photo_crops", {}))


@pytest.fixture(scope="module")
def photos():
    return np.stack(load_sample_images().images)


def test_shapes_counts_and_pixel_values(splits):
    assert tuple(splits.image_shape) == (3, 32, 32)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (10_000, 1_000, 1_000)
    for dataset in (splits.train, splits.val, splits.test):
        batch = torch.stack([dataset[i] for i in range(0, len(dataset), 97)])
        assert batch.dtype == torch.float32 and batch.shape[1:] == (3, 32, 32)
        assert torch.equal(batch, batch.round())
        assert batch.min() >= 0 and batch.max() <= 255
        assert batch.max() - batch.min() > 128  # real photo content, not a constant


def test_crops_are_the_photographs_pixels_at_their_boxes(splits, photos):
    generator = np.random.default_rng()
    for split, dataset in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        photo, top, left = data.photo_crop_boxes(split, len(dataset), seed=0)
        for index in generator.choice(len(dataset), 20, replace=False):
            p, y, x = int(photo[index]), int(top[index]), int(left[index])
            expected = torch.from_numpy(photos[p, y:y + 32, x:x + 32].transpose(2, 0, 1).copy())
            assert torch.equal(dataset[int(index)], expected.float())


def test_splits_cover_disjoint_pixel_regions():
    covered = {}
    for split, count in data.PHOTO_CROP_COUNTS.items():
        mask = np.zeros((2, 427, 640), dtype=bool)
        photo, top, left = data.photo_crop_boxes(split, count, seed=0)
        for p, y, x in zip(photo, top, left):
            mask[p, y:y + 32, x:x + 32] = True
        covered[split] = mask
    assert not (covered["train"] & covered["val"]).any()
    assert not (covered["train"] & covered["test"]).any()
    assert not (covered["val"] & covered["test"]).any()
    # The bands as documented: ten 64-px columns, 2 and 7 validation, 4 and 9 test.
    columns = {split: set(np.flatnonzero(mask.any(axis=(0, 1))) // 64)
               for split, mask in covered.items()}
    assert columns == {"train": {0, 1, 3, 5, 6, 8}, "val": {2, 7}, "test": {4, 9}}
    assert all(mask[p].any() for mask in covered.values() for p in (0, 1))  # both photos


def test_crops_are_deterministic_and_follow_split_seed():
    first, again = data.photo_crops("val", 0), data.photo_crops("val", 0)
    assert torch.equal(first, again)
    assert not torch.equal(first, data.photo_crops("val", 1))
    other = data.load_datasets(resolve_config("photo_crops", {"split_seed": 1}))
    assert torch.equal(other.val.images, data.photo_crops("val", 1))


def test_missing_scikit_learn_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"photo_crops.*scikit-learn.*pip install scikit-learn"):
        data.load_datasets(resolve_config("photo_crops", {}))


def test_compare_reports_test_bits_per_dim_on_photo_crops(tmp_path):
    out = tmp_path / "cmp"
    assert compare.main([
        "--preset", "photo_crops", "--models", "inverse_flow,glow", "--epochs", "1",
        "--seeds", "1,2", "--set", "block_size=1", "--set", "coupling_hidden=4",
        "--set", "max_eval_ex=16", "--set", "batch_size=8", "--set", "device=cpu",
        "--max-steps-per-epoch", "1", "--repeats", "1", "--num-samples", "2",
        "--out-dir", str(out), "--quiet"]) == 0
    with open(out / "compare.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        test = float(row["test_bpd"])
        assert math.isfinite(test) and 0 < test < 16, row
        seeds = [float(v) for v in row["test_bpd_seeds"].split()]
        assert len(seeds) == 2 and test == pytest.approx(np.mean(seeds), abs=1e-4)
        assert float(row["test_bpd_std"]) == pytest.approx(np.std(seeds, ddof=1), abs=1e-4)
