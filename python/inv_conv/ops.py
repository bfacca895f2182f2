"""The differentiable ops, registered with ``torch.library.custom_op``.

Five primitive ops (``inv_conv::forward``, ``inverse``, ``forward_adjoint``, ``inverse_adjoint``,
``weight_grad``) each have a fake implementation (shape inference for ``torch.compile`` and meta
tensors) and the two directions have registered autograd formulas built from the others:

- ``y = conv2d(x, w)``:     ∂x = Aᵀ g,            ∂w = Σ g · pad(x)          (masked)
- ``x = inv_conv2d(y, w)``: ∂y = u = A⁻ᵀ g,        ∂w = −Σ u · pad(x)         (masked)

Masked weight entries get exactly zero gradient from the ops themselves. The inverse's backward
runs as one op, ``inv_conv::inverse_backward`` (u and −Σ u·pad(x) in one dispatch and, on the
GPU, one native call), because per-op host overhead dominates a training step at small sizes.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _dispatch, _native, _numpy_api
from ._args import kernel_pair, normalise_order

_LIB = "inv_conv"


@torch.library.custom_op(f"{_LIB}::forward", mutates_args=())
def _forward(x: torch.Tensor, weight: torch.Tensor, order: str) -> torch.Tensor:
    _dispatch.check_shapes("x", x, weight, order)
    return _dispatch.run_forward(x, weight, order)


@torch.library.custom_op(f"{_LIB}::inverse", mutates_args=())
def _inverse(y: torch.Tensor, weight: torch.Tensor, order: str) -> torch.Tensor:
    _dispatch.check_shapes("y", y, weight, order)
    return _dispatch.run_inverse(y, weight, order)


@torch.library.custom_op(f"{_LIB}::forward_adjoint", mutates_args=())
def _forward_adjoint(grad: torch.Tensor, weight: torch.Tensor, order: str) -> torch.Tensor:
    _dispatch.check_shapes("grad", grad, weight, order)
    return _dispatch.run_forward_adjoint(grad, weight, order)


@torch.library.custom_op(f"{_LIB}::inverse_adjoint", mutates_args=())
def _inverse_adjoint(grad: torch.Tensor, weight: torch.Tensor, order: str) -> torch.Tensor:
    _dispatch.check_shapes("grad", grad, weight, order)
    return _dispatch.run_inverse_adjoint(grad, weight, order)


@torch.library.custom_op(f"{_LIB}::weight_grad", mutates_args=())
def _weight_grad(x: torch.Tensor, grad: torch.Tensor, order: str, kernel_h: int, kernel_w: int) -> torch.Tensor:
    _check_weight_grad_args(x, grad, order, kernel_h, kernel_w)
    return _dispatch.run_weight_grad(x, grad, order, kernel_h, kernel_w)


def _check_weight_grad_args(x, grad, order, kernel_h, kernel_w) -> None:
    c = x.shape[1] if x.dim() > 1 else 0
    _native.check_problem("x", list(x.shape), [c, c, kernel_h, kernel_w], order)
    if grad.shape != x.shape:
        raise ValueError(f"grad must have the shape of x {tuple(x.shape)}; got {tuple(grad.shape)}")


@torch.library.custom_op(f"{_LIB}::inverse_backward", mutates_args=())
def _inverse_backward_op(
    x: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor, order: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, grad_w) = (A⁻ᵀ grad, −Σ u · pad(x)), grad_w masked: the backward of x = A⁻¹ y."""
    _check_inverse_backward_args(x, grad, weight, order)
    return _dispatch.run_inverse_backward(x, grad, weight, order)


def _check_inverse_backward_args(x, grad, weight, order) -> None:
    _dispatch.check_shapes("x", x, weight, order)
    if grad.shape != x.shape:
        raise ValueError(f"grad must have the shape of x {tuple(x.shape)}; got {tuple(grad.shape)}")


@_inverse_backward_op.register_fake
def _(x, grad, weight, order):
    _check_inverse_backward_args(x, grad, weight, order)
    c = x.shape[1]
    return (
        torch.empty_like(grad, memory_format=torch.contiguous_format),
        x.new_empty((c, c, weight.shape[2], weight.shape[3])),
    )


def _image_fake(input_name: str):
    def fake(inp, weight, order):
        _dispatch.check_shapes(input_name, inp, weight, order)
        return torch.empty_like(inp, memory_format=torch.contiguous_format)

    return fake


_forward.register_fake(_image_fake("x"))
_inverse.register_fake(_image_fake("y"))
_forward_adjoint.register_fake(_image_fake("grad"))
_inverse_adjoint.register_fake(_image_fake("grad"))


@_weight_grad.register_fake
def _(x, grad, order, kernel_h, kernel_w):
    _check_weight_grad_args(x, grad, order, kernel_h, kernel_w)
    c = x.shape[1]
    return x.new_empty((c, c, kernel_h, kernel_w))


def _forward_setup(ctx, inputs, output):
    x, weight, order = inputs
    ctx.order = order
    ctx.save_for_backward(x, weight)


def _forward_backward(ctx, grad):
    x, weight = ctx.saved_tensors
    grad_x = grad_w = None
    if ctx.needs_input_grad[0]:
        grad_x = _forward_adjoint(grad, weight, ctx.order)
    if ctx.needs_input_grad[1]:
        grad_w = _weight_grad(x, grad, ctx.order, weight.shape[2], weight.shape[3])
    return grad_x, grad_w, None


def _inverse_setup(ctx, inputs, output):
    _, weight, order = inputs
    ctx.order = order
    # The backward needs the solution x, not y: keep the output.
    ctx.save_for_backward(output, weight)


def _inverse_backward(ctx, grad):
    x, weight = ctx.saved_tensors
    need_y, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if need_w:
        u, grad_w = _inverse_backward_op(x, grad, weight, ctx.order)
        return (u if need_y else None), grad_w, None
    if need_y:
        return _inverse_adjoint(grad, weight, ctx.order), None, None
    return None, None, None


_forward.register_autograd(_forward_backward, setup_context=_forward_setup)
_inverse.register_autograd(_inverse_backward, setup_context=_inverse_setup)

# Under autocast, run in float32 (half precision would make the wavefront inaccurate).
for _name in ("forward", "inverse", "forward_adjoint", "inverse_adjoint", "weight_grad", "inverse_backward"):
    for _device in ("cpu", "cuda"):
        torch.library.register_autocast(f"{_LIB}::{_name}", _device, torch.float32)


def _prepare(names, a, b):
    """Validate a pair of tensor arguments and bring float16/bfloat16 to float32.

    Returns the two tensors to compute with and the dtype of the result: the inputs' dtype,
    except under autocast, where (like PyTorch's float32-policy ops) float16/bfloat16 arguments
    are cast to float32 first, so the result is float32 (float64 stays float64).
    """
    _dispatch.check_tensor(names[0], a)
    _dispatch.check_tensor(names[1], b)
    if a.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(a.device.type):
        a, b = (t.float() if t.dtype in _dispatch.UPCAST_DTYPES else t for t in (a, b))
    _dispatch.check_pair(names, a, b)
    out_dtype = a.dtype
    if a.dtype in _dispatch.UPCAST_DTYPES:
        a, b = a.float(), b.float()
    return a, b, out_dtype


def _apply(op, numpy_fn, names, inp, weight, order):
    order = normalise_order(order)
    if isinstance(inp, np.ndarray) or isinstance(weight, np.ndarray):
        return numpy_fn(inp, weight, order)
    inp, weight, out_dtype = _prepare(names, inp, weight)
    return op(inp, weight, order).to(out_dtype)


def conv2d(x, weight, order: str = "TL"):
    """Sampling direction of the invertible masked convolution: ``y = A x``.

    Exactly ``F.conv2d(F.pad(x, PAD[order]), ŵ)`` where ŵ is ``weight`` with the anchor tap's
    channel matrix made unit lower-triangular. Differentiable with respect to ``x`` and
    ``weight``.

    Args:
        x: (B, C, H, W) tensor (CPU or CUDA) or numpy array; float32/float64 (float16/bfloat16
            are computed in float32).
        weight: (C, C, KH, KW), torch's conv layout (out, in, kh, kw), same dtype and device.
        order: "TL", "TR", "BL" or "BR": the corner the triangular structure starts from.
    """
    return _apply(_forward, _numpy_api.conv2d, ("x", "weight"), x, weight, order)


def inv_conv2d(y, weight, order: str = "TL"):
    """Density direction: ``x = A⁻¹ y``, the exact inverse of :func:`conv2d`.

    Computed by wavefront substitution; its backward is the parallel reverse wavefront
    ``A⁻ᵀ g`` plus a convolution weight-gradient. ``log|det A| = 0`` exactly. Arguments as in
    :func:`conv2d`.
    """
    return _apply(_inverse, _numpy_api.inv_conv2d, ("y", "weight"), y, weight, order)


def conv2d_transpose(grad, weight, order: str = "TL"):
    """``Aᵀ grad``: the input-gradient of :func:`conv2d` (a transposed convolution)."""
    return _apply(_forward_adjoint, _numpy_api.conv2d_transpose, ("grad", "weight"), grad, weight, order)


def inv_conv2d_transpose(grad, weight, order: str = "TL"):
    """``A⁻ᵀ grad``: the input-gradient of :func:`inv_conv2d` (a reverse wavefront)."""
    return _apply(_inverse_adjoint, _numpy_api.inv_conv2d_transpose, ("grad", "weight"), grad, weight, order)


def conv2d_weight_grad(x, grad, kernel_size, order: str = "TL"):
    """``Σ grad · pad(x)`` per tap: the weight-gradient of :func:`conv2d`, zero at masked entries.

    The weight-gradient of :func:`inv_conv2d` is ``-conv2d_weight_grad(x, A⁻ᵀ g)`` with
    ``x = inv_conv2d(y)``.
    """
    if isinstance(x, np.ndarray) or isinstance(grad, np.ndarray):
        return _numpy_api.conv2d_weight_grad(x, grad, kernel_size, order)
    order = normalise_order(order)
    kh, kw = kernel_pair(kernel_size)
    x, grad, out_dtype = _prepare(("x", "grad"), x, grad)
    return _weight_grad(x, grad, order, kh, kw).to(out_dtype)
