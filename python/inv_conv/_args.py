"""Argument normalisation shared by the torch and the numpy-only APIs (no torch import)."""

from __future__ import annotations

ORDERS = ("TL", "TR", "BL", "BR")


def normalise_order(order: object) -> str:
    """The order in upper case, or ValueError naming the allowed ones."""
    if not isinstance(order, str) or order.upper() not in ORDERS:
        raise ValueError(f"order must be one of 'TL', 'TR', 'BL', 'BR'; got {order!r}")
    return order.upper()


def kernel_pair(kernel_size) -> tuple[int, int]:
    """(KH, KW) from an int or a pair, or ValueError."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    if kh < 1 or kw < 1:
        raise ValueError(f"kernel_size must be >= 1; got {kernel_size!r}")
    return int(kh), int(kw)
