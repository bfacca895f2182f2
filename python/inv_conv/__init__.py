"""inv_conv: exact invertible masked convolutions for normalizing flows.

The Inverse-Flow layer (Nagar & Varma, AISTATS 2025) puts the inverse of an invertible masked
k×k convolution in the density direction. This package gives the ops on CPU (Rust, rayon) and
CUDA (NVRTC-compiled kernels), differentiable through torch custom ops:

- :func:`conv2d` (sampling direction) and :func:`inv_conv2d` (density direction);
- :class:`InvConv2d` and :class:`InvFlowUnit` layers;
- the original extension's ``inverse``, ``forward``, ``dy``, ``dw`` (also importable as
  ``inv_conv_with_bp``), with correct values;
- :mod:`inv_conv.interop`: the layers as normflows flows and zuko transforms.
"""

from . import _native
from ._args import ORDERS
from ._native import CudaError

try:
    import torch  # noqa: F401
except ImportError:  # a numpy-only install: the raw ops on numpy arrays, nothing torch-based
    from ._numpy_api import conv2d, conv2d_transpose, conv2d_weight_grad, inv_conv2d, inv_conv2d_transpose
else:
    from . import interop, reference
    from .compat import dw, dy, forward, inverse
    from .nn import InvConv2d, InvFlowUnit
    from .ops import (conv2d, conv2d_chain, conv2d_transpose, conv2d_weight_grad, inv_conv2d, inv_conv2d_chain,
                      inv_conv2d_transpose)

from importlib import metadata as _metadata

try:  # one version source: Cargo.toml, which maturin writes into the package metadata
    __version__ = _metadata.version("inv_conv")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


def cuda_available() -> bool:
    """Whether CUDA tensors can be used: built with CUDA, and a driver, GPU and NVRTC found
    (False without torch)."""
    try:
        from . import _cuda
    except ImportError:
        return False
    return bool(_cuda.is_available())


_NUMPY_API = ["CudaError", "__version__", "ORDERS", "conv2d", "conv2d_transpose", "conv2d_weight_grad", "cuda_available",
              "inv_conv2d", "inv_conv2d_transpose"]
_TORCH_API = ["InvConv2d", "InvFlowUnit", "conv2d_chain", "dw", "dy", "forward", "interop", "inv_conv2d_chain", "inverse",
              "reference"]
# Without torch only the numpy functions exist.
__all__ = sorted(_NUMPY_API + (_TORCH_API if "InvConv2d" in globals() else []))
