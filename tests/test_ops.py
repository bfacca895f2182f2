"""The ops against an independent float64 oracle built from PyTorch's own ops.

forward = F.conv2d(F.pad(x, PAD), ŵ); inverse = dense unit-triangular solve of the explicit
matrix; gradients by torch.autograd.gradcheck and against autograd through the dense oracle.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import inv_conv
from inv_conv import reference

from conftest import ORDERS, SHAPES, random_problem


def pad_oracle(x, weight, order):
    kh, kw = weight.shape[2:]
    c = weight.shape[0]
    ai, aj = {"TL": (kh - 1, kw - 1), "TR": (kh - 1, 0), "BL": (0, kw - 1), "BR": (0, 0)}[order]
    pads = {"TL": (kw - 1, 0, kh - 1, 0), "TR": (0, kw - 1, kh - 1, 0),
            "BL": (kw - 1, 0, 0, kh - 1), "BR": (0, kw - 1, 0, kh - 1)}[order]
    w_hat = weight.clone()
    w_hat[:, :, ai, aj] = torch.tril(weight[:, :, ai, aj], -1) + torch.eye(c, dtype=weight.dtype)
    return F.conv2d(F.pad(x, pads), w_hat)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_padded_conv(order, shape):
    x, weight = random_problem(shape)
    torch.testing.assert_close(inv_conv.conv2d(x, weight, order), pad_oracle(x, weight, order), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shape", SHAPES)
def test_inverse_matches_dense_triangular_solve(order, shape):
    y, weight = random_problem(shape)
    want = reference.inv_conv2d(y, weight, order)
    got = inv_conv.inv_conv2d(y, weight, order)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(pad_oracle(got, weight, order), y, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("order", ORDERS)
def test_dense_matrix_is_unit_triangular_under_sweep_order(order):
    _, weight = random_problem((1, 3, 4, 5, 3, 2))
    a = reference.dense_matrix(weight, order, 4, 5)
    perm = reference.sweep_permutation(3, 4, 5, order)
    a = a[perm][:, perm]
    torch.testing.assert_close(a, torch.tril(a))
    torch.testing.assert_close(torch.diagonal(a), torch.ones(a.shape[0], dtype=a.dtype))


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shape", SHAPES)
def test_float32_agrees_with_float64(order, shape):
    y, weight = random_problem(shape)
    want = inv_conv.inv_conv2d(y, weight, order)
    got = inv_conv.inv_conv2d(y.float(), weight.float(), order)
    assert got.dtype == torch.float32
    assert (got.double() - want).norm() / want.norm() < 1e-5


@pytest.mark.parametrize("direction", ["inverse", "conv"])
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5, 3, 3), (1, 2, 3, 4, 2, 3), (2, 1, 3, 3, 1, 1)])
def test_gradcheck(direction, order, shape):
    x, weight = random_problem(shape)
    x.requires_grad_(True)
    weight.requires_grad_(True)
    fn = inv_conv.inv_conv2d if direction == "inverse" else inv_conv.conv2d
    assert torch.autograd.gradcheck(lambda a, w: fn(a, w, order), (x, weight), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("order", ORDERS)
def test_gradients_match_autograd_through_dense_oracle(order):
    y, weight = random_problem((2, 3, 4, 3, 3, 2))
    g = torch.randn_like(y)
    ours = [t.clone().requires_grad_(True) for t in (y, weight)]
    ref = [t.clone().requires_grad_(True) for t in (y, weight)]
    (inv_conv.inv_conv2d(*ours, order) * g).sum().backward()
    (reference.inv_conv2d(*ref, order) * g).sum().backward()
    torch.testing.assert_close(ours[0].grad, ref[0].grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours[1].grad, ref[1].grad, rtol=1e-9, atol=1e-9)
    # Masked anchor entries (diagonal and upper triangle) get exactly zero gradient.
    kh, kw = weight.shape[2:]
    ai, aj = reference.anchor(order, kh, kw)
    masked = torch.triu(torch.ones(3, 3, dtype=torch.bool))
    assert torch.all(ours[1].grad[:, :, ai, aj][masked] == 0)


@pytest.mark.parametrize("order", ORDERS)
def test_masked_entries_ignored_whatever_they_hold(order):
    y, weight = random_problem((2, 4, 5, 3, 3, 3))
    poisoned = weight.clone()
    ai, aj = reference.anchor(order, 3, 3)
    upper = torch.triu(torch.ones(4, 4, dtype=torch.bool))
    poisoned[:, :, ai, aj][upper] = float("nan")
    anchor_block = poisoned[:, :, ai, aj]
    anchor_block[upper] = torch.tensor(float("inf"), dtype=torch.float64)
    poisoned[:, :, ai, aj] = anchor_block
    for fn in (inv_conv.conv2d, inv_conv.inv_conv2d, inv_conv.conv2d_transpose, inv_conv.inv_conv2d_transpose):
        torch.testing.assert_close(fn(y, poisoned, order), fn(y, weight, order), rtol=0, atol=0)


def test_nan_and_inf_flow_through():
    y, weight = random_problem((1, 2, 4, 4, 3, 3))
    y[0, 0, 1, 1] = float("nan")
    x = inv_conv.inv_conv2d(y, weight, "TL")
    assert torch.isnan(x[0, 0, 1, 1])
    assert torch.isfinite(x[0, :, 0, :]).all()  # pixels before the NaN in the sweep are untouched
    y2 = inv_conv.conv2d(torch.full((1, 1, 2, 2), float("inf"), dtype=torch.float64), torch.zeros(1, 1, 1, 1, dtype=torch.float64))
    assert torch.isinf(y2).all()


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 3), c=st.integers(1, 6), h=st.integers(1, 7), w=st.integers(1, 7),
    kh=st.integers(1, 4), kw=st.integers(1, 4), order=st.sampled_from(ORDERS), seed=st.integers(0, 2**31 - 1),
)
def test_property_round_trip_and_adjoint(b, c, h, w, kh, kw, order, seed):
    gen = torch.Generator().manual_seed(seed)
    x, weight = random_problem((b, c, h, w, kh, kw), generator=gen)
    y = inv_conv.conv2d(x, weight, order)
    torch.testing.assert_close(y, pad_oracle(x, weight, order), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(inv_conv.inv_conv2d(y, weight, order), x, rtol=1e-8, atol=1e-8)
    g = torch.randn(y.shape, dtype=y.dtype, generator=gen)
    lhs = (g * inv_conv.inv_conv2d(y, weight, order)).sum()
    rhs = (inv_conv.inv_conv2d_transpose(g, weight, order) * y).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-8, atol=1e-8)


def test_non_contiguous_inputs_are_accepted():
    y, weight = random_problem((2, 3, 6, 5, 3, 3))
    y_nc = y.transpose(2, 3).contiguous().transpose(2, 3)
    assert not y_nc.is_contiguous()
    torch.testing.assert_close(inv_conv.inv_conv2d(y_nc, weight), inv_conv.inv_conv2d(y, weight))
    w_nc = weight.permute(1, 0, 2, 3).contiguous().permute(1, 0, 2, 3)
    torch.testing.assert_close(inv_conv.conv2d(y, w_nc), inv_conv.conv2d(y, weight))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ORDERS)
def test_numpy_entry_points(dtype, order):
    y, weight = random_problem((2, 3, 5, 4, 3, 3))
    yn, wn = y.numpy().astype(dtype), weight.numpy().astype(dtype)
    x = inv_conv.inv_conv2d(yn, wn, order)
    assert isinstance(x, np.ndarray) and x.dtype == dtype
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(inv_conv.conv2d(x, wn, order), yn, rtol=tol, atol=tol)
    # Strided (non-contiguous) numpy input, and the raw extension with an explicit out.
    out = np.empty_like(yn)
    inv_conv._native.inverse(np.asfortranarray(yn), wn, order, out)
    np.testing.assert_allclose(out, x, rtol=tol, atol=tol)
    g = np.random.default_rng(0).standard_normal(yn.shape).astype(dtype)
    u = inv_conv.inv_conv2d_transpose(g, wn, order)
    dw = inv_conv.conv2d_weight_grad(x, u, 3, order)
    assert dw.shape == wn.shape and dw.dtype == dtype


def test_torch_compile_fullgraph():
    y, weight = random_problem((2, 3, 5, 4, 3, 3))
    weight.requires_grad_(True)

    def step(y, w):
        x = inv_conv.inv_conv2d(y, w, "BR")
        return inv_conv.conv2d(x, w, "TR").square().sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss = compiled(y, weight)
    (grad,) = torch.autograd.grad(loss, weight)
    want_loss = step(y, weight)
    (want_grad,) = torch.autograd.grad(want_loss, weight)
    torch.testing.assert_close(loss, want_loss)
    torch.testing.assert_close(grad, want_grad)


def test_torch_compile_inductor():
    y, weight = random_problem((2, 3, 5, 4, 3, 3))
    compiled = torch.compile(lambda a, w: inv_conv.inv_conv2d(a, w, "TL") * 2, fullgraph=True)
    torch.testing.assert_close(compiled(y, weight), inv_conv.inv_conv2d(y, weight, "TL") * 2)


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_autocast_and_half_inputs_compute_in_float32(low):
    y, weight = random_problem((2, 3, 6, 5, 3, 3), dtype=torch.float32, weight_scale=0.1)
    want = inv_conv.inv_conv2d(y, weight)
    with torch.autocast("cpu", dtype=low):
        got = inv_conv.inv_conv2d(y.to(low), weight)
    assert got.dtype == torch.float32
    assert (got - want).norm() / want.norm() < 2e-2  # only the input's rounding to `low`
    half = inv_conv.inv_conv2d(y.to(low), weight.to(low))
    assert half.dtype == low
    exact_from_rounded = inv_conv.inv_conv2d(y.to(low).float(), weight.to(low).float()).to(low)
    torch.testing.assert_close(half, exact_from_rounded, rtol=0, atol=0)


def test_autocast_leaves_float64_alone():
    y, weight = random_problem((1, 2, 4, 3, 3, 3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = inv_conv.inv_conv2d(y, weight)
    assert x.dtype == torch.float64
    torch.testing.assert_close(x, reference.inv_conv2d(y, weight, "TL"))


def test_meta_tensors_give_shapes():
    y = torch.empty(2, 3, 5, 4, device="meta")
    w = torch.empty(3, 3, 3, 2, device="meta")
    assert inv_conv.inv_conv2d(y, w).shape == y.shape
    assert inv_conv.conv2d_weight_grad(y, y, (3, 2)).shape == w.shape
