"""Datasets for ``inv_flow``: every loader yields float tensors (C, H, W) of integer pixel values
in [0, 255]; dequantization and scaling happen inside the model.

* ``digits`` — 1797 real 8×8 handwritten digits shipped inside the package (the UCI optdigits
  test set, also bundled by scikit-learn; no download, no scikit-learn): values 0..16 are
  rescaled to integers 0..255.
* ``photo_crops`` — 3×32×32 crops (CIFAR-10's shape) of the two photographs scikit-learn ships
  (``sklearn.datasets.load_sample_images``), train / validation / test cut from disjoint
  vertical bands of each photo (see :func:`photo_crop_boxes`); needs scikit-learn, no download.
* ``mnist``, ``cifar10`` — torchvision, read from ``data_root`` (downloaded only if ``download``).
* ``imagenet32``, ``imagenet64`` — downsampled ImageNet, from ``data_root/imagenet32`` (or 64):
  the official ``*.npz`` batches or ``train/`` + ``val/`` image folders.
* ``celeba32``, ``celeba64``, ``celeba128`` — torchvision CelebA, centre-cropped to 148 px and
  resized.

torchvision is imported only for the real datasets, never for digits or photo_crops.  The
train/validation split (of every dataset but photo_crops, whose splits are bands) is drawn with a fixed seed (``split_seed``), independent of the training seed.  Sampler
creation lives in :func:`make_sampler`: ``DistributedSampler`` / :class:`ShardSampler` in a
distributed run, with a data order that does not depend on the number of ranks.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from inv_flow.config import ConfigError

#: Native (C, H, W) of each dataset and whether the loader can resize it to another H×W.
DATASET_SHAPES: dict[str, tuple[int, int, int]] = {
    "digits": (1, 8, 8),
    "photo_crops": (3, 32, 32),
    "mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "imagenet32": (3, 32, 32),
    "imagenet64": (3, 64, 64),
    "celeba32": (3, 32, 32),
    "celeba64": (3, 64, 64),
    "celeba128": (3, 128, 128),
}
RESIZABLE = {"mnist", "cifar10", "celeba32", "celeba64", "celeba128"}

#: Where each dataset is expected under data_root and how to get it (used in error messages).
DATASET_HELP: dict[str, str] = {
    "mnist": "torchvision MNIST files under {root}/MNIST/raw. Get them with "
             "`--set download=true` (or torchvision.datasets.MNIST(root, download=True)).",
    "cifar10": "the python CIFAR-10 batches under {root}/cifar-10-batches-py. Get them with "
               "`--set download=true` or from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz "
               "(unpack into {root}).",
    "imagenet": "downsampled ImageNet under {root}/{name}: either the official npz files "
                "(train_data_batch_*.npz and val_data.npz from 'Imagenet{size}_train_npz' / "
                "'Imagenet{size}_val_npz' at https://image-net.org/download-images, after "
                "registering) or image folders {root}/{name}/train/<class>/*.png and "
                "{root}/{name}/val/<class>/*.png. It cannot be downloaded automatically.",
    "celeba": "torchvision CelebA under {root}/celeba (img_align_celeba/ and the list_*.txt / "
              "identity_CelebA.txt files). Try `--set download=true` (Google Drive quotas often "
              "block it) or download them from "
              "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html into {root}/celeba.",
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not present under ``data_root``; the message says where to put it."""


@dataclass
class DataSplits:
    """Train / validation (/ test) datasets of one image shape."""

    train: Dataset
    val: Dataset
    test: Dataset | None
    image_shape: tuple[int, int, int]
    name: str


class ImageTensorDataset(Dataset):
    """In-memory uint8 images (N, C, H, W) served as float tensors of integer values 0..255."""

    def __init__(self, images: torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index].float()


class PixelTensor:
    """PIL image → float tensor (C, H, W) of integer values, optionally centre-cropped and resized.

    A class rather than a lambda so DataLoader workers can pickle it.
    """

    def __init__(self, size: tuple[int, int] | None = None, center_crop: int | None = None):
        self.size = size
        self.center_crop = center_crop

    def __call__(self, image: Any) -> torch.Tensor:
        if self.center_crop is not None or self.size is not None:
            from torchvision.transforms import functional as tvf  # noqa: PLC0415 - lazy

            if self.center_crop is not None:
                image = tvf.center_crop(image, [self.center_crop, self.center_crop])
            if self.size is not None and (image.size[1], image.size[0]) != tuple(self.size):
                image = tvf.resize(image, list(self.size), antialias=True)
        array = np.asarray(image, dtype=np.uint8)
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(array.copy()).permute(2, 0, 1).float()


class ImagesOnly(Dataset):
    """Drops the label of an (image, label) dataset."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        item = self.dataset[index]
        return item[0] if isinstance(item, (tuple, list)) else item


#: The embedded digits: 1797 images of 8×8 uint8 values 0..16 (source and licence:
#: ``inv_flow/_data/README.md``).
DIGITS_FILE = "digits.u8.xz"
DIGITS_COUNT = 1797


def raw_digits() -> np.ndarray:
    """The 1797 handwritten 8×8 digits shipped inside the package, uint8 (1797, 8, 8) with
    values 0..16 — the UCI optdigits test set, identical to scikit-learn's ``load_digits``."""
    import lzma  # noqa: PLC0415
    from importlib import resources  # noqa: PLC0415

    packed = (resources.files("inv_flow") / "_data" / DIGITS_FILE).read_bytes()
    return np.frombuffer(lzma.decompress(packed), dtype=np.uint8).reshape(DIGITS_COUNT, 8, 8)


def digits_images(num_levels: int = 256) -> torch.Tensor:
    """The embedded 8×8 digits as uint8 (1797, 1, 8, 8).

    The originals hold 0..16.  With ``num_levels=256`` (the default, like every other dataset)
    ``round(v * 255 / 16)`` maps them onto 0..255 (0 → 0, 16 → 255); ``num_levels=17`` keeps
    the raw values.
    """
    raw = raw_digits()
    if num_levels == 17:
        scaled = raw.copy()
    elif num_levels == 256:
        scaled = np.rint(raw * (255.0 / 16.0)).astype(np.uint8)
    else:
        raise ConfigError(f"digits can be served with num_levels 256 or 17, not {num_levels}")
    return torch.from_numpy(scaled).unsqueeze(1)


#: ``photo_crops``: each 427×640 photo is cut into ten vertical bands 64 px wide; a split's
#: crops lie wholly inside its bands, so no pixel is shared between splits.
PHOTO_BAND_WIDTH = 64
PHOTO_BANDS = {"train": (0, 1, 3, 5, 6, 8), "val": (2, 7), "test": (4, 9)}
PHOTO_CROP_COUNTS = {"train": 10_000, "val": 1_000, "test": 1_000}
PHOTO_CROP_SIZE = 32


def sample_photos() -> np.ndarray:
    """scikit-learn's two sample photographs (china.jpg, flower.jpg): uint8 (2, 427, 640, 3)."""
    try:
        from sklearn.datasets import load_sample_images  # noqa: PLC0415 - only this dataset
    except ImportError:
        raise ImportError("the photo_crops dataset is cut from scikit-learn's sample photographs, "
                          "and scikit-learn is not installed; `pip install scikit-learn`") from None
    return np.stack(load_sample_images().images)


def photo_crop_boxes(split: str, count: int, seed: int, height: int = 427
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(photo index, top, left) of ``count`` crops of ``split``: photo, band (one of the
    split's :data:`PHOTO_BANDS`) and position inside the band uniform, from a generator seeded
    with ``(seed, split)`` — the same boxes on every machine and run."""
    generator = np.random.default_rng([seed, tuple(PHOTO_BANDS).index(split)])
    bands = np.asarray(PHOTO_BANDS[split])
    photo = generator.integers(0, 2, count)
    band = bands[generator.integers(0, len(bands), count)]
    left = band * PHOTO_BAND_WIDTH + generator.integers(0, PHOTO_BAND_WIDTH - PHOTO_CROP_SIZE + 1,
                                                        count)
    top = generator.integers(0, height - PHOTO_CROP_SIZE + 1, count)
    return photo, top, left


def photo_crops(split: str, seed: int, count: int | None = None,
                photos: np.ndarray | None = None) -> torch.Tensor:
    """The crops of ``split`` as uint8 (N, 3, 32, 32), pixel values 0..255 (``photos``: from
    :func:`sample_photos`, read when not given)."""
    photos = sample_photos() if photos is None else photos
    count = PHOTO_CROP_COUNTS[split] if count is None else count
    photo, top, left = photo_crop_boxes(split, count, seed, photos.shape[1])
    offsets = np.arange(PHOTO_CROP_SIZE)
    rows = (top[:, None] + offsets)[:, :, None]
    cols = (left[:, None] + offsets)[:, None, :]
    crops = photos[photo[:, None, None], rows, cols]  # (N, 32, 32, 3)
    return torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2)))


def split_train_val(dataset: Dataset, val_fraction: float, split_seed: int) -> tuple[Subset, Subset]:
    """Random train/validation split that depends only on ``split_seed`` and the dataset size."""
    total = len(dataset)
    val_count = max(1, int(round(total * val_fraction)))
    if val_count >= total:
        raise ConfigError(f"val_fraction={val_fraction} leaves no training data ({total} images)")
    generator = torch.Generator().manual_seed(split_seed)
    order = torch.randperm(total, generator=generator).tolist()
    return Subset(dataset, sorted(order[val_count:])), Subset(dataset, sorted(order[:val_count]))


def _require_torchvision(dataset_name: str):
    try:
        import torchvision  # noqa: PLC0415 - only real datasets need it
    except ImportError:
        raise ImportError(
            f"the {dataset_name} dataset is read through torchvision, which is not installed; "
            "`pip install torchvision` (the embedded 'digits' dataset needs no torchvision)"
        ) from None
    return torchvision


def _not_found(help_key: str, root: Path, **fields: Any) -> DatasetNotFoundError:
    where = DATASET_HELP[help_key].format(root=root, **fields)
    return DatasetNotFoundError(f"dataset not found: expected {where}")


def check_image_shape(dataset_name: str, image_shape: Sequence[int],
                      pad_to: Sequence[int] = ()) -> tuple[int, int, int]:
    """Validate ``image_shape`` against what the dataset can deliver (natively, resized, or
    zero-padded to ``pad_to``); returns it as a tuple.  Raises :class:`ConfigError`."""
    if dataset_name not in DATASET_SHAPES:
        raise ConfigError(
            f"unknown dataset {dataset_name!r}; available: {', '.join(sorted(DATASET_SHAPES))}"
        )
    shape = tuple(int(s) for s in image_shape)
    native = DATASET_SHAPES[dataset_name]
    if len(shape) != 3:
        raise ConfigError(f"image_shape must be (C, H, W), got {shape}")
    if shape[0] != native[0]:
        raise ConfigError(
            f"image_shape {shape} asks for {shape[0]} channel(s) but {dataset_name} images have "
            f"{native[0]}"
        )
    if pad_to:
        pad_to = tuple(int(s) for s in pad_to)
        if len(pad_to) != 2 or pad_to != shape[1:] or pad_to[0] < native[1] or pad_to[1] < native[2]:
            raise ConfigError(
                f"pad_to={pad_to} must be (H, W) of image_shape {shape} and at least "
                f"{dataset_name}'s {native[1]}×{native[2]}"
            )
    elif shape[1:] != native[1:] and dataset_name not in RESIZABLE:
        raise ConfigError(
            f"image_shape {shape} does not match {dataset_name}'s {native[1]}×{native[2]} images, "
            f"and {dataset_name} is not resized by the loader; use image_shape={native}"
        )
    return shape  # type: ignore[return-value]


def check_num_levels(dataset_name: str, num_levels: int) -> None:
    """Every loader serves 8-bit values (num_levels=256); digits may also be served raw (17)."""
    allowed = (256, 17) if dataset_name == "digits" else (256,)
    if num_levels not in allowed:
        raise ConfigError(
            f"num_levels={num_levels} is not available for {dataset_name}: its loader serves "
            f"pixel values for num_levels in {allowed}"
        )


class ZeroPad(Dataset):
    """Centres each image in a zero canvas of size (H, W) (MNIST 28×28 → 32×32)."""

    def __init__(self, dataset: Dataset, size: tuple[int, int]):
        self.dataset = dataset
        self.size = size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.dataset[index]
        height, width = image.shape[-2:]
        top, left = (self.size[0] - height) // 2, (self.size[1] - width) // 2
        return torch.nn.functional.pad(
            image, (left, self.size[1] - width - left, top, self.size[0] - height - top))


def load_datasets(config: Mapping[str, Any]) -> DataSplits:
    """Build train/val(/test) datasets for ``config["dataset"]`` at ``config["image_shape"]``.

    Raises :class:`ConfigError` for an unknown dataset or an impossible shape and
    :class:`DatasetNotFoundError` (with instructions) when files are missing.
    """
    name = config["dataset"]
    pad_to = tuple(config.get("pad_to") or ())
    shape = check_image_shape(name, config["image_shape"], pad_to)
    check_num_levels(name, int(config.get("num_levels", 256)))
    splits = _load_unpadded(config, name, DATASET_SHAPES[name][1:] if pad_to else shape[1:])
    if pad_to:
        splits.train, splits.val = ZeroPad(splits.train, pad_to), ZeroPad(splits.val, pad_to)
        splits.test = None if splits.test is None else ZeroPad(splits.test, pad_to)
    splits.image_shape = shape
    return splits


def _load_unpadded(config: Mapping[str, Any], name: str, size: tuple[int, ...]) -> DataSplits:
    root = Path(os.path.expanduser(str(config["data_root"])))
    val_fraction, split_seed = config["val_fraction"], config["split_seed"]
    shape = (DATASET_SHAPES[name][0], *size)

    if name == "digits":
        full = ImageTensorDataset(digits_images(int(config.get("num_levels", 256))))
        train, val = split_train_val(full, val_fraction, split_seed)
        return DataSplits(train, val, None, shape, name)

    if name == "photo_crops":
        photos = sample_photos()
        train, val, test = (ImageTensorDataset(photo_crops(split, split_seed, photos=photos))
                            for split in ("train", "val", "test"))
        return DataSplits(train, val, test, shape, name)

    if name in ("imagenet32", "imagenet64"):
        train_full, test = _imagenet(root, name, shape)
        train, val = split_train_val(train_full, val_fraction, split_seed)
        return DataSplits(train, val, test, shape, name)

    torchvision = _require_torchvision(name)
    download = bool(config["download"])
    if name in ("mnist", "cifar10"):
        cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.CIFAR10
        transform = PixelTensor(size=size if size != DATASET_SHAPES[name][1:] else None)
        try:
            train_full = cls(str(root), train=True, download=download, transform=transform)
            test = cls(str(root), train=False, download=download, transform=transform)
        except RuntimeError as err:
            raise _not_found(name, root) from err
        train, val = split_train_val(ImagesOnly(train_full), val_fraction, split_seed)
        return DataSplits(train, val, ImagesOnly(test), shape, name)

    # CelebA: official train / valid / test partitions.
    transform = PixelTensor(size=size, center_crop=148)
    splits = {}
    try:
        for split in ("train", "valid", "test"):
            splits[split] = ImagesOnly(torchvision.datasets.CelebA(
                str(root), split=split, target_type=[], download=download, transform=transform))
    except (RuntimeError, FileNotFoundError) as err:
        raise _not_found("celeba", root) from err
    return DataSplits(splits["train"], splits["valid"], splits["test"], shape, name)


def _imagenet(root: Path, name: str, shape: tuple[int, int, int]) -> tuple[Dataset, Dataset]:
    """Downsampled ImageNet from npz batches or image folders under ``root/name``."""
    base = root / name
    size = int(name.removeprefix("imagenet"))
    train_files = sorted(glob.glob(str(base / "**" / "train_data_batch_*.npz"), recursive=True))
    val_files = sorted(glob.glob(str(base / "**" / "val_data*.npz"), recursive=True))
    if train_files and val_files:
        return (ImageTensorDataset(_read_npz_batches(train_files, size)),
                ImageTensorDataset(_read_npz_batches(val_files, size)))
    if (base / "train").is_dir() and (base / "val").is_dir():
        torchvision = _require_torchvision(name)
        transform = PixelTensor(size=shape[1:])
        return (ImagesOnly(torchvision.datasets.ImageFolder(str(base / "train"), transform=transform)),
                ImagesOnly(torchvision.datasets.ImageFolder(str(base / "val"), transform=transform)))
    raise _not_found("imagenet", root, name=name, size=size)


def _read_npz_batches(files: Sequence[str], size: int) -> torch.Tensor:
    """Concatenate the ``data`` arrays (N, 3·size·size, uint8, CHW order) of npz batch files."""
    arrays = []
    for file in files:
        with np.load(file) as batch:
            data = batch["data"]
        if data.ndim != 2 or data.shape[1] != 3 * size * size:
            raise ConfigError(f"{file}: expected data of shape (N, {3 * size * size}), got {data.shape}")
        arrays.append(np.ascontiguousarray(data, dtype=np.uint8).reshape(-1, 3, size, size))
    return torch.from_numpy(np.concatenate(arrays))


class EpochShuffleSampler(Sampler[int]):
    """Shuffles with a generator seeded by ``seed + epoch``, so the order of any epoch is a pure
    function of (seed, epoch): resuming from a checkpoint replays exactly the same batches.

    Same ``set_epoch`` API as ``torch.utils.data.DistributedSampler``.
    """

    def __init__(self, length: int, shuffle: bool, seed: int):
        self.length = length
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.length))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())

    def __len__(self) -> int:
        return self.length


class ShardSampler(Sampler[int]):
    """Rank ``rank`` of ``world_size`` takes indices ``rank, rank + world_size, ...`` of
    ``range(length)`` in order: every index exactly once over all ranks, no padding (shards
    differ in size by at most one).  Used for evaluation, whose sums are then all-reduced, so the
    result equals a single pass over the whole split."""

    def __init__(self, length: int, rank: int, world_size: int):
        self.length, self.rank, self.world_size = length, rank, world_size
        self.seed = 0
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def make_sampler(dataset: Dataset, shuffle: bool, seed: int, rank: int = 0,
                 world_size: int = 1) -> Sampler[int]:
    """The one place samplers are created.

    One process: :class:`EpochShuffleSampler` (or sequential order).  Distributed training
    (``world_size > 1``):

    * shuffled (training): ``torch.utils.data.DistributedSampler(shuffle=True, seed=seed,
      drop_last=True)``.  Its permutation of epoch ``e`` is ``randperm(N, seed + e)`` — the
      same as :class:`EpochShuffleSampler` — truncated to a multiple of ``world_size``, and rank
      ``r`` takes positions ``r, r + W, r + 2W, ...``.  With a per-rank batch ``b = B / W``,
      the k-th batch of rank r holds positions ``kB + r + W·j`` (j < b), so the union of the
      ranks' k-th batches is exactly positions ``kB .. kB + B - 1``: the k-th batch of the
      single-process run with batch B, and the number of steps per epoch is the same
      ``floor(N / B)``.  The data order therefore depends on ``(seed, epoch, B)`` only, not on
      the number of ranks.
    * not shuffled (evaluation): :class:`ShardSampler` (no padding, every item once).
    """
    if world_size > 1:
        if shuffle:
            from torch.utils.data.distributed import DistributedSampler  # noqa: PLC0415

            return DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                      seed=seed, drop_last=True)
        return ShardSampler(len(dataset), rank, world_size)
    return EpochShuffleSampler(len(dataset), shuffle=shuffle, seed=seed)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int,
                num_workers: int = 0, drop_last: bool = False, rank: int = 0,
                world_size: int = 1) -> DataLoader:
    """A DataLoader whose shuffling and worker seeds depend only on (seed, epoch); call
    :func:`set_loader_epoch` before iterating each epoch.  ``batch_size`` is per process; in a
    distributed run (``world_size > 1``) the loader serves rank ``rank``'s shard."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=make_sampler(dataset, shuffle, seed, rank=rank, world_size=world_size),
        num_workers=num_workers,
        drop_last=drop_last,
        # Own generator: the loader's base seed must not consume (or depend on) global RNG.
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Position the loader's shuffling and worker seeds at ``epoch``."""
    sampler = loader.sampler
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    if loader.generator is not None:
        seed = getattr(sampler, "seed", 0)
        loader.generator.manual_seed(seed * 1_000_003 + epoch)
