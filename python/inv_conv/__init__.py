"""inv_conv: exact invertible masked convolutions for normalizing flows.

The Inverse-Flow layer (Nagar & Varma, AISTATS 2025) puts the inverse of an invertible masked
k×k convolution in the density direction. This package gives the ops on CPU (Rust, rayon) and
CUDA (NVRTC-compiled kernels), differentiable through torch custom ops:

- :func:`conv2d` (sampling direction) and :func:`inv_conv2d` (density direction);
- :class:`InvConv2d` and :class:`InvFlowUnit` layers;
- the original extension's ``inverse``, ``forward``, ``dy``, ``dw`` (also importable as
  ``inv_conv_with_bp``), with correct values.
"""

from . import _native, reference
from ._native import CudaError
from .compat import dw, dy, forward, inverse
from .nn import InvConv2d, InvFlowUnit
from .ops import conv2d, conv2d_transpose, conv2d_weight_grad, inv_conv2d, inv_conv2d_transpose

__version__ = "0.1.0"

ORDERS = ("TL", "TR", "BL", "BR")


def cuda_available() -> bool:
    """Whether CUDA tensors can be used: built with CUDA, and a driver, GPU and NVRTC found."""
    try:
        from . import _cuda
    except ImportError:
        return False
    return bool(_cuda.is_available())


__all__ = [
    "CudaError",
    "InvConv2d",
    "InvFlowUnit",
    "ORDERS",
    "conv2d",
    "conv2d_transpose",
    "conv2d_weight_grad",
    "cuda_available",
    "dw",
    "dy",
    "forward",
    "inv_conv2d",
    "inv_conv2d_transpose",
    "inverse",
    "reference",
]
