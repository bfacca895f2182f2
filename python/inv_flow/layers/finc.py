"""FInC Flow's unit (Kallappa, Nagar & Varma, "FInC Flow: Fast and Invertible k×k Convolutions
for Normalizing Flows", 2023): the channels are split into four groups and each group goes
through its own invertible masked k×k convolution with one of the four orders (paddings)
TL, TR, BL, BR, so that the unit as a whole looks in every direction.

FInC Flow runs the convolution in the density (training) direction — ``direction="conv"`` —
and needs the wavefront inverse only when sampling. The groups are not mixed here; the model
builder puts Glow's 1×1 convolution after the unit for that (``inv_flow.models``).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FlowLayer
from .invconv import ORDERS, _check, _import_inv_conv


def group_sizes(num_channels: int, groups: int = 4) -> list[int]:
    """Split ``num_channels`` into ``min(groups, num_channels)`` near-equal groups (the first
    ones one larger when it does not divide)."""
    groups = min(groups, num_channels)
    base, extra = divmod(num_channels, groups)
    return [base + (1 if index < extra else 0) for index in range(groups)]


class FInCFlowUnit(FlowLayer):
    """Channel groups (up to four) with one masked convolution each, orders TL, TR, BL, BR.

    ``logdet`` is 0 (every masked convolution is unit-triangular). ``direction="conv"`` is
    FInC Flow (density direction = convolution, sampling = wavefront inverse); ``"inverse"``
    swaps them. ``dense_reference=True`` uses inv_conv's dense autograd reference.
    """

    logdet_always_zero = True

    def __init__(self, num_channels: int, kernel_size: int = 3, direction: str = "conv",
                 dense_reference: bool = False):
        super().__init__()
        _check(direction, kernel_size)
        inv_conv = _import_inv_conv()
        self.num_channels = int(num_channels)
        self.sizes = group_sizes(self.num_channels)
        self.convs = nn.ModuleList(
            inv_conv.InvConv2d(size, kernel_size=kernel_size, order=order, direction=direction,
                               dense_reference=dense_reference)
            for size, order in zip(self.sizes, ORDERS))

    def forward(self, x, context=None):
        parts = x.split_with_sizes(self.sizes, dim=1)
        out = [conv(part)[0] for conv, part in zip(self.convs, parts)]
        return torch.cat(out, dim=1), x.new_zeros(x.shape[0])

    def reverse(self, y, context=None):
        parts = y.split_with_sizes(self.sizes, dim=1)
        return torch.cat([conv.reverse(part) for conv, part in zip(self.convs, parts)], dim=1)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, groups={self.sizes}"
