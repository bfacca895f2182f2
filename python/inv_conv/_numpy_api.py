"""The ops on numpy arrays only, for installs without torch (``import inv_conv`` then exposes
these instead of the torch functions). Same names, arguments and results as the torch API's
numpy path; no autograd."""

from __future__ import annotations

from . import _native
from ._args import kernel_pair, normalise_order


def conv2d(x, weight, order: str = "TL"):
    """Sampling direction ``y = A x`` on numpy arrays (float32/float64)."""
    return _native.forward(x, weight, normalise_order(order))


def inv_conv2d(y, weight, order: str = "TL"):
    """Density direction ``x = A⁻¹ y`` on numpy arrays."""
    return _native.inverse(y, weight, normalise_order(order))


def conv2d_transpose(grad, weight, order: str = "TL"):
    """``Aᵀ grad`` on numpy arrays."""
    return _native.forward_adjoint(grad, weight, normalise_order(order))


def inv_conv2d_transpose(grad, weight, order: str = "TL"):
    """``A⁻ᵀ grad`` on numpy arrays."""
    return _native.inverse_adjoint(grad, weight, normalise_order(order))


def conv2d_weight_grad(x, grad, kernel_size, order: str = "TL"):
    """``Σ grad · pad(x)`` per tap (masked) on numpy arrays, shape (C, C, KH, KW)."""
    return _native.weight_grad(x, grad, normalise_order(order), kernel_pair(kernel_size))
