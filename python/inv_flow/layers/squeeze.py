"""Volume-preserving reshapes: space-to-depth squeeze, its inverse, and flatten."""

from __future__ import annotations

from typing import Sequence

import torch

from .base import FlowLayer, zero_logdet


def squeeze2x2(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2); output channel ``c*4 + 2*i + j`` holds the pixel at
    offset (i, j) of each 2x2 block of input channel c (Glow's ordering)."""
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"squeeze needs even height and width, got {h}x{w}")
    x = x.reshape(b, c, h // 2, 2, w // 2, 2)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)


def unsqueeze2x2(y: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`squeeze2x2`."""
    b, c4, h, w = y.shape
    if c4 % 4:
        raise ValueError(f"unsqueeze needs a channel count divisible by 4, got {c4}")
    y = y.reshape(b, c4 // 4, 2, 2, h, w)
    return y.permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, h * 2, w * 2)


class Squeeze(FlowLayer):
    """Space-to-depth 2x2: (B, C, H, W) -> (B, 4C, H/2, W/2). A permutation: logdet 0."""

    logdet_always_zero = True

    def forward(self, x, context=None):
        return squeeze2x2(x), zero_logdet(x)

    def reverse(self, y, context=None):
        return unsqueeze2x2(y)


class UnSqueeze(FlowLayer):
    """Depth-to-space 2x2, the inverse of :class:`Squeeze`. Logdet 0."""

    logdet_always_zero = True

    def forward(self, x, context=None):
        return unsqueeze2x2(x), zero_logdet(x)

    def reverse(self, y, context=None):
        return squeeze2x2(y)


class Flatten(FlowLayer):
    """(B, *shape) -> (B, prod(shape)); ``reverse`` restores ``shape``. Logdet 0."""

    logdet_always_zero = True

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x, context=None):
        return x.reshape(x.shape[0], -1), zero_logdet(x)

    def reverse(self, y, context=None):
        return y.reshape(y.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"
