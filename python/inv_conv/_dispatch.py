"""Validation and backend routing for torch tensors.

The public functions validate dtypes and devices here (pure Python, so ``torch.compile`` can
trace them); shapes are validated by the Rust core's contract (``_native.check_problem``) inside
the custom ops and their fake implementations. The ``run_*`` functions take validated tensors
(``run_inverse_backward`` fuses the inverse's two backward ops) and route CPU tensors to the
Rust CPU backend (the raw addresses of tensors torch allocated, checked here: a numpy view per
tensor would cost more host time than a small problem's arithmetic) and CUDA tensors to
:mod:`inv_conv._cuda`.
"""

from __future__ import annotations

import torch

from . import _native

# The backends' dtypes, by the names the native bindings take.
DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64"}
FLOAT_DTYPES = tuple(DTYPE_NAMES)
#: Low-precision dtypes accepted by the public API and computed in float32.
UPCAST_DTYPES = (torch.float16, torch.bfloat16)


def check_tensor(name: str, t: object) -> None:
    """TypeError unless ``t`` is a floating-point tensor the ops can take."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray; got {type(t).__name__}")
    if t.layout is not torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor; got layout {t.layout}")
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
    """``t`` as the backends read it: C-contiguous and without a lazy negation (a view whose
    memory holds the un-negated values). Only what is needed: each torch call here costs host
    time on small problems."""
    if t.is_neg():
        t = t.resolve_neg()
    return t if t.is_contiguous() else t.detach().contiguous()


def _cpu_dtype(names: tuple[str, str], a: torch.Tensor, b: torch.Tensor) -> str:
    """The dtype name for the CPU backend's raw-address calls (``_native.cpu_*``), after checking
    what they rely on and the shapes cannot tell: both tensors on the CPU, float32 or float64,
    one dtype."""
    name = DTYPE_NAMES.get(a.dtype)
    if name is not None and b.dtype is a.dtype and a.is_cpu and b.is_cpu:
        return name
    check_match(names, a, b)
    if name is None:
        raise TypeError(f"{names[0]} must be float32 or float64 (the backend's dtypes); got {a.dtype}")
    raise ValueError(f"{names[0]} must be a CPU or CUDA tensor; got device {a.device}")


def _run_image(name: str, cpu_fn, input_name: str, inp: torch.Tensor, weight: torch.Tensor, order: str):
    inp, weight = _plain(inp), _plain(weight)
    if inp.is_cuda:
        return getattr(_cuda_module(), name)(inp, weight, order)
    dtype = _cpu_dtype((input_name, "weight"), inp, weight)
    out = torch.empty_like(inp)
    cpu_fn(dtype, inp.shape, weight.shape, order, (inp.data_ptr(), weight.data_ptr(), out.data_ptr()))
    return out


def run_forward(x: torch.Tensor, weight: torch.Tensor, order: str) -> torch.Tensor:
    return _run_image("forward", _native.cpu_forward, "x", x, weight, order)


def run_inverse(y: torch.Tensor, weight: torch.Tensor, order: str) -> torch.Tensor:
    return _run_image("inverse", _native.cpu_inverse, "y", y, weight, order)


def run_forward_adjoint(grad: torch.Tensor, weight: torch.Tensor, order: str) -> torch.Tensor:
    return _run_image("forward_adjoint", _native.cpu_forward_adjoint, "grad", grad, weight, order)


def run_inverse_adjoint(grad: torch.Tensor, weight: torch.Tensor, order: str) -> torch.Tensor:
    return _run_image("inverse_adjoint", _native.cpu_inverse_adjoint, "grad", grad, weight, order)


def run_weight_grad(x: torch.Tensor, grad: torch.Tensor, order: str, kernel_h: int, kernel_w: int) -> torch.Tensor:
    x, grad = _plain(x), _plain(grad)
    if x.is_cuda:
        return _cuda_module().weight_grad(x, grad, order, kernel_h, kernel_w)
    dtype = _cpu_dtype(("x", "grad"), x, grad)
    c = x.shape[1] if x.dim() > 1 else 0
    out = torch.empty((c, c, kernel_h, kernel_w), dtype=x.dtype)
    _native.cpu_weight_grad(
        dtype, x.shape, grad.shape, (kernel_h, kernel_w), order, (x.data_ptr(), grad.data_ptr(), out.data_ptr())
    )
    return out


def run_inverse_backward(x: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor, order: str):
    """(A⁻ᵀ grad, −Σ (A⁻ᵀ grad)·pad(x)): the inverse's input- and weight-gradient."""
    x, grad, weight = _plain(x), _plain(grad), _plain(weight)
    if grad.is_cuda:
        return _cuda_module().inverse_backward(x, grad, weight, order)
    dtype = _cpu_dtype(("grad", "weight"), grad, weight)
    if x.dtype is not weight.dtype or not x.is_cpu:
        _cpu_dtype(("x", "weight"), x, weight)  # raises
    u, grad_w = torch.empty_like(grad), torch.empty_like(weight)
    _native.cpu_inverse_backward(
        dtype, x.shape, grad.shape, weight.shape, order,
        (x.data_ptr(), grad.data_ptr(), weight.data_ptr(), u.data_ptr(), grad_w.data_ptr()),
    )
    return u, grad_w


def run_conv_chain(x: torch.Tensor, weights: list, orders: list, coupling=None, actnorm=None):
    """The fused sampling chain on CUDA, or None when it does not apply (the caller then runs
    the layers one by one). ``coupling``/``actnorm``: the chain's ends (``_cuda.conv_chain``)."""
    if not x.is_cuda:
        return None
    if coupling is not None and coupling[0].is_neg():
        coupling = (coupling[0].resolve_neg(), *coupling[1:])
    if actnorm is not None:
        actnorm = tuple(_plain(t) for t in actnorm)
    return _cuda_module().conv_chain(_plain(x), [_plain(w) for w in weights], orders, coupling, actnorm)


def run_inverse_chain(y: torch.Tensor, weights: list, orders: list):
    """``x_l = A_l⁻¹ x_{l−1}`` for each layer (``x_{−1}`` = y): ``(x_last, inter)`` with
    ``inter`` the (L − 1, B, C, H, W) stack of the others (the backward needs them). On CUDA the
    chain of one-launch solves where they apply; otherwise layer by layer, each output written
    in place (bitwise the same values either way)."""
    y = _plain(y)
    weights = [_plain(w) for w in weights]
    out = torch.empty_like(y, memory_format=torch.contiguous_format)
    inter = y.new_empty((len(weights) - 1, *y.shape))
    outs = [*inter.unbind(0), out]
    if y.is_cuda:
        cuda = _cuda_module()
        if not cuda.inverse_chain(y, weights, orders, outs):
            for w, order, dst in zip(weights, orders, outs):
                dst.copy_(cuda.inverse(y, w, order))
                y = dst
        return out, inter
    for w, order, dst in zip(weights, orders, outs):
        dtype = _cpu_dtype(("y", "weight"), y, w)
        _native.cpu_inverse(dtype, y.shape, w.shape, order, (y.data_ptr(), w.data_ptr(), dst.data_ptr()))
        y = dst
    return out, inter


def run_inverse_chain_backward(xs: list, grad: torch.Tensor, weights: list, orders: list):
    """The backward of :func:`run_inverse_chain` given its outputs ``xs`` (in layer order) and
    ∂/∂xs[−1]: ``(∂/∂y, grad_w)``, grad_w the (L, C, C, KH, KW) stack of the weights'
    gradients. On CUDA the adjoint chain, then all the weight-gradients in one launch and one
    reduction, where the one-launch solve applies; otherwise one
    :func:`run_inverse_backward` per layer, last first."""
    if grad.is_cuda:
        fused = _cuda_module().inverse_chain_backward([_plain(x) for x in xs], _plain(grad),
                                                     [_plain(w) for w in weights], orders)
        if fused is not None:
            return fused
    grads = [None] * len(weights)
    for layer in reversed(range(len(weights))):
        grad, grads[layer] = run_inverse_backward(xs[layer], grad, weights[layer], orders[layer])
    return grad, torch.stack(grads)
