"""Flow-layer wrappers around ``inv_conv``'s exact invertible masked convolutions.

``inv_conv`` is imported lazily so that the rest of ``inv_flow`` works (and its other tests
run) even where the Rust extension has not been built.
"""

from __future__ import annotations

import os

import torch

from .actnorm import ActNorm
from .base import FlowLayer
from .coupling import AffineCoupling

# inv_conv.ORDERS, restated: importing inv_conv here would load the extension eagerly.
ORDERS = ("TL", "TR", "BL", "BR")
DIRECTIONS = ("inverse", "conv")


def _import_inv_conv():
    try:
        import inv_conv
    except ImportError as err:  # pragma: no cover - depends on the build
        raise ImportError(
            "inv_flow's invertible k x k convolution layers need the `inv_conv` package "
            "(build it with `pip install -e .` at the repository root)") from err
    return inv_conv


class _InvConvWrapper(FlowLayer):
    """Shared forward/reverse for the wrappers: ``inv_conv`` modules already follow the
    ``forward(x, context) -> (z, logdet)`` / ``reverse(z, context)`` convention.

    The masked convolutions are unit-triangular, so ``log|det| = 0`` exactly for every weight.
    """

    logdet_always_zero = True
    # subclasses set ``self.conv`` (no class-level default: it would shadow the submodule)

    def forward(self, x, context=None):
        return self.conv(x, context)

    def reverse(self, y, context=None):
        return self.conv.reverse(y, context)


def _check(direction: str, kernel_size: int) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if int(kernel_size) < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")


class InvConvLayer(_InvConvWrapper):
    """:class:`inv_conv.InvConv2d` as an ``inv_flow`` layer: one masked k x k convolution with a
    single ``order``.

    ``direction="inverse"`` (Inverse-Flow): the density direction applies the inverse of the
    masked convolution, so sampling is an ordinary convolution. ``direction="conv"`` (FInC
    Flow): the density direction is the convolution itself. ``dense_reference=True`` selects
    inv_conv's dense autograd reference implementation (exact, small images only).
    """

    def __init__(self, num_channels: int, kernel_size: int = 3, order: str = "TL",
                 direction: str = "inverse", dense_reference: bool = False,
                 init_std: float = 0.01):
        super().__init__()
        _check(direction, kernel_size)
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        inv_conv = _import_inv_conv()
        self.conv = inv_conv.InvConv2d(num_channels, kernel_size=kernel_size, order=order,
                                       direction=direction, dense_reference=dense_reference,
                                       init_std=init_std)


class InvFlowUnitLayer(_InvConvWrapper):
    """:class:`inv_conv.InvFlowUnit` as an ``inv_flow`` layer: four masked convolutions
    TL -> TR -> BL -> BR, so the receptive field covers all directions."""

    def __init__(self, num_channels: int, kernel_size: int = 3, direction: str = "inverse",
                 dense_reference: bool = False, init_std: float = 0.01):
        super().__init__()
        _check(direction, kernel_size)
        inv_conv = _import_inv_conv()
        self.conv = inv_conv.InvFlowUnit(num_channels, kernel_size=kernel_size,
                                         direction=direction, dense_reference=dense_reference,
                                         init_std=init_std)


def fused_step_reverse(layers, i: int, z):
    """The sampling direction of a step of flow ending at ``layers[i]``: an AffineCoupling
    after an Inverse-Flow unit, optionally with an ActNorm before it (Glow's order), as one
    kernel (``inv_conv.ops.conv2d_chain_fused``). Returns ``(x, n)``, n the layers it
    reversed, or None where it does not apply (the caller reverses them one by one).
    ``INV_FLOW_FUSED_SAMPLING=0`` turns it off (A/B runs)."""
    if (i < 1 or not isinstance(layers[i], AffineCoupling) or not isinstance(layers[i - 1], InvFlowUnitLayer)
            or not z.is_cuda or torch.is_grad_enabled() or os.environ.get("INV_FLOW_FUSED_SAMPLING") == "0"
            or not _import_inv_conv().ops.fused_chain_applies(z)):
        return None
    coupling, unit = layers[i], layers[i - 1]
    actnorm = layers[i - 2] if i >= 2 and isinstance(layers[i - 2], ActNorm) else None
    terms = coupling.reverse_terms(z)
    out = unit.conv.reverse_fused(z, coupling=terms,
                                  actnorm=None if actnorm is None else (actnorm.log_scale, actnorm.bias))
    if out is None:  # (an image too large for the kernel) the layers, the net not run again
        out = unit.reverse(coupling.reverse(z, net_output=terms[0]))
        if actnorm is not None:
            out = actnorm.reverse(out)
    return out, 2 if actnorm is None else 3
