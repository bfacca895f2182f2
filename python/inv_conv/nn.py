"""``nn.Module`` layers: one invertible masked convolution, and the four-order unit."""

from __future__ import annotations

import os

import torch
from torch import nn

from . import ops, reference
from ._args import ORDERS, kernel_pair, non_negative_finite, normalise_order, positive_int

DIRECTIONS = ("inverse", "conv")


class InvConv2d(nn.Module):
    """An invertible masked k×k convolution as a flow layer.

    ``forward(x)`` maps data towards the latent (the density / training direction) and returns
    ``(z, logdet)`` with ``logdet`` a zero tensor of shape [B] (the map is unit triangular);
    ``reverse(z)`` maps back (the sampling direction).

    Args:
        channels: C, input and output channels.
        kernel_size: int or (KH, KW).
        order: "TL", "TR", "BL" or "BR".
        direction: ``"inverse"`` (Inverse-Flow: ``forward`` is the wavefront inverse
            :func:`inv_conv.inv_conv2d`, ``reverse`` a plain convolution, so sampling is fast) or
            ``"conv"`` (FInC Flow: ``forward`` is the convolution, ``reverse`` the inverse).
        dense_reference: use the dense reference implementation (:mod:`inv_conv.reference`,
            pure PyTorch, plain autograd) instead of the fast ops (small images only: memory
            grows as (C·H·W)²); for comparisons.
    """

    def __init__(self, channels: int, kernel_size=3, order: str = "TL", direction: str = "inverse",
                 dense_reference: bool = False, init_std: float = 0.01):
        super().__init__()
        channels = positive_int("channels", channels)
        if not isinstance(direction, str) or direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}; got {direction!r}")
        if not isinstance(dense_reference, bool):
            raise TypeError(f"dense_reference must be a bool; got {dense_reference!r}")
        init_std = non_negative_finite("init_std", init_std)
        self.order = normalise_order(order)
        self.direction = direction
        self.dense_reference = dense_reference
        kh, kw = kernel_pair(kernel_size)
        self.kernel_size = (kh, kw)
        # Near the identity: the anchor diagonal is fixed to 1 by the mask, the rest is small.
        self.weight = nn.Parameter(torch.randn(channels, channels, kh, kw) * init_std)

    def _check_input(self, name: str, x) -> None:
        """The layer's own message for a wrong input (the ops would name their internals)."""
        c = self.weight.shape[0]
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != c:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{type(self).__name__}({c}): {name} must be a (B, {c}, H, W) tensor; got {got}")

    def _conv(self, x):
        fn = reference.conv2d if self.dense_reference else ops.conv2d
        return fn(x, self.weight, self.order)

    def _inv(self, y):
        fn = reference.inv_conv2d if self.dense_reference else ops.inv_conv2d
        return fn(y, self.weight, self.order)

    def forward(self, x: torch.Tensor, context=None):
        """Density direction: ``(z, logdet)`` with ``logdet`` zeros of shape [B].
        ``context`` is accepted for the flow-layer interface and unused."""
        self._check_input("x", x)
        z = self._inv(x) if self.direction == "inverse" else self._conv(x)
        return z, x.new_zeros(x.shape[0])

    def reverse(self, z: torch.Tensor, context=None) -> torch.Tensor:
        """Sampling direction: the exact inverse of :meth:`forward`."""
        self._check_input("z", z)
        return self._conv(z) if self.direction == "inverse" else self._inv(z)

    def extra_repr(self) -> str:
        c = self.weight.shape[0]
        return f"{c}, kernel_size={self.kernel_size}, order={self.order!r}, direction={self.direction!r}"


class InvFlowUnit(nn.Module):
    """Four :class:`InvConv2d` layers, orders TL → TR → BL → BR (reverse runs them backwards),
    so that every output pixel depends on the whole image."""

    def __init__(self, channels: int, kernel_size=3, direction: str = "inverse",
                 dense_reference: bool = False, init_std: float = 0.01):
        super().__init__()
        self.layers = nn.ModuleList(
            InvConv2d(channels, kernel_size, order, direction, dense_reference, init_std)
            for order in ORDERS
        )

    def forward(self, x: torch.Tensor, context=None):
        """Density direction through TL, TR, BL, BR: ``(z, logdet)``, logdet zeros [B] (for
        Inverse-Flow, one chain of inverses, ``inv_conv.inv_conv2d_chain``)."""
        chain = self._chain(sampling=False)
        if chain is not None and os.environ.get("INV_CONV_UNIT_CHAIN") != "0":  # =0: layer by layer (A/B runs)
            self.layers[0]._check_input("x", x)
            return ops.inv_conv2d_chain(x, *chain), x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, _ = layer(x)
        return x, x.new_zeros(x.shape[0])

    def _chain(self, sampling: bool = True):
        """(weights, orders) in the order a direction applies them (sampling: BR first; else TL
        first) when the unit is Inverse-Flow's chain of masked convolutions (not the dense
        reference), so that one chain op can run it; else None."""
        layers = list(reversed(self.layers)) if sampling else list(self.layers)
        if all(layer.direction == "inverse" and not layer.dense_reference for layer in layers):
            return [layer.weight for layer in layers], [layer.order for layer in layers]
        return None

    def reverse(self, z: torch.Tensor, context=None) -> torch.Tensor:
        """Sampling direction: the four layers' reverses, BR first (for Inverse-Flow, four
        masked convolutions: one fused kernel on CUDA when no gradient is needed)."""
        self.layers[-1]._check_input("z", z)
        chain = self._chain()
        if chain is not None:
            return ops.conv2d_chain(z, *chain)
        for layer in reversed(self.layers):
            z = layer.reverse(z)
        return z

    def reverse_fused(self, z: torch.Tensor, coupling=None, actnorm=None):
        """:meth:`reverse` with a coupling's inverse before it and an ActNorm's inverse after
        it, in one kernel (:func:`inv_conv.ops.conv2d_chain_fused`), or None where that does
        not apply."""
        chain = self._chain()
        if chain is None:
            return None
        self.layers[-1]._check_input("z", z)
        return ops.conv2d_chain_fused(z, *chain, coupling=coupling, actnorm=actnorm)
