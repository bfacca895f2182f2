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

import inspect
import os
import sys

import numpy as np
import torch
import torch.autograd.forward_ad as _forward_ad

from . import _dispatch, _native, _numpy_api
from ._args import kernel_pair, normalise_order

_LIB = "inv_conv"
# Most layers one CUDA chain kernel applies (src/cuda/limits.rs); the CPU takes any number.
_CHAIN_MAX_LAYERS = getattr(_native, "CUDA_CHAIN_MAX_LAYERS", sys.maxsize)


def _image_op(name: str, input_name: str, run):
    """The custom op ``inv_conv::<name>(Tensor <input_name>, Tensor weight, str order) -> Tensor``:
    ``run`` (a _dispatch function) after the shape checks, with its fake implementation."""

    def op(inp, weight, order):
        _dispatch.check_shapes(input_name, inp, weight, order)
        return run(inp, weight, order)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    op.__signature__ = inspect.Signature(  # the schema names the input as the errors do
        [inspect.Parameter(input_name, kind, annotation=torch.Tensor),
         inspect.Parameter("weight", kind, annotation=torch.Tensor),
         inspect.Parameter("order", kind, annotation=str)], return_annotation=torch.Tensor)
    registered = torch.library.custom_op(f"{_LIB}::{name}", op, mutates_args=())

    @registered.register_fake
    def _(inp, weight, order):
        _dispatch.check_shapes(input_name, inp, weight, order)
        return torch.empty_like(inp, memory_format=torch.contiguous_format)

    return registered


_forward = _image_op("forward", "x", _dispatch.run_forward)
_inverse = _image_op("inverse", "y", _dispatch.run_inverse)
_forward_adjoint = _image_op("forward_adjoint", "grad", _dispatch.run_forward_adjoint)
_inverse_adjoint = _image_op("inverse_adjoint", "grad", _dispatch.run_inverse_adjoint)


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
    if _plain_pair(a, b):
        return a, b, a.dtype
    _dispatch.check_tensor(names[0], a)
    _dispatch.check_tensor(names[1], b)
    if a.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(a.device.type):
        a, b = (t.float() if t.dtype in _dispatch.UPCAST_DTYPES else t for t in (a, b))
    _dispatch.check_match(names, a, b)
    out_dtype = a.dtype
    if a.dtype in _dispatch.UPCAST_DTYPES:
        a, b = a.float(), b.float()
    return a, b, out_dtype


# ---------------------------------------------------------------------------------------------
# Eager fast path. torch's custom-op machinery costs more host time per call than a small
# problem's kernels (and a flow has hundreds of these layers), so plain eager calls on real
# tensors go through these autograd Functions straight to the backend. They also carry
# forward-mode rules (jvp), vmap rules and differentiable backwards, so torch.func (grad, jvp,
# jacfwd, jacrev, hessian, vmap), torch.autograd.forward_ad and double backward work. Everything
# else — torch.compile, fake and meta tensors, dispatch modes — takes the custom ops above (same
# backend, bitwise the same results).
#
# Five linear maps, written with A = A(w) the masked convolution and W(x, g) = Σ g·pad(x) the
# masked weight-gradient (bilinear); ⟨V, W(x, g)⟩ = ⟨g, A_V x − x⟩ for any V, since forward(x, V)
# uses V's masked entries as the unit diagonal. Hence Ȧx = forward(x, ẇ) − x for a tangent ẇ.
# ---------------------------------------------------------------------------------------------

_EAGER = os.environ.get("INV_CONV_EAGER", "1") not in ("0", "")
_REAL_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)
_len_dispatch_stack = getattr(torch._C, "_len_torch_dispatch_stack", None)


def _untraced() -> bool:
    """Not compiling and no dispatch mode (fake tensors, functionalization, ...) active, and the
    eager Functions not disabled (``INV_CONV_EAGER=0``)."""
    return _EAGER and not torch.compiler.is_compiling() and (_len_dispatch_stack is None or _len_dispatch_stack() == 0)


def _fast_path_ok(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the eager Functions may run on two prepared tensors: plain CPU/CUDA tensors,
    :func:`_untraced`."""
    return type(a) in _REAL_TENSOR_TYPES and type(b) in _REAL_TENSOR_TYPES and (a.is_cpu or a.is_cuda) and _untraced()


_STRIDED = torch.strided


def _plain_pair(a, b) -> bool:
    """Whether two arguments need no validation or conversion (what nearly every call is, told
    by a few attribute reads): plain dense tensors of one float32/float64 dtype on one CPU or
    CUDA device."""
    return (type(a) in _REAL_TENSOR_TYPES and type(b) in _REAL_TENSOR_TYPES and a.dtype in _dispatch.FLOAT_DTYPES
            and b.dtype is a.dtype and a.layout is _STRIDED and b.layout is _STRIDED
            and ((a.is_cpu and b.is_cpu) or (a.is_cuda and a.get_device() == b.get_device())))


def _loop_vmap(fn, info, in_dims, *args):
    """vmap by one call per vmapped entry (unbatched tensor arguments are shared)."""
    size = info.batch_size
    parts = [
        [a.movedim(d, 0)[i] if d is not None else a for i in range(size)]
        if isinstance(a, torch.Tensor) else [a] * size
        for a, d in zip(args, in_dims)
    ]
    return torch.stack([fn.apply(*call) for call in zip(*parts)]), 0


def _image_vmap(fn, info, in_dims, inp, weight, order):
    """An image op's vmap: with a shared weight the vmapped axis folds into the batch axis."""
    if in_dims[1] is not None:
        return _loop_vmap(fn, info, in_dims, inp, weight, order)
    inp = inp.movedim(in_dims[0], 0)
    out = fn.apply(inp.reshape(info.batch_size * inp.shape[1], *inp.shape[2:]), weight, order)
    return out.reshape(inp.shape), 0


def _add(a, b):
    return b if a is None else (a if b is None else a + b)


def _tap(x, w_t, order):
    """Ȧ x for the weight tangent (or cotangent) ``w_t``: forward(x, w_t) − x."""
    return _call(_ConvFn, x, w_t, order) - x


def _tap_adjoint(g, w_t, order):
    """Ȧᵀ g: forward_adjoint(g, w_t) − g."""
    return _call(_FwdAdjFn, g, w_t, order) - g


def _map_jvp(fn, tap, ctx, x_t, w_t):
    """Tangent of the map ``fn`` (A or Aᵀ) at its saved input x: ``fn(ẋ) + tap(x, ẇ)``."""
    x, weight = ctx.saved_tensors
    return _add(_call(fn, x_t, weight, ctx.order) if x_t is not None else None,
                tap(x, w_t, ctx.order) if w_t is not None else None)


def _solve_jvp(fn, tap, ctx, y_t, w_t):
    """Tangent of the solve ``fn`` (A⁻¹ or A⁻ᵀ) at its saved output x: ``fn(ẏ − tap(x, ẇ))``."""
    x, weight = ctx.saved_tensors
    rhs = _add(y_t, -tap(x, w_t, ctx.order) if w_t is not None else None)
    return _call(fn, rhs, weight, ctx.order)


def _image_function(run, keep_output: bool = False):
    """Class decorator for the four image ops: ``forward`` is ``run`` (a _dispatch function),
    the context keeps (the input, or the output when ``keep_output``, and the weight) for the
    backward and the tangent, and vmap folds a vmapped input into the batch axis.
    ``forward_and_setup`` is both in one call, the forward of the old-style twin."""

    def decorate(cls):
        def keep(ctx, inp, weight, order, out):
            ctx.order = order
            kept = out if keep_output else inp
            ctx.save_for_backward(kept, weight)
            if _forward_mode_active():
                ctx.save_for_forward(kept, weight)

        def setup_context(ctx, inputs, output):
            keep(ctx, *inputs, output)

        def forward_and_setup(ctx, inp, weight, order):
            out = run(inp, weight, order)
            keep(ctx, inp, weight, order, out)
            return out

        cls.forward = staticmethod(run)
        cls.setup_context = staticmethod(setup_context)
        cls.forward_and_setup = staticmethod(forward_and_setup)
        cls.vmap = staticmethod(lambda info, in_dims, *args: _image_vmap(cls, info, in_dims, *args))
        return cls

    return decorate


@_image_function(_dispatch.run_forward)
class _ConvFn(torch.autograd.Function):
    """y = A x (the sampling direction)."""

    @staticmethod
    def backward(ctx, g):
        # _call: differentiable pieces under create_graph / torch.func, bare backend calls otherwise.
        x, weight = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        return (_call(_FwdAdjFn, g, weight, ctx.order) if need_x else None,
                _call(_WGradFn, x, g, ctx.order, *weight.shape[2:]) if need_w else None, None)

    @staticmethod
    def jvp(ctx, x_t, w_t, _):
        return _map_jvp(_ConvFn, _tap, ctx, x_t, w_t)


@_image_function(_dispatch.run_inverse, keep_output=True)
class _InvFn(torch.autograd.Function):
    """x = A⁻¹ y (the density direction)."""

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        need_y, need_w = ctx.needs_input_grad[:2]
        if need_w and not torch.is_grad_enabled():  # the fused native call: u = A⁻ᵀ g and −W(x, u)
            u, grad_w = _dispatch.run_inverse_backward(x, g, weight, ctx.order)
            return (u if need_y else None), grad_w, None
        u = _call(_InvAdjFn, g, weight, ctx.order)
        return (u if need_y else None,
                -_call(_WGradFn, x, u, ctx.order, *weight.shape[2:]) if need_w else None, None)

    @staticmethod
    def jvp(ctx, y_t, w_t, _):
        return _solve_jvp(_InvFn, _tap, ctx, y_t, w_t)  # ẋ = A⁻¹ (ẏ − Ȧ x)


@_image_function(_dispatch.run_forward_adjoint)
class _FwdAdjFn(torch.autograd.Function):
    """Aᵀ g (the convolution's input-gradient)."""

    @staticmethod
    def backward(ctx, v):
        g, weight = ctx.saved_tensors
        return (_call(_ConvFn, v, weight, ctx.order) if ctx.needs_input_grad[0] else None,
                _call(_WGradFn, v, g, ctx.order, *weight.shape[2:]) if ctx.needs_input_grad[1] else None, None)

    @staticmethod
    def jvp(ctx, g_t, w_t, _):
        return _map_jvp(_FwdAdjFn, _tap_adjoint, ctx, g_t, w_t)


@_image_function(_dispatch.run_inverse_adjoint, keep_output=True)
class _InvAdjFn(torch.autograd.Function):
    """u = A⁻ᵀ g (the inverse's input-gradient)."""

    @staticmethod
    def backward(ctx, v):
        # du = −A⁻ᵀ Ȧᵀ u, so ∂/∂g = A⁻¹ v and ∂/∂w = −W(A⁻¹ v, u).
        u, weight = ctx.saved_tensors
        z = _call(_InvFn, v, weight, ctx.order)
        return (z if ctx.needs_input_grad[0] else None,
                -_call(_WGradFn, z, u, ctx.order, *weight.shape[2:]) if ctx.needs_input_grad[1] else None, None)

    @staticmethod
    def jvp(ctx, g_t, w_t, _):
        return _solve_jvp(_InvAdjFn, _tap_adjoint, ctx, g_t, w_t)  # u̇ = A⁻ᵀ (ġ − Ȧᵀ u)


class _WGradFn(torch.autograd.Function):
    """W(x, g) = Σ g · pad(x) per tap, masked (bilinear in x and g)."""

    @staticmethod
    def forward(x, g, order, kernel_h, kernel_w):
        return _dispatch.run_weight_grad(x, g, order, kernel_h, kernel_w)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, g, ctx.order, kh, kw = inputs
        ctx.kernel = (kh, kw)
        ctx.save_for_backward(x, g)
        if _forward_mode_active():
            ctx.save_for_forward(x, g)

    @staticmethod
    def forward_and_setup(ctx, *inputs):
        out = _WGradFn.forward(*inputs)
        _WGradFn.setup_context(ctx, inputs, out)
        return out

    @staticmethod
    def backward(ctx, v):
        # ⟨V, W(x, g)⟩ = ⟨g, forward(x, V) − x⟩
        x, g = ctx.saved_tensors
        return (_tap_adjoint(g, v, ctx.order) if ctx.needs_input_grad[0] else None,
                _tap(x, v, ctx.order) if ctx.needs_input_grad[1] else None, None, None, None)

    @staticmethod
    def jvp(ctx, x_t, g_t, *_):
        x, g = ctx.saved_tensors
        kernel = ctx.kernel
        return _add(_call(_WGradFn, x_t, g, ctx.order, *kernel) if x_t is not None else None,
                    _call(_WGradFn, x, g_t, ctx.order, *kernel) if g_t is not None else None)

    @staticmethod
    def vmap(info, in_dims, x, g, order, kernel_h, kernel_w):
        return _loop_vmap(_WGradFn, info, in_dims, x, g, order, kernel_h, kernel_w)


def _plain_variant(fn):
    """The same op as an old-style Function (forward takes ctx): torch binds the arguments of
    setup_context-style Functions with inspect.signature on every call, which costs more host
    time than a small problem's kernels. Used when no torch.func transform is active."""
    return type(fn.__name__ + "Eager", (torch.autograd.Function,), {
        "forward": staticmethod(fn.forward_and_setup),
        "backward": staticmethod(fn.backward),
        "jvp": staticmethod(fn.jvp),
    })


_EAGER_VARIANT = {fn: _plain_variant(fn) for fn in (_ConvFn, _InvFn, _FwdAdjFn, _InvAdjFn, _WGradFn)}
_peek_functorch = torch._C._functorch.peek_interpreter_stack


def _forward_mode_active() -> bool:
    """Whether tangents may flow: a torch.func transform or a forward-AD level is active."""
    return _peek_functorch() is not None or _forward_ad._current_level >= 0


def _call(fn, *args):
    """``fn.apply``, through its old-style twin unless a torch.func transform is active; with
    nothing to differentiate (no gradient wanted, no tangents), the bare forward."""
    if _peek_functorch() is None:
        # args[0] and args[1] are the tensors of every Function here.
        if _forward_ad._current_level < 0 and not (
                torch.is_grad_enabled() and (args[0].requires_grad or args[1].requires_grad)):
            return fn.forward(*args)
        fn = _EAGER_VARIANT[fn]
    return fn.apply(*args)


def _same_kind(names, a, b) -> None:
    """TypeError unless both arguments are numpy arrays (one numpy array and one tensor would
    otherwise be reported as a wrong dtype)."""
    if isinstance(a, np.ndarray) != isinstance(b, np.ndarray):
        kinds = ", ".join(f"{n} is a {type(t).__module__.split('.')[0]}.{type(t).__name__}" for n, t in zip(names, (a, b)))
        raise TypeError(f"{names[0]} and {names[1]} must both be torch tensors or both numpy arrays; {kinds}")


def _apply(op, fast, numpy_fn, names, inp, weight, order):
    order = normalise_order(order)
    if _plain_pair(inp, weight) and _untraced():  # then _prepare would return them as they are
        if inp.is_cuda:  # the CPU backend checks the shapes itself, naming the same arguments
            _dispatch.check_shapes(names[0], inp, weight, order)
        return _call(fast, inp, weight, order)
    if isinstance(inp, np.ndarray) or isinstance(weight, np.ndarray):
        _same_kind(names, inp, weight)
        return numpy_fn(inp, weight, order)
    inp, weight, out_dtype = _prepare(names, inp, weight)
    if _fast_path_ok(inp, weight):
        if inp.is_cuda:  # the CPU backend checks the shapes itself, naming the same arguments
            _dispatch.check_shapes(names[0], inp, weight, order)
        out = _call(fast, inp, weight, order)
    else:
        out = op(inp, weight, order)
    return out if out.dtype == out_dtype else out.to(out_dtype)


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
    return _apply(_forward, _ConvFn, _numpy_api.conv2d, ("x", "weight"), x, weight, order)


def inv_conv2d(y, weight, order: str = "TL"):
    """Density direction: ``x = A⁻¹ y``, the exact inverse of :func:`conv2d`.

    Computed by wavefront substitution; its backward is the parallel reverse wavefront
    ``A⁻ᵀ g`` plus a convolution weight-gradient. ``log|det A| = 0`` exactly. Arguments as in
    :func:`conv2d`.
    """
    return _apply(_inverse, _InvFn, _numpy_api.inv_conv2d, ("y", "weight"), y, weight, order)


def conv2d_transpose(grad, weight, order: str = "TL"):
    """``Aᵀ grad``: the input-gradient of :func:`conv2d` (a transposed convolution)."""
    return _apply(_forward_adjoint, _FwdAdjFn, _numpy_api.conv2d_transpose, ("grad", "weight"), grad, weight, order)


def inv_conv2d_transpose(grad, weight, order: str = "TL"):
    """``A⁻ᵀ grad``: the input-gradient of :func:`inv_conv2d` (a reverse wavefront)."""
    return _apply(_inverse_adjoint, _InvAdjFn, _numpy_api.inv_conv2d_transpose, ("grad", "weight"), grad, weight, order)


def conv2d_weight_grad(x, grad, kernel_size, order: str = "TL"):
    """``Σ grad · pad(x)`` per tap: the weight-gradient of :func:`conv2d`, zero at masked entries.

    The weight-gradient of :func:`inv_conv2d` is ``-conv2d_weight_grad(x, A⁻ᵀ g)`` with
    ``x = inv_conv2d(y)``.
    """
    if isinstance(x, np.ndarray) or isinstance(grad, np.ndarray):
        _same_kind(("x", "grad"), x, grad)
        return _numpy_api.conv2d_weight_grad(x, grad, kernel_size, order)
    order = normalise_order(order)
    kh, kw = kernel_pair(kernel_size)
    x, grad, out_dtype = _prepare(("x", "grad"), x, grad)
    if _fast_path_ok(x, grad):
        _check_weight_grad_args(x, grad, order, kh, kw)
        out = _call(_WGradFn, x, grad, order, kh, kw)
    else:
        out = _weight_grad(x, grad, order, kh, kw)
    return out if out.dtype == out_dtype else out.to(out_dtype)


def _chain_layers(weights, orders):
    """A chain's weights and normalised orders, checked to be non-empty and of one length."""
    weights, orders = list(weights), [normalise_order(o) for o in orders]
    if len(weights) != len(orders) or not weights:
        raise ValueError(f"weights and orders must be non-empty and of one length; got {len(weights)} and {len(orders)}")
    return weights, orders


def conv2d_chain(x, weights, orders):
    """``conv2d`` applied for each (weight, order) pair in turn, ``weights[0]`` first: the
    sampling direction of a stack of masked convolutions (an Inverse-Flow unit runs BR, BL, TR,
    TL). On CUDA, without autograd, up to four layers run as one kernel that keeps each sample's
    image in shared memory (when it fits); otherwise, layer by layer. Same values as the
    layer-by-layer calls up to float rounding (the sums are formed in the same order)."""
    weights, orders = _chain_layers(weights, orders)
    if isinstance(x, torch.Tensor):
        prepared = [_prepare(("x", f"weights[{i}]"), x, w) for i, w in enumerate(weights)]
        inp, out_dtype = prepared[0][0], prepared[0][2]
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(w.requires_grad for w in weights))
        # The kernel reads every weight with the first one's kernel size.
        one_shape = all(w.shape == prepared[0][1].shape for _, w, _ in prepared)
        if (inp.is_cuda and 1 < len(weights) <= _CHAIN_MAX_LAYERS and one_shape and not needs_grad
                and _fast_path_ok(inp, prepared[0][1])):
            for (_, w, _), order in zip(prepared, orders):
                _dispatch.check_shapes("x", inp, w, order)
            out = _dispatch.run_conv_chain(inp, [w for _, w, _ in prepared], orders)
            if out is not None:
                return out if out.dtype == out_dtype else out.to(out_dtype)
    for w, order in zip(weights, orders):
        x = conv2d(x, w, order)
    return x


def conv2d_chain_fused(x, weights, orders, *, coupling=None, actnorm=None):
    """:func:`conv2d_chain` with what surrounds an Inverse-Flow unit in a step of flow, in the
    same one kernel: the whole sampling direction of a Glow-style step (affine coupling,
    unit, ActNorm), or None where that kernel does not apply (not CUDA, a gradient wanted,
    tracing, an image too large for shared memory): the caller then runs its layers.

    * ``coupling=(h, offset, log_offset)``: first, x's last n = ``h.shape[1] // 2`` channels
      become ``x_b · exp(log_offset − logsigmoid(r + offset)) − s`` with ``s = h[:, 0::2]``,
      ``r = h[:, 1::2]`` (the inverse of an affine coupling whose scale is
      ``sigmoid(r + offset) / sigmoid(offset)``, ``log_offset = logsigmoid(offset)``; h in any
      memory format);
    * ``actnorm=(log_scale, bias)``, each of shape (C,): last, ``v · exp(−log_scale) − bias``
      per channel (the inverse of ``(x + bias) · exp(log_scale)``).

    Each elementwise step is rounded on its own, in that order, as the same torch ops would.
    """
    weights, orders = _chain_layers(weights, orders)
    if len(weights) > _CHAIN_MAX_LAYERS:
        raise ValueError(f"weights and orders: conv2d_chain_fused takes at most {_CHAIN_MAX_LAYERS} layers; "
                         f"got {len(weights)}")
    _dispatch.check_tensor("x", x)
    _check_chain(x, weights, orders, input_name="x")
    c = x.shape[1]
    extra = []
    if coupling is not None:
        h = coupling[0]
        _dispatch.check_tensor("coupling[0] (h)", h)
        _dispatch.check_match(("x", "coupling[0] (h)"), x, h)
        n = h.shape[1] // 2 if h.dim() == 4 else 0
        if h.dim() != 4 or h.shape[1] % 2 or not 1 <= n < c or h.shape[0] != x.shape[0] or h.shape[2:] != x.shape[2:]:
            raise ValueError(f"coupling[0] (h) must have shape (B, 2n, H, W) with B, H, W those of x "
                             f"{tuple(x.shape)} and 1 <= n < {c}; got {tuple(h.shape)}")
        extra.append(h)
    if actnorm is not None:
        for name, t in zip(("actnorm[0] (log_scale)", "actnorm[1] (bias)"), actnorm):
            _dispatch.check_tensor(name, t)
            _dispatch.check_match(("x", name), x, t)
            if tuple(t.shape) != (c,):
                raise ValueError(f"{name} must have shape ({c},); got {tuple(t.shape)}")
        extra.extend(actnorm)
    if not fused_chain_applies(x, *weights, *extra):
        return None
    return _dispatch.run_conv_chain(x, weights, orders, coupling, actnorm)


def fused_chain_applies(*tensors) -> bool:
    """Whether :func:`conv2d_chain_fused` can run its kernel on these tensors (CUDA float32 or
    float64, nothing traced, no gradient wanted); it still returns None for an image too large
    for shared memory."""
    x = tensors[0]
    return (x.is_cuda and x.dtype in _dispatch.FLOAT_DTYPES
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
            and all(_fast_path_ok(t, x) for t in tensors))


# ---------------------------------------------------------------------------------------------
# A chain of inverses (an Inverse-Flow unit's density direction, TL → TR → BL → BR): one op, so
# that on CUDA each solve after the first prepares its coefficients while the one before still
# runs (programmatic dependent launch), and the backward is the adjoint chain (likewise) plus one
# weight-gradient launch and one reduction for all four weights, where per-layer ops take 16
# launches, each waiting for the one before. Bitwise the per-layer values. The chain's outputs
# other than the last are returned for the backward only (not differentiable).
# ---------------------------------------------------------------------------------------------


def _check_chain(inp, weights, orders, input_name: str = "y") -> None:
    """A chain kernel's arguments: 1 to _CHAIN_MAX_LAYERS layers, one order each, weights of one
    shape (the kernels read every weight with the first one's kernel size) on ``inp``'s dtype
    and device, each valid for ``inp``."""
    if len(weights) != len(orders) or not 1 <= len(weights) <= _CHAIN_MAX_LAYERS:
        raise ValueError(f"weights and orders: the chain takes 1 to {_CHAIN_MAX_LAYERS} layers, one order each; "
                         f"got {len(weights)} weights and {len(orders)} orders")
    for i, (w, order) in enumerate(zip(weights, orders)):
        _dispatch.check_match((input_name, f"weights[{i}]"), inp, w)
        if w.shape != weights[0].shape:
            raise ValueError(f"weights must all have one shape; weights[0] is {tuple(weights[0].shape)}, "
                             f"weights[{i}] {tuple(w.shape)}")
        _dispatch.check_shapes(input_name, inp, w, order)


@torch.library.custom_op(f"{_LIB}::inverse_chain", mutates_args=())
def _inverse_chain_op(y: torch.Tensor, weights: list[torch.Tensor], orders: str
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_last, inter): x_l = A_l⁻¹ x_{l−1} (x_{−1} = y), inter the stack of x_0 … x_{L−2};
    ``orders`` comma-separated (a schema takes no list of strings)."""
    orders = orders.split(",")
    _check_chain(y, weights, orders)
    return _dispatch.run_inverse_chain(y, weights, orders)


@_inverse_chain_op.register_fake
def _(y, weights, orders):
    _check_chain(y, weights, orders.split(","))
    return torch.empty_like(y, memory_format=torch.contiguous_format), y.new_empty((len(weights) - 1, *y.shape))


@torch.library.custom_op(f"{_LIB}::inverse_chain_backward", mutates_args=())
def _inverse_chain_backward_op(inter: torch.Tensor, x: torch.Tensor, grad: torch.Tensor,
                               weights: list[torch.Tensor], orders: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂/∂y, the (L, C, C, KH, KW) stack of the weights' gradients) of inverse_chain."""
    orders = orders.split(",")
    _check_chain(grad, weights, orders)
    return _dispatch.run_inverse_chain_backward([*inter.unbind(0), x], grad, weights, orders)


@_inverse_chain_backward_op.register_fake
def _(inter, x, grad, weights, orders):
    _check_chain(grad, weights, orders.split(","))
    return (torch.empty_like(grad, memory_format=torch.contiguous_format),
            grad.new_empty((len(weights), *weights[0].shape)))


def _chain_double_backward(y, weights, orders, g):
    """The chain's vector-Jacobian product as a differentiable graph (under ``create_graph``):
    the chain recomputed layer by layer with differentiable ops, then differentiated."""
    with torch.enable_grad():
        x = y
        for w, order in zip(weights, orders):
            x = inv_conv2d(x, w, order)
        inputs = [t for t in (y, *weights) if t.requires_grad]
        grads = iter(torch.autograd.grad(x, inputs, g, create_graph=True, allow_unused=True))
    return [next(grads) if t.requires_grad else None for t in (y, *weights)]


def _chain_setup(ctx, inputs, output):
    y, weights, ctx.orders = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(y, output[1], output[0], *weights)


def _chain_backward(ctx, g, _):
    y, inter, x, *weights = ctx.saved_tensors
    if torch.is_grad_enabled():
        grad_y, *grad_ws = _chain_double_backward(y, weights, ctx.orders.split(","), g)
        return grad_y, grad_ws, None
    grad_y, grad_w = _inverse_chain_backward_op(inter, x, g, weights, ctx.orders)
    return grad_y, list(grad_w.unbind(0)), None


_inverse_chain_op.register_autograd(_chain_backward, setup_context=_chain_setup)
for _device in ("cpu", "cuda"):
    for _name in ("inverse_chain", "inverse_chain_backward"):
        torch.library.register_autocast(f"{_LIB}::{_name}", _device, torch.float32)


class _InvChainFn(torch.autograd.Function):
    """The eager chain (plain tensors, nothing traced, no torch.func transform or forward AD)."""

    @staticmethod
    def forward(ctx, y, orders, *weights):
        x, inter = _dispatch.run_inverse_chain(y, weights, orders)
        ctx.orders = orders
        ctx.save_for_backward(y, inter, x, *weights)
        return x

    @staticmethod
    def backward(ctx, g):
        y, inter, x, *weights = ctx.saved_tensors
        if torch.is_grad_enabled():
            grad_y, *grad_ws = _chain_double_backward(y, weights, ctx.orders, g)
            return grad_y, None, *grad_ws
        grad_y, grad_w = _dispatch.run_inverse_chain_backward([*inter.unbind(0), x], g, weights, ctx.orders)
        return grad_y, None, *grad_w.unbind(0)


def inv_conv2d_chain(y, weights, orders):
    """``inv_conv2d`` applied for each (weight, order) pair in turn, ``weights[0]`` first: the
    density direction of a stack of masked convolutions (an Inverse-Flow unit runs TL, TR, BL,
    BR). The same values as the layer-by-layer calls, bit for bit; on CUDA, for float32, 3 × 3
    kernels and C = 12 or 24 (images that fit one block's shared memory), each layer's solve
    starts while the one before still runs, and the backward computes the layers'
    weight-gradients in one launch (longer chains in pieces of four).
    Differentiable like :func:`inv_conv2d` (under torch.func transforms and forward-mode AD, by
    the per-layer ops)."""
    weights, orders = _chain_layers(weights, orders)
    # (torch.compile traces through the check below as if a transform were active: it takes
    # the custom op instead.)
    if isinstance(y, np.ndarray) or (not torch.compiler.is_compiling() and _forward_mode_active()):
        for w, order in zip(weights, orders):
            y = inv_conv2d(y, w, order)
        return y
    n = _CHAIN_MAX_LAYERS
    if len(weights) > n:
        return inv_conv2d_chain(inv_conv2d_chain(y, weights[:n], orders[:n]), weights[n:], orders[n:])
    prepared = [_prepare(("y", f"weights[{i}]"), y, w) for i, w in enumerate(weights)]
    inp, out_dtype = prepared[0][0], prepared[0][2]
    weights = [w for _, w, _ in prepared]
    if all(_fast_path_ok(inp, w) for w in weights):
        _check_chain(inp, weights, orders)
        needs_grad = torch.is_grad_enabled() and (inp.requires_grad or any(w.requires_grad for w in weights))
        out = (_InvChainFn.apply(inp, orders, *weights) if needs_grad
               else _dispatch.run_inverse_chain(inp, weights, orders)[0])
    else:
        out = _inverse_chain_op(inp, weights, ",".join(orders))[0]
    return out if out.dtype == out_dtype else out.to(out_dtype)
