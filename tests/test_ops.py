"""The ops on every device (the ``device`` fixture: CPU, and CUDA where there is a GPU) against
the one oracle, tests/oracle.py: forward = F.conv2d(F.pad(x, PAD), ŵ); inverse = dense
unit-triangular solve of the explicit matrix; transposes and weight-gradient by autograd through
them. Gradients by torch.autograd.gradcheck and against autograd through the dense oracle; the
custom ops by torch.library.opcheck.
"""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import inv_conv
import oracle

from conftest import ORDERS, SHAPES, random_problem

DTYPES = (torch.float32, torch.float64)
# SHAPES, and K = 5 with C = 6, C = 12 on 16 × 16 (test_cuda adds the tiled kernels' shapes).
EVERY_OP_SHAPES = SHAPES + [(2, 6, 9, 8, 5, 5), (4, 12, 16, 16, 3, 3)]


def test_oracle_padding_and_anchor_are_the_contract_table():
    # DESIGN.md: padding (left, right, top, bottom) and anchor tap of each order, KH = 3, KW = 2.
    pads = {"TL": (1, 0, 2, 0), "TR": (0, 1, 2, 0), "BL": (1, 0, 0, 2), "BR": (0, 1, 0, 2)}
    anchors = {"TL": (2, 1), "TR": (2, 0), "BL": (0, 1), "BR": (0, 0)}
    for order in ORDERS:
        assert oracle.padding(order, 3, 2) == pads[order]
        assert oracle.anchor(order, 3, 2) == anchors[order]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_padded_conv(device, order, shape):
    x, weight = random_problem(shape, device=device)
    torch.testing.assert_close(inv_conv.conv2d(x, weight, order), oracle.conv2d(x, weight, order), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shape", SHAPES)
def test_inverse_and_its_transpose_match_dense_triangular_solves(device, order, shape):
    y, weight = random_problem(shape, device=device)
    want = oracle.inv_conv2d(y, weight, order)
    got = inv_conv.inv_conv2d(y, weight, order)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(oracle.conv2d(got, weight, order), y, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(y)  # and its transpose, A⁻ᵀ g, against the transposed dense solve
    want_t = oracle.inv_conv2d_transpose(g, weight, order)
    torch.testing.assert_close(inv_conv.inv_conv2d_transpose(g, weight, order), want_t, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("order", ORDERS)
def test_dense_matrix_is_unit_triangular_under_sweep_order(order):
    _, weight = random_problem((1, 3, 4, 5, 3, 2))
    a = oracle.dense_matrix(weight, order, 4, 5)
    perm = oracle.sweep_permutation(3, 4, 5, order)
    a = a[perm][:, perm]
    torch.testing.assert_close(a, torch.tril(a))
    torch.testing.assert_close(torch.diagonal(a), torch.ones(a.shape[0], dtype=a.dtype))


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shape", SHAPES)
def test_float32_agrees_with_float64(device, order, shape):
    y, weight = random_problem(shape, device=device)
    want = inv_conv.inv_conv2d(y, weight, order)
    got = inv_conv.inv_conv2d(y.float(), weight.float(), order)
    assert got.dtype == torch.float32
    assert (got.double() - want).norm() / want.norm() < 1e-5


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shape", EVERY_OP_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_op_matches_the_oracle_and_the_cpu(device, shape, order, dtype):
    oracle.assert_every_op_matches(shape, order, dtype, device)


@pytest.mark.parametrize("direction", ["inverse", "conv"])
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5, 3, 3), (1, 2, 3, 4, 2, 3), (2, 1, 3, 3, 1, 1), (2, 3, 5, 4, 3, 2)])
def test_gradcheck(device, direction, order, shape):
    x, weight = random_problem(shape, device=device)
    x.requires_grad_(True)
    weight.requires_grad_(True)
    fn = inv_conv.inv_conv2d if direction == "inverse" else inv_conv.conv2d
    assert torch.autograd.gradcheck(lambda a, w: fn(a, w, order), (x, weight), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("order", ORDERS)
def test_gradients_match_autograd_through_dense_oracle(device, order):
    y, weight = random_problem((2, 3, 4, 3, 3, 2), device=device)
    g = torch.randn_like(y)
    ours = [t.clone().requires_grad_(True) for t in (y, weight)]
    ref = [t.clone().requires_grad_(True) for t in (y, weight)]
    (inv_conv.inv_conv2d(*ours, order) * g).sum().backward()
    (oracle.inv_conv2d(*ref, order) * g).sum().backward()
    torch.testing.assert_close(ours[0].grad, ref[0].grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours[1].grad, ref[1].grad, rtol=1e-9, atol=1e-9)
    # Masked anchor entries (diagonal and upper triangle) get exactly zero gradient.
    masked = oracle.masked_entries(3, 3, 2, order, device)
    assert torch.all(ours[1].grad[masked] == 0)


@pytest.mark.parametrize("order", ORDERS)
def test_masked_entries_ignored_whatever_they_hold(device, order):
    y, weight = random_problem((2, 4, 5, 3, 3, 3), device=device)
    poisoned = oracle.poison(weight, order)  # NaN on the anchor's diagonal, ±Inf above it
    masked = oracle.masked_entries(4, 3, 3, order, device)
    assert torch.isnan(poisoned[masked]).any() and torch.isinf(poisoned[masked]).any()
    for fn in (inv_conv.conv2d, inv_conv.inv_conv2d, inv_conv.conv2d_transpose, inv_conv.inv_conv2d_transpose):
        torch.testing.assert_close(fn(y, poisoned, order), fn(y, weight, order), rtol=0, atol=0)
    # ... and by the backward passes: the same gradients, exactly zero at the poisoned entries.
    g = torch.randn_like(y)
    for fn in (inv_conv.conv2d, inv_conv.inv_conv2d):
        grads = []
        for w in (poisoned, weight):
            yr, wr = y.clone().requires_grad_(True), w.clone().requires_grad_(True)
            fn(yr, wr, order).backward(g)
            grads.append((yr.grad, wr.grad))
        torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)
        assert torch.all(grads[0][1][masked] == 0)


def test_nan_and_inf_flow_through(device):
    y, weight = random_problem((1, 2, 4, 4, 3, 3), device=device)
    y[0, 0, 1, 1] = float("nan")
    x = inv_conv.inv_conv2d(y, weight, "TL")
    assert torch.isnan(x[0, 0, 1, 1])
    assert torch.isfinite(x[0, :, 0, :]).all()  # pixels before the NaN in the sweep are untouched
    inf = torch.full((1, 1, 2, 2), float("inf"), dtype=torch.float64, device=device)
    y2 = inv_conv.conv2d(inf, torch.zeros(1, 1, 1, 1, dtype=torch.float64, device=device))
    assert torch.isinf(y2).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    b=st.integers(1, 3), c=st.integers(1, 6), h=st.integers(1, 7), w=st.integers(1, 7),
    kh=st.integers(1, 4), kw=st.integers(1, 4), order=st.sampled_from(ORDERS), seed=st.integers(0, 2**31 - 1),
)
def test_property_round_trip_and_adjoint(device, b, c, h, w, kh, kw, order, seed):
    # `device` only names a backend: nothing in it is reset between examples.
    gen = torch.Generator().manual_seed(seed)
    x, weight = random_problem((b, c, h, w, kh, kw), generator=gen, device=device)
    y = inv_conv.conv2d(x, weight, order)
    torch.testing.assert_close(y, oracle.conv2d(x, weight, order), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(inv_conv.inv_conv2d(y, weight, order), x, rtol=1e-8, atol=1e-8)
    g = torch.randn(y.shape, dtype=y.dtype, generator=gen).to(device)
    lhs = (g * inv_conv.inv_conv2d(y, weight, order)).sum()
    rhs = (inv_conv.inv_conv2d_transpose(g, weight, order) * y).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-8, atol=1e-8)


def test_non_contiguous_inputs_are_accepted(device):
    y, weight = random_problem((2, 3, 6, 5, 3, 3), device=device)
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
    # The values: Σ u·pad(x) by the oracle, and −dw is the weight-gradient of ⟨g, A⁻¹y⟩.
    as64 = lambda a: torch.from_numpy(a).double()  # noqa: E731
    np.testing.assert_allclose(dw, oracle.weight_grad(as64(x), as64(u), order, 3, 3).numpy(), rtol=tol, atol=tol)
    w_ref = as64(wn).requires_grad_(True)
    (oracle.inv_conv2d(as64(yn), w_ref, order) * as64(g)).sum().backward()
    np.testing.assert_allclose(-dw, w_ref.grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_native_inverse_backward_is_the_two_calls_and_the_oracle(dtype, order, shape):
    # The CPU backward of inv_conv2d in one native call: (A⁻ᵀ g, −Σ (A⁻ᵀ g)·pad(x)), bitwise the
    # same as the two separate ops, and the dense oracle's gradients of ⟨g, A⁻¹ y⟩.
    y, weight = random_problem(shape)
    kh, kw = shape[4:]
    yn, wn = y.numpy().astype(dtype), weight.numpy().astype(dtype)
    g = np.random.default_rng(1).standard_normal(yn.shape).astype(dtype)
    x = inv_conv._native.inverse(yn, wn, order)
    u, grad_w = inv_conv._native.inverse_backward(x, g, wn, order)
    assert u.dtype == grad_w.dtype == dtype and u.shape == yn.shape and grad_w.shape == wn.shape
    u_apart = inv_conv._native.inverse_adjoint(g, wn, order)
    np.testing.assert_array_equal(u, u_apart)
    np.testing.assert_array_equal(grad_w, -inv_conv._native.weight_grad(x, u_apart, order, (kh, kw)))
    as64 = lambda a: torch.from_numpy(a).double()  # noqa: E731
    y_ref, w_ref = as64(yn).requires_grad_(True), as64(wn).requires_grad_(True)
    (oracle.inv_conv2d(y_ref, w_ref, order) * as64(g)).sum().backward()
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(u, y_ref.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(grad_w, w_ref.grad.numpy(), rtol=tol, atol=tol)


def test_torch_compile_fullgraph(device):
    y, weight = random_problem((2, 3, 5, 4, 3, 3), device=device)
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


def test_torch_compile_inductor(device):
    y, weight = random_problem((2, 3, 5, 4, 3, 3), device=device)

    def step(a, w):
        x = inv_conv.inv_conv2d(a, w, "TL")
        return x * 2, inv_conv.conv2d(torch.tanh(x), w, "TL").sum()

    compiled = torch.compile(step, fullgraph=True)
    doubled, loss = compiled(y, weight)
    torch.testing.assert_close(doubled, inv_conv.inv_conv2d(y, weight, "TL") * 2)
    assert oracle.rel(loss, step(y, weight)[1]) < 1e-5


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_autocast_and_half_inputs_compute_in_float32(device, low):
    y, weight = random_problem((2, 3, 6, 5, 3, 3), dtype=torch.float32, weight_scale=0.1, device=device)
    want = inv_conv.inv_conv2d(y, weight)
    with torch.autocast(device, dtype=low):
        got = inv_conv.inv_conv2d(y.to(low), weight)
    assert got.dtype == torch.float32
    assert (got - want).norm() / want.norm() < 2e-2  # only the input's rounding to `low`
    half = inv_conv.inv_conv2d(y.to(low), weight.to(low))
    assert half.dtype == low
    exact_from_rounded = inv_conv.inv_conv2d(y.to(low).float(), weight.to(low).float()).to(low)
    torch.testing.assert_close(half, exact_from_rounded, rtol=0, atol=0)


def test_autocast_leaves_float64_alone(device):
    y, weight = random_problem((1, 2, 4, 3, 3, 3), device=device)
    with torch.autocast(device, dtype=torch.bfloat16):
        x = inv_conv.inv_conv2d(y, weight)
    assert x.dtype == torch.float64
    torch.testing.assert_close(x, oracle.inv_conv2d(y, weight, "TL"))


def test_meta_tensors_give_shapes():
    y = torch.empty(2, 3, 5, 4, device="meta")
    w = torch.empty(3, 3, 3, 2, device="meta")
    assert inv_conv.inv_conv2d(y, w).shape == y.shape
    assert inv_conv.conv2d_weight_grad(y, y, (3, 2)).shape == w.shape


def test_fake_tensors_keep_device_dtype_and_shape(device):
    from torch._subclasses.fake_tensor import FakeTensorMode

    for dtype in DTYPES:
        with FakeTensorMode():
            y = torch.empty(2, 3, 5, 4, dtype=dtype, device=device)
            w = torch.empty(3, 3, 3, 2, dtype=dtype, device=device)
            outs = [fn(y, w, "BL") for fn in (inv_conv.conv2d, inv_conv.inv_conv2d,
                                                  inv_conv.conv2d_transpose, inv_conv.inv_conv2d_transpose)]
            outs.append(inv_conv.conv2d_weight_grad(y, y, (3, 2), "BL"))
        for out, shape in zip(outs, [y.shape] * 4 + [w.shape]):
            assert out.shape == shape and out.dtype == dtype and out.device.type == device


# Every op registered with torch.library under inv_conv::, and whether it has an autograd formula.
CUSTOM_OPS = {"forward": True, "inverse": True, "forward_adjoint": False, "inverse_adjoint": False,
              "weight_grad": False, "inverse_backward": False, "inverse_chain": True, "inverse_chain_backward": False}
# (order, dtype, shape): odd, non-square images and kernels, C = 1, both dtypes, every order.
OPCHECK_SAMPLES = [("TL", torch.float64, (2, 3, 5, 4, 3, 2)), ("TR", torch.float32, (1, 2, 3, 6, 1, 3)),
                   ("BL", torch.float64, (3, 1, 4, 7, 2, 2)), ("BR", torch.float32, (2, 5, 7, 3, 3, 3))]


def test_every_registered_custom_op_is_opchecked():
    registered = {n.split("::")[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("inv_conv::")}
    assert registered == set(CUSTOM_OPS)


@pytest.mark.parametrize("name", sorted(CUSTOM_OPS))
def test_opcheck(device, name):
    """torch.library.opcheck: schema, fake (meta) implementation, autograd registration and
    AOT dispatch, with gradients where the op has a formula (float64 samples)."""
    op = getattr(torch.ops.inv_conv, name).default
    for order, dtype, shape in OPCHECK_SAMPLES:
        x, weight = random_problem(shape, dtype, device=device)
        grad = torch.randn_like(x)
        if name == "weight_grad":
            args = (x, grad, order, *shape[4:])
        elif name == "inverse_backward":
            args = (oracle.inv_conv2d(x, weight, order), grad, weight, order)
        elif name in ("inverse_chain", "inverse_chain_backward"):
            # Three layers: this sample's order, then the others (weights of one shape).
            orders = [order, *[o for o in ORDERS if o != order][:2]]
            weights = [weight, *(random_problem(shape, dtype, device=device)[1] for _ in range(2))]
            if name == "inverse_chain":
                differentiable = dtype == torch.float64
                args = (x.requires_grad_(differentiable), [w.requires_grad_(differentiable) for w in weights],
                        ",".join(orders))
            else:
                xs = [oracle.inv_conv2d(x, weights[0], orders[0])]
                for w, o in zip(weights[1:], orders[1:]):
                    xs.append(oracle.inv_conv2d(xs[-1], w, o))
                args = (torch.stack(xs[:-1]), xs[-1], grad, weights, ",".join(orders))
        else:
            differentiable = CUSTOM_OPS[name] and dtype == torch.float64
            args = (x.requires_grad_(differentiable), weight.requires_grad_(differentiable), order)
        torch.library.opcheck(op, args)
