"""Glow's invertible 1x1 convolution."""

from __future__ import annotations

import math

import torch

from .base import FlowLayer
from .linear import DenseMatrix, LUMatrix


class InvertibleConv1x1(FlowLayer):
    """Invertible 1x1 convolution ``y[:, :, h, w] = W x[:, :, h, w]`` (Kingma & Dhariwal 2018).

    ``lu=True`` uses the P·L·U parametrisation with learned ``log|s|`` (O(C) log-det);
    ``lu=False`` a dense weight with ``slogdet``. ``logdet = H * W * log|det W|``.
    """

    def __init__(self, num_channels: int, lu: bool = True):
        super().__init__()
        self.num_channels = int(num_channels)
        self.lu = bool(lu)
        self.matrix = LUMatrix(num_channels) if lu else DenseMatrix(num_channels)

    def forward(self, x, context=None):
        y = torch.einsum("ij,bj...->bi...", self.matrix.weight(), x)
        spatial = math.prod(x.shape[2:])
        return y, (spatial * self.matrix.logabsdet()).expand(x.shape[0])

    def reverse(self, y, context=None):
        return torch.einsum("ij,bj...->bi...", self.matrix.inverse_weight(), y)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, lu={self.lu}"
