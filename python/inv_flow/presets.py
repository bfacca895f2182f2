"""Model presets of ``inv_flow``: per dataset, the architecture and training settings of the
Inverse-Flow README, as config values (:mod:`inv_flow.options` says what each key means).

Plain data, no torch: ``inv-flow presets`` and config resolution do not import the models.
"""

from __future__ import annotations

import copy
from typing import Any, Dict

# Architecture follows the Inverse-Flow README: MNIST n_blocks=3, block_size=32;
# ImageNet 32/64 (and CIFAR-10) n_blocks=2, block_size=16; CelebA n_blocks=3, block_size=32.
# The invertible convolution is the options' default (family inverse_flow, masked_conv unit).
_BIG_GLOW = {"model": "glow", "actnorm": True, "split_prior": True, "activation": "none",
             "kernel_size": 3, "coupling_hidden": 512, "lr": 1e-3}


def _big_glow(image_shape: tuple, *, num_blocks: int, block_size: int, batch_size: int,
              epochs: int) -> Dict[str, Any]:
    """_BIG_GLOW for one dataset's image shape, depth and training length (keys in that order)."""
    return {**_BIG_GLOW, "image_shape": image_shape, "num_blocks": num_blocks,
            "block_size": block_size, "batch_size": batch_size, "epochs": epochs}


PRESETS: Dict[str, Dict[str, Any]] = {
    # MNIST is 28x28, which three squeezes cannot divide (28 -> 14 -> 7 -> 3.5). Like the
    # README's 3-level setting needs, the data pipeline zero-pads each 28x28 image by 2 pixels
    # on every side to 32x32 (``pad_to``) before the model; the padded pixels are part of the
    # modelled data, so bits/dim are over 32*32 dims and not directly comparable with
    # 28x28 numbers in the literature.
    "mnist": {**_BIG_GLOW, "image_shape": (1, 32, 32), "pad_to": (32, 32),
              "source_shape": (1, 28, 28), "num_blocks": 3, "block_size": 32,
              "logit_alpha": 1e-6, "batch_size": 64, "epochs": 100},
    "cifar10": _big_glow((3, 32, 32), num_blocks=2, block_size=16, batch_size=64, epochs=100),
    "imagenet32": _big_glow((3, 32, 32), num_blocks=2, block_size=16, batch_size=64, epochs=20),
    "imagenet64": _big_glow((3, 64, 64), num_blocks=2, block_size=16, batch_size=32, epochs=20),
    "celeba32": _big_glow((3, 32, 32), num_blocks=3, block_size=32, batch_size=64, epochs=50),
    "celeba64": _big_glow((3, 64, 64), num_blocks=3, block_size=32, batch_size=32, epochs=50),
    "celeba128": _big_glow((3, 128, 128), num_blocks=3, block_size=32, batch_size=16, epochs=50),
    # The embedded 8x8 digits (UCI optdigits test set), served like every dataset as 8-bit values 0..255 (the loader
    # rescales the raw 0..16; `num_levels=17` with raw values is also supported by the loader).
    # Small enough to train a few epochs on 2 CPU cores in minutes. Like MNIST, half its pixels
    # are black: logit_alpha 1e-6 as for mnist (0.05 cost every model 1.2-1.3 bits/dim, see
    # docs/COMPARE.md run I).
    "digits": {"model": "glow", "image_shape": (1, 8, 8), "num_levels": 256, "num_blocks": 2,
               "block_size": 3, "actnorm": True, "split_prior": True, "activation": "none",
               "kernel_size": 3, "coupling_hidden": 32, "logit_alpha": 1e-6,
               "lr": 2e-3, "batch_size": 64, "epochs": 60},
    # 3x32x32 crops of scikit-learn's two sample photos (CIFAR-10's shape, offline): the
    # cifar10 architecture (2 levels, split prior, 3x3 units) with 4 steps per level and
    # 64-wide couplings instead of 16 and 512, so a four-model comparison takes minutes on a GPU.
    "photo_crops": {**_BIG_GLOW, "image_shape": (3, 32, 32), "num_blocks": 2, "block_size": 4,
                    "coupling_hidden": 64, "batch_size": 64, "epochs": 10},
}


def get_preset(name: str) -> Dict[str, Any]:
    """A deep copy of ``PRESETS[name]`` (ValueError listing the choices if unknown)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
