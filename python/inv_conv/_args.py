"""Argument normalisation shared by the torch and the numpy-only APIs (no torch import).

Every check raises TypeError (wrong kind of value) or ValueError (right kind, bad value) with
a message naming the argument, what it must be and what was given.
"""

from __future__ import annotations

import math
import operator

ORDERS = ("TL", "TR", "BL", "BR")


def normalise_order(order: object) -> str:
    """The order in upper case, or ValueError naming the allowed ones."""
    if not isinstance(order, str) or order.upper() not in ORDERS:
        raise ValueError(f"order must be one of 'TL', 'TR', 'BL', 'BR'; got {order!r}")
    return order.upper()


def _as_int(value: object) -> int | None:
    """``value`` as an int if it is an integer (Python, numpy, 0-d tensor), else None; bools
    are not sizes."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def positive_int(name: str, value: object) -> int:
    """``value`` as a positive int, or TypeError/ValueError naming ``name``."""
    as_int = _as_int(value)
    if as_int is None:
        raise TypeError(f"{name} must be a positive int; got {value!r} ({type(value).__name__})")
    if as_int < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return as_int


def kernel_pair(kernel_size: object, name: str = "kernel_size") -> tuple[int, int]:
    """(KH, KW) from a positive int or a pair of them, or TypeError/ValueError naming ``name``."""
    expected = f"{name} must be a positive int or a pair (KH, KW) of positive ints"
    single = _as_int(kernel_size)
    if single is not None:
        sizes = [single, single]
    elif isinstance(kernel_size, (str, bytes)) or not hasattr(kernel_size, "__len__"):
        raise TypeError(f"{expected}; got {kernel_size!r} ({type(kernel_size).__name__})")
    elif len(kernel_size) != 2:
        raise ValueError(f"{expected}; got {kernel_size!r} ({len(kernel_size)} values)")
    else:
        sizes = [_as_int(size) for size in kernel_size]
        if None in sizes:
            raise TypeError(f"{expected}; got {kernel_size!r}")
    if min(sizes) < 1:
        raise ValueError(f"{expected}; got {kernel_size!r}")
    return sizes[0], sizes[1]


def non_negative_finite(name: str, value: object) -> float:
    """``value`` as a finite float >= 0, or TypeError/ValueError naming ``name``."""
    expected = f"{name} must be a finite number >= 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"{expected}; got {value!r} ({type(value).__name__})")
    as_float = float(value)
    if not math.isfinite(as_float) or as_float < 0:
        raise ValueError(f"{expected}; got {value!r}")
    return as_float
