"""Bad input raises a clear ValueError/TypeError naming the argument, never a crash or panic."""

import re

import numpy as np
import pytest
import torch

import inv_conv


def good(device="cpu", dtype=torch.float32):
    return (torch.randn(2, 3, 5, 5, dtype=dtype, device=device),
            torch.randn(3, 3, 3, 3, dtype=dtype, device=device))


FUNCS = [inv_conv.conv2d, inv_conv.inv_conv2d, inv_conv.conv2d_transpose, inv_conv.inv_conv2d_transpose]


@pytest.mark.parametrize("fn", FUNCS)
def test_wrong_ndim(device, fn):
    x, w = good(device)
    with pytest.raises(ValueError, match=r"must be a 4-D tensor .*got 3-D with shape \(3, 5, 5\)"):
        fn(x[0], w)
    with pytest.raises(ValueError, match=r"weight must be a 4-D tensor"):
        fn(x, w[..., 0])


@pytest.mark.parametrize("fn", FUNCS)
def test_channel_mismatch(device, fn):
    x, _ = good(device)
    w = torch.randn(4, 4, 3, 3, device=device)
    with pytest.raises(ValueError, match=r"has 3 channels but weight expects 4"):
        fn(x, w)


def test_non_square_weight_channels(device):
    x, _ = good(device)
    with pytest.raises(ValueError, match=r"weight must be square in channels .*got 3 output and 2 input"):
        inv_conv.inv_conv2d(x, torch.randn(3, 2, 3, 3, device=device))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.complex64, torch.bool])
def test_bad_dtypes(device, dtype):
    x, w = good(device)
    with pytest.raises(TypeError, match=r"y must be a floating-point tensor .*got dtype"):
        inv_conv.inv_conv2d(x.to(dtype), w)
    with pytest.raises(TypeError, match=r"weight must be a floating-point tensor"):
        inv_conv.conv2d(x, w.to(dtype))


@pytest.mark.parametrize("fn", FUNCS)
def test_sparse_tensors_are_type_errors_naming_the_argument(fn):
    x, w = good()
    name = {inv_conv.conv2d: "x", inv_conv.inv_conv2d: "y"}.get(fn, "grad")
    with pytest.raises(TypeError, match=rf"{name} must be a dense \(strided\) tensor; got layout torch.sparse_coo"):
        fn(x.to_sparse(), w)
    with pytest.raises(TypeError, match=r"weight must be a dense \(strided\) tensor; got layout torch.sparse_csr"):
        fn(x, w.reshape(9, 9).to_sparse_csr())
    with pytest.raises(TypeError, match=r"x must be a dense \(strided\) tensor"):
        inv_conv.conv2d_weight_grad(x.to_sparse(), x, 3)


def test_mixed_dtypes(device):
    x, w = good(device)
    with pytest.raises(TypeError, match=r"y and weight must have the same dtype; got torch.float32 and torch.float64"):
        inv_conv.inv_conv2d(x, w.double())


def test_unknown_order(device):
    x, w = good(device)
    with pytest.raises(ValueError, match=r"order must be one of 'TL', 'TR', 'BL', 'BR'; got 'XY'"):
        inv_conv.conv2d(x, w, "XY")
    with pytest.raises(ValueError, match="order"):
        inv_conv.InvConv2d(3, order="up")


@pytest.mark.parametrize("shape", [(0, 3, 5, 5), (2, 3, 0, 5), (2, 3, 5, 0)])
def test_zero_sized_dimensions(device, shape):
    _, w = good(device)
    with pytest.raises(ValueError, match=r"must have every dimension >= 1"):
        inv_conv.inv_conv2d(torch.randn(shape, device=device), w)


def test_zero_sized_kernel(device):
    x, _ = good(device)
    with pytest.raises(ValueError, match=r"weight must have every dimension >= 1"):
        inv_conv.conv2d(x, torch.randn(3, 3, 0, 3, device=device))


def test_not_a_tensor():
    _, w = good()
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor or numpy.ndarray; got list"):
        inv_conv.conv2d([[1.0]], w)


def test_numpy_bad_input():
    x, w = good()
    with pytest.raises(TypeError, match=r"x must be a numpy array of dtype float32 or float64; got dtype int64"):
        inv_conv.conv2d(x.numpy().astype(np.int64), w.numpy())
    with pytest.raises(TypeError, match=r"same dtype"):
        inv_conv.conv2d(x.numpy(), w.numpy().astype(np.float64))
    with pytest.raises(ValueError, match=r"has 3 channels but weight expects 2"):
        inv_conv.inv_conv2d(x.numpy(), np.zeros((2, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"out must have shape"):
        inv_conv._native.forward(x.numpy(), w.numpy(), "TL", np.empty((1, 3, 5, 5), np.float32))
    with pytest.raises(TypeError, match=r"out must be a numpy array"):
        inv_conv._native.forward(x.numpy(), w.numpy(), "TL", np.empty((2, 3, 5, 5), np.float64))


def test_native_out_and_size_errors_map_to_value_error():
    # Every error of the extension goes through one mapping (src/python/error.rs): bad `out`
    # arrays, a zero kernel size and a problem too large for this machine are ValueErrors.
    x, w = (t.numpy() for t in good())
    readonly = np.empty_like(x)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match=r"out is not writeable"):
        inv_conv._native.forward(x, w, "TL", readonly)
    fortran = np.asfortranarray(np.empty_like(x))
    with pytest.raises(ValueError, match=r"out must be C-contiguous"):
        inv_conv._native.inverse(x, w, "TL", fortran)
    with pytest.raises(ValueError, match=r"kernel_size must be >= 1 in both dimensions; got \(0, 3\)"):
        inv_conv._native.weight_grad(x, x, "TL", (0, 3))
    with pytest.raises(ValueError, match=r"grad must have shape \(2, 3, 5, 5\) like the input; got \(2, 3, 4, 5\)"):
        inv_conv._native.inverse_backward(x, x[:, :, :-1], w, "TL")
    with pytest.raises(TypeError, match=r"grad and weight must have the same dtype; got float64 and float32"):
        inv_conv._native.inverse_backward(x, x.astype(np.float64), w, "TL")
    with pytest.raises(ValueError, match=r"u is not writeable"):
        inv_conv._native.inverse_backward(x, x, w, "TL", readonly, np.empty_like(w))
    with pytest.raises(ValueError, match=r"grad_w must have shape \[3, 3, 3, 3\]; got \[3, 3, 3, 2\]"):
        inv_conv._native.inverse_backward(x, x, w, "TL", np.empty_like(x), w[..., :2].copy())
    huge = [2**62, 3, 2**62, 5]
    with pytest.raises(ValueError, match=r"y shape \(4611686018427387904, 3, .*more elements than this machine can address"):
        inv_conv._native.check_problem("y", huge, [3, 3, 3, 3])


def test_layer_bad_arguments():
    with pytest.raises(ValueError, match="channels"):
        inv_conv.InvConv2d(0)
    with pytest.raises(ValueError, match="direction"):
        inv_conv.InvConv2d(3, direction="sideways")
    with pytest.raises(ValueError, match="kernel_size"):
        inv_conv.InvConv2d(3, kernel_size=0)


def test_weight_grad_bad_shapes(device):
    x, _ = good(device)
    with pytest.raises(ValueError, match=r"grad must have the shape of x"):
        inv_conv.conv2d_weight_grad(x, x[:1], 3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error path")
def test_cuda_errors_are_clear_without_gpu(monkeypatch):
    from inv_conv import _cuda, _dispatch

    assert inv_conv.cuda_available() is False and issubclass(inv_conv.CudaError, RuntimeError)
    reason = _cuda.unavailable_reason()
    assert isinstance(reason, str) and reason
    # What a CUDA tensor would reach, and the CUDA module's own entry points: a CudaError (a
    # RuntimeError) that says why, never a crash, a PanicException or a silent success.
    monkeypatch.setattr(_dispatch, "_cuda_ready", None)
    with pytest.raises(inv_conv.CudaError, match=r"CUDA tensors given but the CUDA backend is unavailable: .+"):
        _dispatch._cuda_module()
    x, w = good()
    for call in (lambda: _cuda.forward(x, w, "TL"), lambda: _cuda.weight_grad(x, x, "TL", 3, 3),
                 lambda: _cuda.device_info(0)):
        with pytest.raises(inv_conv.CudaError, match=rf"the inv_conv CUDA backend is unavailable: {re.escape(reason)}"):
            call()
    # The extension itself, where it finds no usable driver or GPU (before any launch).
    native_reason = getattr(inv_conv._native, "cuda_unavailable_reason", lambda: None)()
    if native_reason is not None:
        with pytest.raises(inv_conv.CudaError, match=r"\w"):
            inv_conv._native.cuda_device_info(0)


@pytest.mark.parametrize("kernel_size", [(10**5, 10**5), (10**9, 10**9), (10**10, 10**10)])
def test_absurd_kernel_sizes_raise_python_errors(kernel_size):
    x = np.zeros((1, 2, 3, 3), np.float32)
    # A PanicException (a BaseException) would escape pytest.raises and fail the test.
    with pytest.raises((ValueError, MemoryError)):
        inv_conv.conv2d_weight_grad(x, x, kernel_size)
