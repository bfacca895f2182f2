"""Validation and backend routing for torch tensors.

The public functions validate dtypes and devices here (pure Python, so ``torch.compile`` can
trace them); shapes are validated by the Rust core's contract (``_native.check_problem``) inside
the custom ops and their fake implementations. The ``run_*`` functions take validated tensors
(``run_inverse_backward`` fuses the inverse's two backward ops) and route CPU tensors to the
Rust CPU backend (zero-copy numpy views of tensors that
torch allocated) and CUDA tensors to :mod:`inv_conv._cuda`.
"""

from __future__ import annotations

import torch

from . import _native

FLOAT_DTYPES = (torch.float32, torch.float64)
#: Low-precision dtypes accepted by the public API and computed in float32.
UPCAST_DTYPES = (torch.float16, torch.bfloat16)


def check_tensor(name: str, t: object) -> None:
    """TypeError unless ``t`` is a floating-point tensor the ops can take."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray; got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES and t.dtype not in UPCAST_DTYPES:
        raise TypeError(
            f"{name} must be a floating-point tensor (float32 or float64; float16/bfloat16 are "
            f"computed in float32); got dtype {t.dtype}"
        )


def check_match(names: tuple[str, str], a: torch.Tensor, b: torch.Tensor) -> None:
    """Two arguments that passed :func:`check_tensor` are of one dtype and on one device."""
    if a.dtype != b.dtype:
        raise TypeError(f"{names[0]} and {names[1]} must have the same dtype; got {a.dtype} and {b.dtype}")
    if a.device != b.device:
        raise ValueError(f"{names[0]} and {names[1]} must be on the same device; got {a.device} and {b.device}")


def check_shapes(input_name: str, inp: torch.Tensor, weight: torch.Tensor, order: str) -> tuple[int, int]:
    """The core's shape contract (raises ValueError naming the argument); returns (KH, KW)."""
    return _native.check_problem(input_name, list(inp.shape), list(weight.shape), order)


_cuda_ready = None  # the _cuda module once it was found usable (checked once per process)


def _cuda_module():
    global _cuda_ready
    if _cuda_ready is not None:
        return _cuda_ready
    from . import _cuda

    if not _cuda.is_available():
        raise _native.CudaError(f"CUDA tensors given but the CUDA backend is unavailable: {_cuda.unavailable_reason()}")
    _cuda_ready = _cuda
    return _cuda


def _plain(t: torch.Tensor) -> torch.Tensor:
    # Only what is needed: each torch call here costs host time on small problems.
    if t.requires_grad:
        t = t.detach()
    return t if t.is_contiguous() else t.contiguous()


def _run_image(name: str, native_fn, inp: torch.Tensor, weight: torch.Tensor, order: str) -> torch.Tensor:
    inp, weight = _plain(inp), _plain(weight)
    if inp.is_cuda:
        return getattr(_cuda_module(), name)(inp, weight, order)
    out = torch.empty_like(inp)
    native_fn(inp.numpy(), weight.numpy(), order, out.numpy())
    return out


def run_forward(x: torch.Tensor, weight: torch.Tensor, order: str) -> torch.Tensor:
    return _run_image("forward", _native.forward, x, weight, order)


def run_inverse(y: torch.Tensor, weight: torch.Tensor, order: str) -> torch.Tensor:
    return _run_image("inverse", _native.inverse, y, weight, order)


def run_forward_adjoint(grad: torch.Tensor, weight: torch.Tensor, order: str) -> torch.Tensor:
    return _run_image("forward_adjoint", _native.forward_adjoint, grad, weight, order)


def run_inverse_adjoint(grad: torch.Tensor, weight: torch.Tensor, order: str) -> torch.Tensor:
    return _run_image("inverse_adjoint", _native.inverse_adjoint, grad, weight, order)


def run_weight_grad(x: torch.Tensor, grad: torch.Tensor, order: str, kernel_h: int, kernel_w: int) -> torch.Tensor:
    x, grad = _plain(x), _plain(grad)
    if x.is_cuda:
        return _cuda_module().weight_grad(x, grad, order, kernel_h, kernel_w)
    c = x.shape[1]
    out = torch.empty((c, c, kernel_h, kernel_w), dtype=x.dtype)
    _native.weight_grad(x.numpy(), grad.numpy(), order, (kernel_h, kernel_w), out.numpy())
    return out


def run_inverse_backward(x: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor, order: str):
    """(A⁻ᵀ grad, −Σ (A⁻ᵀ grad)·pad(x)): the inverse's input- and weight-gradient."""
    x, grad, weight = _plain(x), _plain(grad), _plain(weight)
    if grad.is_cuda:
        return _cuda_module().inverse_backward(x, grad, weight, order)
    u, grad_w = torch.empty_like(grad), torch.empty_like(weight)
    _native.inverse_backward(x.numpy(), grad.numpy(), weight.numpy(), order, u.numpy(), grad_w.numpy())
    return u, grad_w


def run_conv_chain(x: torch.Tensor, weights: list, orders: list):
    """The fused sampling chain on CUDA, or None when it does not apply (the caller then runs
    the layers one by one)."""
    if not x.is_cuda:
        return None
    return _cuda_module().conv_chain(_plain(x), [_plain(w) for w in weights], orders)
