"""Type stubs for the Rust extension ``inv_conv._native`` (CPU ops on numpy arrays and on raw
addresses, CUDA ops on raw device addresses)."""

from typing import List, Optional, Protocol, Tuple, TypeVar

import numpy as np
import numpy.typing as npt

_A = TypeVar("_A", npt.NDArray[np.float32], npt.NDArray[np.float64])

class CudaError(RuntimeError):
    """A GPU, CUDA driver or NVRTC problem: missing, failed to compile, or failed to launch."""

class _ImageOp(Protocol):
    """The four CPU image ops' signature: ``input`` is x, y or grad as the op says."""

    def __call__(self, input: _A, weight: _A, order: str = "TL", out: Optional[_A] = None) -> _A: ...

forward: _ImageOp  # y = conv2d(pad(x, PAD[order]), ŵ) on the CPU.
inverse: _ImageOp  # x = A⁻¹ y on the CPU (wavefront substitution).
forward_adjoint: _ImageOp  # Aᵀ grad on the CPU.
inverse_adjoint: _ImageOp  # A⁻ᵀ grad on the CPU.

def weight_grad(
    x: _A, grad: _A, order: str = "TL", kernel_size: Tuple[int, int] = (3, 3), out: Optional[_A] = None
) -> _A:
    """Σ grad · pad(x) per tap, zero at the masked anchor entries, shape (C, C, KH, KW)."""

def inverse_backward(
    x: _A, grad: _A, weight: _A, order: str = "TL", u: Optional[_A] = None, grad_w: Optional[_A] = None
) -> Tuple[_A, _A]:
    """The inverse's backward in one call: (A⁻ᵀ grad, −Σ (A⁻ᵀ grad)·pad(x)), x the inverse's output."""

def check_problem(
    input_name: str, input_shape: list[int], weight_shape: list[int], order: str = "TL"
) -> Tuple[int, int]:
    """Validate shapes as every op does; returns (KH, KW)."""

def built_with_cuda() -> bool:
    """Whether the extension was built with the CUDA backend."""

# The CPU ops on raw addresses (the torch layer's path, `_dispatch`): each address holds a live,
# C-contiguous buffer of the dtype named ("float32" or "float64") of the size its shape gives;
# outputs are fresh. Shapes are checked as by every op; the rest is the caller's to ensure.
class _RawImageOp(Protocol):
    """``(input, weight, out)`` addresses; ``input`` is x, y or grad as the op says."""

    def __call__(
        self, dtype_name: str, shape: Tuple[int, ...], weight_shape: Tuple[int, ...], order: str,
        addrs: Tuple[int, int, int],
    ) -> None: ...

cpu_forward: _RawImageOp
cpu_inverse: _RawImageOp
cpu_forward_adjoint: _RawImageOp
cpu_inverse_adjoint: _RawImageOp

def cpu_weight_grad(
    dtype_name: str, x_shape: Tuple[int, ...], grad_shape: Tuple[int, ...], kernel: Tuple[int, int], order: str,
    addrs: Tuple[int, int, int],
) -> None:
    """Σ grad · pad(x) per tap (masked) into out: addresses (x, grad, out)."""

def cpu_inverse_backward(
    dtype_name: str, x_shape: Tuple[int, ...], grad_shape: Tuple[int, ...], weight_shape: Tuple[int, ...],
    order: str, addrs: Tuple[int, int, int, int, int],
) -> None:
    """u = A⁻ᵀ grad and grad_w = −Σ u·pad(x): addresses (x, grad, weight, u, grad_w)."""

# CUDA backend (present when built with the `cuda` feature). Buffers are raw device addresses
# of contiguous tensors on `device`; `stream` is a raw CUstream handle; nothing synchronizes.
_Shape = Tuple[int, int, int, int]
_Kernel = Tuple[int, int]

def cuda_set_nvrtc_path(path: Optional[str] = None) -> None:
    """NVRTC library to try first."""

def cuda_unavailable_reason() -> Optional[str]:
    """None when the driver, a GPU and NVRTC are usable; otherwise what is missing."""

def cuda_device_info(device: int) -> dict:
    """Compiles the kernels for `device` (first use) and describes them."""

def cuda_prep_len(channels: int, kernel_h: int, kernel_w: int) -> int:
    """Elements of coefficient scratch the four image ops need."""

def cuda_weight_grad_scratch_len(device: int, dtype_name: str, shape: _Shape, kernel: _Kernel, order: str) -> int:
    """Elements of scratch cuda_weight_grad needs on `device`."""

class _CudaImageOp(Protocol):
    """The four CUDA image ops' signature."""

    def __call__(
        self, device: int, stream: int, dtype_name: str, shape: _Shape, kernel: _Kernel, order: str,
        input: int, weight: int, out: int, prep: int, prep_len: int,
    ) -> None: ...

cuda_forward: _CudaImageOp  # y = A x.
cuda_forward_adjoint: _CudaImageOp  # Aᵀ g.
cuda_inverse: _CudaImageOp  # x = A⁻¹ y.
cuda_inverse_adjoint: _CudaImageOp  # A⁻ᵀ g.

def cuda_weight_grad(
    device: int, stream: int, dtype_name: str, shape: _Shape, kernel: _Kernel, order: str,
    x: int, grad: int, out: int, scratch: int, scratch_len: int, negate: bool = False,
) -> None:
    """Σ grad·pad(x) (masked; negated when `negate`) into out (C, C, KH, KW)."""

def cuda_inverse_backward(
    device: int, stream: int, dtype_name: str, shape: _Shape, kernel: _Kernel, order: str,
    buffers: Tuple[int, int, int, int, int], prep: int, prep_len: int, scratch: int, scratch_len: int,
) -> None:
    """buffers = (x, grad, weight, u, grad_w): u = A⁻ᵀ grad, grad_w = −Σ u·pad(x) (masked)."""

def cuda_conv_chain(
    device: int, stream: int, dtype_name: str, shape: _Shape, kernel: _Kernel, orders: List[str],
    input: int, weights: List[int], out: int,
    coupling: Optional[Tuple[int, Tuple[int, int, int], int, float, float]], actnorm: Optional[Tuple[int, int]],
) -> bool:
    """The convolutions of `orders` in sequence, one launch (with an affine coupling's inverse
    before and an ActNorm's inverse after them); False, launching nothing, where it does not fit."""

def cuda_solve_chain(
    device: int, stream: int, dtype_name: str, shape: _Shape, kernel: _Kernel, orders: List[str],
    input: int, weights: List[int], outs: List[int], adjoint: bool,
) -> bool:
    """outs[l] = A_l⁻¹ outs[l − 1] (outs[−1] = input; the adjoints with `adjoint`), a one-launch
    solve per layer; False, launching nothing, where the one-launch solve does not apply."""

def cuda_inverse_chain_backward(
    device: int, stream: int, dtype_name: str, shape: _Shape, kernel: _Kernel, orders: List[str],
    xs: List[int], grad: int, weights: List[int], us: List[int], grad_w: int, scratch: int, scratch_len: int,
) -> bool:
    """The backward of a chain of inverses: us[l] = A_l⁻ᵀ us[l + 1] (us[L] = grad), grad_w (L, C, C,
    KH, KW) = −Σ us[l]·pad(xs[l]) (masked); False, launching nothing, where the solve chain does not apply."""

def compile_kernels_check(arch: str = "sm_90") -> dict:
    """Compiles every kernel with NVRTC for `arch` (no GPU needed)."""
