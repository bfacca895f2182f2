"""Argument checks of the layers, of ``conv2d_weight_grad``'s kernel size and of the
reference-compatible functions: a TypeError/ValueError naming the argument, what was expected
and what was given — never a cryptic error, a NaN weight or a silent cast."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import inv_conv
import inv_conv_with_bp


# ------------------------------------------------------------------------ layer constructors
@pytest.mark.parametrize("cls", [inv_conv.InvConv2d, inv_conv.InvFlowUnit])
@pytest.mark.parametrize("channels, error", [(True, TypeError), (2.5, TypeError), ("3", TypeError),
                                             (0, ValueError), (-2, ValueError)])
def test_channels_must_be_a_positive_int(cls, channels, error):
    with pytest.raises(error, match=rf"channels must be a positive int; got {channels!r}"):
        cls(channels)


@pytest.mark.parametrize("cls", [inv_conv.InvConv2d, inv_conv.InvFlowUnit])
@pytest.mark.parametrize("kernel_size, error, given", [
    (2.5, TypeError, "2.5"), ((3, 3, 3), ValueError, r"\(3, 3, 3\)"), (True, TypeError, "True"),
    ("3", TypeError, "'3'"), ((3, 0), ValueError, r"\(3, 0\)"), ((2.0, 3), TypeError, r"\(2.0, 3\)"),
    (None, TypeError, "None"), ((3,), ValueError, r"\(3,\)")])
def test_kernel_size_must_be_a_positive_int_or_pair(cls, kernel_size, error, given):
    with pytest.raises(error, match=rf"kernel_size must be a positive int or a pair \(KH, KW\) of "
                                    rf"positive ints; got {given}"):
        cls(3, kernel_size)


@pytest.mark.parametrize("kernel_size, want", [(np.int64(3), (3, 3)), ([2, 3], (2, 3)),
                                               (torch.Size([1, 4]), (1, 4)), ((np.int32(2), 5), (2, 5))])
def test_kernel_size_accepts_integer_likes(kernel_size, want):
    assert inv_conv.InvConv2d(2, kernel_size).weight.shape == (2, 2, *want)


@pytest.mark.parametrize("cls", [inv_conv.InvConv2d, inv_conv.InvFlowUnit])
@pytest.mark.parametrize("init_std, error", [(math.nan, ValueError), (math.inf, ValueError),
                                             (-0.1, ValueError), ("0.1", TypeError), (None, TypeError)])
def test_init_std_must_be_finite_and_non_negative(cls, init_std, error):
    with pytest.raises(error, match=rf"init_std must be a finite number >= 0; got {init_std!r}"):
        cls(3, init_std=init_std)


def test_init_std_zero_is_the_identity_map():
    layer = inv_conv.InvConv2d(3, init_std=0).double()
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    assert torch.equal(layer(x)[0], x)


@pytest.mark.parametrize("cls", [inv_conv.InvConv2d, inv_conv.InvFlowUnit])
def test_dense_reference_must_be_a_bool(cls):
    with pytest.raises(TypeError, match=r"dense_reference must be a bool; got 'yes'"):
        cls(3, dense_reference="yes")


def test_direction_is_named_for_the_unit():
    with pytest.raises(ValueError, match=r"direction must be one of \('inverse', 'conv'\); got 'up'"):
        inv_conv.InvFlowUnit(3, direction="up")


# ------------------------------------------------------------------- conv2d_weight_grad kernel
@pytest.mark.parametrize("as_numpy", [False, True])
@pytest.mark.parametrize("kernel_size, error", [(None, TypeError), (2.5, TypeError), ((3,), ValueError),
                                                (True, TypeError), ((0, 3), ValueError)])
def test_weight_grad_kernel_size(as_numpy, kernel_size, error):
    x = torch.randn(2, 3, 5, 5)
    if as_numpy:
        x = x.numpy()
    with pytest.raises(error, match=r"kernel_size must be a positive int or a pair"):
        inv_conv.conv2d_weight_grad(x, x, kernel_size)


# ------------------------------------------------------------ reference-compatible functions
def _compat_args(name, dtype=torch.float64):
    y = torch.randn(2, 3, 5, 4, dtype=dtype)
    k = torch.randn(3, 3, 3, 3, dtype=dtype) * 0.3
    g = torch.randn(2, 3, 5, 4, dtype=dtype)
    return {"inverse": (y, k), "forward": (y, k), "dy": (g, k, None), "dw": (y, k, g, None)}[name]


def _out_like(name, args, dtype):
    shape = args[1].shape if name == "dw" else args[0].shape
    return torch.zeros(shape, dtype=dtype)


COMPAT = ["inverse", "forward", "dy", "dw"]


@pytest.mark.parametrize("module", [inv_conv, inv_conv_with_bp])
@pytest.mark.parametrize("name", COMPAT)
@pytest.mark.parametrize("out_dtype", [torch.int64, torch.bool, torch.float32, torch.float16])
def test_compat_output_of_the_wrong_dtype_is_refused_untouched(module, name, out_dtype):
    args = _compat_args(name)
    output = _out_like(name, args, out_dtype)
    before = output.clone()
    with pytest.raises(TypeError, match=rf"output must have dtype torch.float64 like the "
                                        rf"(input|grad|kernel); got {out_dtype}"):
        getattr(module, name)(*args, output)
    assert torch.equal(output, before)


@pytest.mark.parametrize("name", COMPAT)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compat_output_of_the_right_dtype_works(name, dtype):
    args = _compat_args(name, dtype)
    output = _out_like(name, args, dtype)
    result = getattr(inv_conv, name)(*args, output)
    assert result[0] is output and bool(torch.isfinite(output).all())


def test_compat_messages_use_their_own_parameter_names():
    y, k = _compat_args("inverse")
    out = torch.zeros_like(y)
    with pytest.raises(ValueError, match=r"input has 3 channels but kernel expects 2"):
        inv_conv.inverse(y, k[:2, :2], out)
    with pytest.raises(TypeError, match=r"input and kernel must have the same dtype"):
        inv_conv.forward(y.float(), k, out.float())
    with pytest.raises(TypeError, match=r"kernel must be a floating-point tensor"):
        inv_conv.forward(y, k.long(), out)
    with pytest.raises(ValueError, match=r"kernel must be a 4-D tensor"):
        inv_conv.inverse(y, k[0], out)
    with pytest.raises(TypeError, match=r"input must be a torch.Tensor; got list"):
        inv_conv.inverse([[1.0]], k, out)
    g = torch.randn_like(y)
    with pytest.raises(ValueError, match=r"grad has 3 channels but kernel expects 2"):
        inv_conv.dy(g, k[:2, :2], None, torch.zeros_like(g))
    with pytest.raises(ValueError, match=r"grad must have the shape of input \(2, 3, 5, 4\); got \(2, 3, 4, 4\)"):
        inv_conv.dw(y, k, g[:, :, :4], None, torch.zeros_like(k))
    with pytest.raises(ValueError, match=r"output must have shape \(3, 3, 3, 3\)"):
        inv_conv.dw(y, k, g, None, torch.zeros_like(y))
    with pytest.raises(TypeError, match=r"output must be a torch.Tensor; got NoneType"):
        inv_conv.dy(g, k)
    for message in ("\\bx\\b", "\\by\\b", "weight"):
        with pytest.raises(ValueError) as error:
            inv_conv.inverse(y, k[:2, :2], out)
        assert not __import__("re").search(message, str(error.value)), str(error.value)
