"""CUDA backend of inv_conv: torch-side glue for the NVRTC-compiled kernels in ``_native``.

The functions take already-validated, contiguous CUDA tensors of one dtype (float32 or
float64) on one device. They allocate outputs and scratch with torch (so CUDA-graph capture
and torch's caching allocator just work) and enqueue the kernels on
``torch.cuda.current_stream(device)``; nothing here synchronizes.

NVRTC: the Rust side loads it with ``dlopen``. We point it at the library that torch's own pip
dependencies bring (``site-packages/nvidia/*/lib/libnvrtc.so.*``) before the first use, and it
falls back to the system's ``libnvrtc.so`` (a CUDA toolkit) or ``$INV_CONV_NVRTC``.
"""

from __future__ import annotations

import glob
import os
import re
import threading
from typing import Optional

import torch

from . import _native
from ._dispatch import DTYPE_NAMES

__all__ = [
    "is_available",
    "unavailable_reason",
    "device_info",
    "find_nvrtc",
    "forward",
    "inverse",
    "forward_adjoint",
    "inverse_adjoint",
    "weight_grad",
    "inverse_backward",
    "conv_chain",
    "inverse_chain",
    "inverse_chain_backward",
]

_lock = threading.Lock()
_checked = False
_reason: Optional[str] = None
#: True once the backend was found usable: the per-call check is then one global read.
_ready = False


def _nvrtc_candidates() -> list[str]:
    """libnvrtc shared libraries shipped inside Python packages (torch's CUDA wheels)."""
    roots: list[str] = []
    try:
        import nvidia  # namespace package of the nvidia-* wheels

        roots.extend(list(nvidia.__path__))
    except ImportError:
        pass
    found: list[str] = []
    for root in roots:
        found += glob.glob(os.path.join(root, "*", "lib", "libnvrtc.so*"))
        found += glob.glob(os.path.join(root, "*", "lib", "libnvrtc-*.so*"))
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    found += glob.glob(os.path.join(torch_lib, "libnvrtc*.so*"))
    return [p for p in found if "builtins" not in os.path.basename(p) and "alt" not in os.path.basename(p)]


def find_nvrtc() -> Optional[str]:
    """Path of the NVRTC library that matches torch's CUDA major version, if any is installed
    as a Python package (``$INV_CONV_NVRTC`` wins)."""
    env = os.environ.get("INV_CONV_NVRTC")
    if env:
        return env
    candidates = _nvrtc_candidates()
    if not candidates:
        return None
    major = (torch.version.cuda or "").split(".")[0]

    def rank(path: str) -> tuple[int, str]:
        m = re.search(r"\.so\.(\d+)", os.path.basename(path))
        return (0 if (m and m.group(1) == major) else 1, path)

    return sorted(candidates, key=rank)[0]


def _check() -> Optional[str]:
    if not hasattr(_native, "cuda_forward"):
        return "inv_conv was built without the `cuda` feature"
    if not torch.cuda.is_available():
        return "torch sees no CUDA GPU (torch.cuda.is_available() is False)"
    _native.cuda_set_nvrtc_path(find_nvrtc())
    return _native.cuda_unavailable_reason()


def unavailable_reason() -> Optional[str]:
    """None when the CUDA backend can run; otherwise what is missing (driver, GPU, NVRTC)."""
    global _checked, _reason, _ready
    with _lock:
        if not _checked:
            _reason = _check()
            _checked = True
            _ready = _reason is None
        return _reason


def is_available() -> bool:
    return unavailable_reason() is None


def _require() -> None:
    if _ready:
        return
    reason = unavailable_reason()
    if reason is not None:
        raise _native.CudaError(f"the inv_conv CUDA backend is unavailable: {reason}")


def device_info(device: int | torch.device | None = None) -> dict:
    """Compiles the kernels for ``device`` if not done yet and describes them (arch, SM count,
    NVRTC used, first-use compile and load milliseconds)."""
    _require()
    if device is None:
        index = torch.cuda.current_device()
    else:
        index = torch.device("cuda", device).index if isinstance(device, int) else torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
    return dict(_native.cuda_device_info(index))


# Per-call host overhead matters at small sizes (a training step at S1 is ~0.35 ms of GPU time
# over six kernels), so the hot path avoids torch.device objects and Stream wrappers: the raw
# current stream comes from the same C entry point that torch.compile's generated code uses.
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)
_prep_lens: dict = {}
_scratch_lens: dict = {}


def _stream(index: int) -> int:
    if _raw_stream is not None:
        return _raw_stream(index)
    return torch.cuda.current_stream(index).cuda_stream


def _prep_len(c: int, kh: int, kw: int) -> int:
    key = (c, kh, kw)
    n = _prep_lens.get(key)
    if n is None:
        n = _prep_lens[key] = int(_native.cuda_prep_len(c, kh, kw))
    return n


def _scratch_len(index: int, dtype: str, shape: tuple, kernel: tuple, order: str) -> int:
    """cuda_weight_grad_scratch_len, memoised (the plan depends on the device, the problem and
    INV_CONV_CUDA_GENERIC, so all of them are in the key)."""
    key = (index, dtype, shape, kernel, order, os.environ.get("INV_CONV_CUDA_GENERIC"))
    n = _scratch_lens.get(key)
    if n is None:
        if len(_scratch_lens) > 4096:
            _scratch_lens.clear()
        n = _scratch_lens[key] = max(int(_native.cuda_weight_grad_scratch_len(index, dtype, shape, kernel, order)), 1)
    return n


def _common(inp: torch.Tensor, weight: torch.Tensor) -> tuple[int, int, str]:
    """(device index, raw current stream, dtype name) after checking the pair."""
    _require()
    index = inp.get_device()
    if index != weight.get_device() or index < 0:
        raise ValueError(f"input and weight must be on the same device; got {inp.device} and {weight.device}")
    name = DTYPE_NAMES.get(inp.dtype)
    if inp.dtype != weight.dtype or name is None:
        raise TypeError(f"CUDA ops take float32 or float64 tensors of one dtype; got {inp.dtype} and {weight.dtype}")
    return index, _stream(index), name


def _image_op(native, inp: torch.Tensor, weight: torch.Tensor, order: str) -> torch.Tensor:
    index, stream, name = _common(inp, weight)
    inp = inp.contiguous()
    weight = weight.contiguous()
    b, c, h, w = inp.shape
    kh, kw = weight.shape[2], weight.shape[3]
    out = torch.empty_like(inp, memory_format=torch.contiguous_format)
    n = _prep_len(c, kh, kw)
    prep = torch.empty(n, dtype=inp.dtype, device=inp.device)
    native(
        index, stream, name, (b, c, h, w), (kh, kw), order,
        inp.data_ptr(), weight.data_ptr(), out.data_ptr(), prep.data_ptr(), n,
    )
    return out


def forward(x: torch.Tensor, weight: torch.Tensor, order: str) -> torch.Tensor:
    """y = conv2d(pad(x, PAD[order]), ŵ)."""
    return _image_op(_native.cuda_forward, x, weight, order)


def inverse(y: torch.Tensor, weight: torch.Tensor, order: str) -> torch.Tensor:
    """x = A⁻¹ y (wavefront substitution)."""
    return _image_op(_native.cuda_inverse, y, weight, order)


def forward_adjoint(grad: torch.Tensor, weight: torch.Tensor, order: str) -> torch.Tensor:
    """Aᵀ grad (the forward op's input-gradient)."""
    return _image_op(_native.cuda_forward_adjoint, grad, weight, order)


def inverse_adjoint(grad: torch.Tensor, weight: torch.Tensor, order: str) -> torch.Tensor:
    """A⁻ᵀ grad (the inverse's input-gradient)."""
    return _image_op(_native.cuda_inverse_adjoint, grad, weight, order)


def weight_grad(x: torch.Tensor, grad: torch.Tensor, order: str, kernel_h: int, kernel_w: int) -> torch.Tensor:
    """Σ_{b,h,w} grad[b,c,h,w]·pad(x)[b,c',h+i,w+j] as a (C, C, KH, KW) tensor, zero at the
    anchor's masked entries."""
    index, stream, name = _common(x, grad)
    x = x.contiguous()
    grad = grad.contiguous()
    b, c, h, w = x.shape
    shape, kernel = (b, c, h, w), (int(kernel_h), int(kernel_w))
    out = torch.empty((c, c, kernel[0], kernel[1]), dtype=x.dtype, device=x.device)
    n = _scratch_len(index, name, shape, kernel, order)
    scratch = torch.empty(n, dtype=x.dtype, device=x.device)
    _native.cuda_weight_grad(
        index, stream, name, shape, kernel, order,
        x.data_ptr(), grad.data_ptr(), out.data_ptr(), scratch.data_ptr(), n,
    )
    return out


def inverse_backward(
    x: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor, order: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The backward of x = A⁻¹ y in one native call: (u, grad_w) = (A⁻ᵀ grad, −Σ u·pad(x)),
    grad_w masked. One scratch allocation holds the coefficients and the weight-gradient
    partial sums."""
    index, stream, name = _common(grad, weight)
    if x.get_device() != index or x.dtype != grad.dtype:
        raise ValueError(f"x must be on grad's device with its dtype; got {x.device}/{x.dtype} and {grad.device}/{grad.dtype}")
    x = x.contiguous()
    grad = grad.contiguous()
    weight = weight.contiguous()
    b, c, h, w = grad.shape
    shape, kernel = (b, c, h, w), (weight.shape[2], weight.shape[3])
    u = torch.empty_like(grad, memory_format=torch.contiguous_format)
    grad_w = torch.empty((c, c, kernel[0], kernel[1]), dtype=grad.dtype, device=grad.device)
    n_prep = _prep_len(c, kernel[0], kernel[1])
    n_scratch = _scratch_len(index, name, shape, kernel, order)
    offset = (n_prep + 7) // 8 * 8  # the partial sums start 64-byte aligned
    buf = torch.empty(offset + n_scratch, dtype=grad.dtype, device=grad.device)
    base = buf.data_ptr()
    _native.cuda_inverse_backward(
        index, stream, name, shape, kernel, order,
        (x.data_ptr(), grad.data_ptr(), weight.data_ptr(), u.data_ptr(), grad_w.data_ptr()),
        base, n_prep, base + offset * buf.element_size(), n_scratch,
    )
    return u, grad_w


def conv_chain(x: torch.Tensor, weights: list, orders: list, coupling=None, actnorm=None
               ) -> Optional[torch.Tensor]:
    """The masked convolutions of ``orders`` applied in sequence (``weights[0]`` first) in one
    launch, or None when a sample's image does not fit in shared memory (nothing launched).
    ``weights``: tensors of x's dtype and device, each (C, C, KH, KW). The chain's ends
    (kernels/chain.cu): ``coupling = (h, offset, log_offset)``, h of shape (B, 2·n, H, W) in
    any strides, inverts an affine coupling on x's last n channels first; ``actnorm =
    (log_scale, bias)``, each (C,), inverts an ActNorm last."""
    index, stream, name = _common(x, weights[0])
    x = x.contiguous()
    weights = [w.contiguous() for w in weights]
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    b, c, h, w = x.shape
    kernel = (weights[0].shape[2], weights[0].shape[3])
    coupling_arg = actnorm_arg = None
    if coupling is not None:
        net, offset, log_offset = coupling
        # (b, k, p) strides of h: its spatial dims must flatten to one pixel stride
        if net.stride(2) != net.stride(3) * w:
            net = net.contiguous()
        coupling_arg = (net.data_ptr(), (net.stride(0), net.stride(1), net.stride(3)), c - net.shape[1] // 2,
                        float(offset), float(log_offset))
    if actnorm is not None:
        log_scale, bias = (t.contiguous() for t in actnorm)
        actnorm_arg = (log_scale.data_ptr(), bias.data_ptr())
    launched = _native.cuda_conv_chain(
        index, stream, name, (b, c, h, w), kernel, list(orders), x.data_ptr(), [t.data_ptr() for t in weights],
        out.data_ptr(), coupling_arg, actnorm_arg,
    )
    return out if launched else None


def inverse_chain(y: torch.Tensor, weights: list, orders: list, outs: list) -> bool:
    """``outs[l] = A_l⁻¹ outs[l − 1]`` (``outs[−1]`` = y) for each layer, a one-launch solve
    each, the later ones starting while the one before runs; False, launching nothing, where
    that kernel does not apply (the caller then solves layer by layer). ``outs``: contiguous
    tensors of y's shape, dtype and device."""
    index, stream, name = _common(y, weights[0])
    y = y.contiguous()
    weights = [w.contiguous() for w in weights]
    return _native.cuda_solve_chain(
        index, stream, name, tuple(y.shape), (weights[0].shape[2], weights[0].shape[3]), list(orders),
        y.data_ptr(), [w.data_ptr() for w in weights], [o.data_ptr() for o in outs], False,
    )


def inverse_chain_backward(xs: list, grad: torch.Tensor, weights: list, orders: list
                           ) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """The backward of :func:`inverse_chain` given its outputs ``xs`` and ∂/∂xs[−1] ``grad``:
    (∂/∂y, the stacked weight-gradients (L, C, C, KH, KW)): the adjoint chain, then one
    weight-gradient launch for all layers and one reduction; None, launching nothing, where the
    one-launch solve does not apply."""
    index, stream, name = _common(grad, weights[0])
    grad = grad.contiguous()
    weights = [w.contiguous() for w in weights]
    xs = [x.contiguous() for x in xs]
    n, (b, c, h, w) = len(weights), grad.shape
    kernel = (weights[0].shape[2], weights[0].shape[3])
    us = torch.empty((n, b, c, h, w), dtype=grad.dtype, device=grad.device)
    grad_w = torch.empty((n, c, c, *kernel), dtype=grad.dtype, device=grad.device)
    n_scratch = n * _scratch_len(index, name, (b, c, h, w), kernel, orders[0])
    scratch = torch.empty(n_scratch, dtype=grad.dtype, device=grad.device)
    launched = _native.cuda_inverse_chain_backward(
        index, stream, name, (b, c, h, w), kernel, list(orders), [x.data_ptr() for x in xs], grad.data_ptr(),
        [w.data_ptr() for w in weights], [us[i].data_ptr() for i in range(n)], grad_w.data_ptr(),
        scratch.data_ptr(), n_scratch,
    )
    return (us[0], grad_w) if launched else None
