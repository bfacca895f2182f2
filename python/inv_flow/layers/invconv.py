"""Flow-layer wrappers around ``inv_conv``'s exact invertible masked convolutions.

``inv_conv`` is imported lazily so that the rest of ``inv_flow`` works (and its other tests
run) even where the Rust extension has not been built.
"""

from __future__ import annotations

from .base import FlowLayer

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
