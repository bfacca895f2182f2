"""Type stubs for the Rust extension ``inv_conv._native`` (CPU ops on numpy arrays)."""

from typing import Optional, Tuple, TypeVar

import numpy as np
import numpy.typing as npt

_A = TypeVar("_A", npt.NDArray[np.float32], npt.NDArray[np.float64])

class CudaError(RuntimeError):
    """A GPU, CUDA driver or NVRTC problem: missing, failed to compile, or failed to launch."""

def forward(input: _A, weight: _A, order: str = "TL", out: Optional[_A] = None) -> _A:
    """y = conv2d(pad(x, PAD[order]), ŵ) on the CPU."""

def inverse(input: _A, weight: _A, order: str = "TL", out: Optional[_A] = None) -> _A:
    """x = A⁻¹ y on the CPU (wavefront substitution)."""

def forward_adjoint(input: _A, weight: _A, order: str = "TL", out: Optional[_A] = None) -> _A:
    """Aᵀ grad on the CPU."""

def inverse_adjoint(input: _A, weight: _A, order: str = "TL", out: Optional[_A] = None) -> _A:
    """A⁻ᵀ grad on the CPU."""

def weight_grad(
    x: _A, grad: _A, order: str = "TL", kernel_size: Tuple[int, int] = (3, 3), out: Optional[_A] = None
) -> _A:
    """Σ grad · pad(x) per tap, zero at the masked anchor entries, shape (C, C, KH, KW)."""

def check_problem(
    input_name: str, input_shape: list[int], weight_shape: list[int], order: str = "TL"
) -> Tuple[int, int]:
    """Validate shapes as every op does; returns (KH, KW)."""

def built_with_cuda() -> bool:
    """Whether the extension was built with the CUDA backend."""
