"""The eager fast path (plain autograd Functions straight to the backend), forward-mode and
higher-order AD through it, and the fused sampling chain — on every available device (the
``device`` fixture), against the custom-op path and the dense float64 oracle (tests/oracle.py)."""

import pytest
import torch

import inv_conv
from inv_conv import ops

import oracle as R
from conftest import ORDERS, random_problem

# (B, C, H, W, KH, KW): odd, non-square, C not a multiple of 4.
AD_SHAPES = [(2, 3, 5, 4, 2, 3), (1, 2, 3, 6, 3, 1)]
OPS = [(inv_conv.inv_conv2d, R.inv_conv2d), (inv_conv.conv2d, R.conv2d)]


def _problem(shape, device, dtype=torch.float64, scale=0.3):
    return random_problem(shape, dtype, scale, device=device)


def _max_diff(a, b):
    return max((u - v).abs().max().item() for u, v in zip(a, b))


@pytest.mark.parametrize("order", ORDERS)
def test_fast_path_is_taken_and_bitwise_equal_to_the_custom_ops(device, order):
    x, w = _problem((3, 5, 6, 7, 3, 3), device, torch.float32, 0.1)
    g = torch.randn_like(x)
    results = {}
    for eager in (True, False):
        ops._EAGER = eager
        try:
            xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
            for name, fn in (("inv", inv_conv.inv_conv2d), ("conv", inv_conv.conv2d)):
                out = fn(xr, wr, order)
                assert ("Eager" in type(out.grad_fn).__name__) == eager
                out.backward(g)
                results[(eager, name)] = (out.detach(), xr.grad.clone(), wr.grad.clone())
                xr.grad = wr.grad = None
        finally:
            ops._EAGER = True
    for name in ("inv", "conv"):
        for fast, slow in zip(results[(True, name)], results[(False, name)]):
            assert torch.equal(fast, slow)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shape", AD_SHAPES)
def test_forward_mode_and_higher_order_match_the_dense_oracle(device, order, shape):
    x, w = _problem(shape, device)
    for fast, ref in OPS:
        jac_ref = torch.func.jacrev(lambda a, b: ref(a, b, order), argnums=(0, 1))(x, w)
        jac_fwd = torch.func.jacfwd(lambda a, b: fast(a, b, order), argnums=(0, 1))(x, w)
        jac_rev = torch.func.jacrev(lambda a, b: fast(a, b, order), argnums=(0, 1))(x, w)
        scale = max(j.abs().max().item() for j in jac_ref)
        assert _max_diff(jac_fwd, jac_ref) < 1e-11 * scale
        assert _max_diff(jac_rev, jac_ref) < 1e-11 * scale
        hess = torch.func.hessian(lambda b: fast(x, b, order).square().sum())(w)
        hess_ref = torch.func.hessian(lambda b: ref(x, b, order).square().sum())(w)
        assert (hess - hess_ref).abs().max().item() < 1e-10 * hess_ref.abs().max().item()


@pytest.mark.parametrize("order", ORDERS)
def test_forward_ad_gradcheck_and_double_backward(device, order):
    x, w = _problem(AD_SHAPES[0], device)
    xr, wr = x.requires_grad_(), w.requires_grad_()
    g = torch.randn_like(x).requires_grad_()
    kernel = tuple(w.shape[2:])
    fns = [inv_conv.inv_conv2d, inv_conv.conv2d, inv_conv.conv2d_transpose, inv_conv.inv_conv2d_transpose]
    for fn in fns:
        f = lambda a, b: fn(a, b, order)  # noqa: E731
        assert torch.autograd.gradcheck(f, (xr, wr), check_forward_ad=True)
        assert torch.autograd.gradgradcheck(f, (xr, wr))
    f = lambda a, b: inv_conv.conv2d_weight_grad(a, b, kernel, order)  # noqa: E731
    assert torch.autograd.gradcheck(f, (xr, g), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(f, (xr, g))


def test_forward_ad_dual_tensors(device):
    import torch.autograd.forward_ad as fwAD

    x, w = _problem(AD_SHAPES[0], device)
    xt, wt = torch.randn_like(x), torch.randn_like(w)
    for fast, ref in OPS:
        with fwAD.dual_level():
            out = fast(fwAD.make_dual(x, xt), fwAD.make_dual(w, wt), "BL")
            tangent = fwAD.unpack_dual(out).tangent
        _, expected = torch.func.jvp(lambda a, b: ref(a, b, "BL"), (x, w), (xt, wt))
        assert tangent is not None
        assert (tangent - expected).abs().max().item() < 1e-11 * expected.abs().max().item()


def test_vmap_over_input_and_weight(device):
    x, w = _problem((2, 3, 4, 5, 3, 3), device)
    xs = torch.randn(3, *x.shape, dtype=x.dtype, device=device)
    ws = torch.randn(3, *w.shape, dtype=w.dtype, device=device) * 0.3
    for fast, ref in OPS:
        out = torch.func.vmap(lambda a: fast(a, w, "TR"))(xs)
        assert torch.allclose(out, torch.stack([ref(a, w, "TR") for a in xs]), atol=1e-12)
        out = torch.func.vmap(lambda b: fast(x, b, "TR"))(ws)
        assert torch.allclose(out, torch.stack([ref(x, b, "TR") for b in ws]), atol=1e-12)


# Views the backends must read as the values they show (the CPU backend reads raw addresses):
# strided, channels-last, stride-0 batch, a contiguous view at a storage offset, a slice, and a
# lazily negated view (torch._neg_view: memory holds the un-negated values).
LAYOUTS = {
    "transposed": lambda t: t.transpose(-1, -2).contiguous().transpose(-1, -2),
    "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
    "expanded": lambda t: t[:1].expand(t.shape),
    "offset": lambda t: torch.cat([t[:1], t])[1:],
    "sliced": lambda t: torch.cat([t, t], dim=-1)[..., t.shape[-1]:],
    "negative_view": lambda t: torch._neg_view(-t),
}


@pytest.mark.parametrize("eager", [True, False])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_gives_the_values_it_shows(device, layout, eager):
    """Each op, forward and backward, on a view equals the same op on a contiguous copy, bitwise."""
    view = LAYOUTS[layout]
    x, w = _problem((2, 3, 5, 4, 3, 3), device, torch.float32, 0.1)
    g = torch.randn_like(x)
    plain = lambda t: view(t).resolve_neg().contiguous()  # noqa: E731
    fns = [inv_conv.conv2d, inv_conv.inv_conv2d, inv_conv.conv2d_transpose, inv_conv.inv_conv2d_transpose]
    ops._EAGER = eager
    try:
        for fn in fns:
            for args, ref in (((view(x), w), (plain(x), w)), ((x, view(w)), (x, plain(w)))):
                assert torch.equal(fn(*args, "BL"), fn(*ref, "BL")), fn.__name__
        assert torch.equal(inv_conv.conv2d_weight_grad(view(x), view(g), 3, "TR"),
                           inv_conv.conv2d_weight_grad(plain(x), plain(g), 3, "TR"))
        grads = []
        for upstream in (view(g), plain(g)):
            xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
            inv_conv.inv_conv2d(xr, wr, "TR").backward(upstream)
            grads.append((xr.grad, wr.grad))
        assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    finally:
        ops._EAGER = True


def test_fake_tensors_and_compile_take_the_custom_ops():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        y = inv_conv.inv_conv2d(torch.empty(2, 3, 5, 4), torch.empty(3, 3, 3, 3), "TL")
    assert y.shape == (2, 3, 5, 4)
    x, w = _problem((2, 3, 5, 4, 3, 3), "cpu", torch.float32, 0.1)
    compiled = torch.compile(lambda a, b: inv_conv.inv_conv2d(a, b, "BR"), backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(x, w), inv_conv.inv_conv2d(x, w, "BR"))


# (B, C, H, W, K): shapes whose image fits in shared memory (the fused kernel; on CUDA in
# float32 with C = 12 or 24, from 256 pixels up to one pass of its 512 threads, its
# register-blocked variant: odd sizes, the largest it takes at C = 12 (32²), 24 channels in two
# thread groups) and one that does not; small and large C = 12 / 24 images (the generic kernel).
CHAIN_SHAPES = [(3, 12, 16, 16, 3), (2, 5, 7, 9, 3), (2, 16, 8, 8, 2), (1, 3, 6, 5, 1), (2, 4, 200, 200, 3),
                (2, 12, 13, 21, 3), (2, 12, 32, 32, 3), (2, 24, 17, 19, 2), (2, 24, 9, 5, 3), (1, 24, 2, 3, 3),
                (2, 12, 40, 37, 3), (1, 24, 33, 35, 2)]


@pytest.mark.parametrize("shape", CHAIN_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layers", [2, 4])
def test_conv2d_chain_matches_layer_by_layer_and_the_oracle(device, shape, dtype, layers):
    b, c, h, w, k = shape
    x = torch.randn(b, c, h, w, dtype=dtype, device=device)
    weights = [torch.randn(c, c, k, k, dtype=dtype, device=device) * 0.1 for _ in range(layers)]
    orders = ["BR", "BL", "TR", "TL"][:layers]
    for wt, order in zip(weights, orders):  # masked entries are never read, whatever they hold
        ai, aj = R.anchor(order, k, k)
        wt[:, :, ai, aj] += torch.triu(torch.full((c, c), float("nan"), dtype=dtype, device=device))
    out = inv_conv.conv2d_chain(x, weights, orders)
    expected = x
    for wt, order in zip(weights, orders):
        expected = inv_conv.conv2d(expected, wt, order)
    oracle = x.double()
    for wt, order in zip(weights, orders):
        oracle = R.conv2d(oracle, wt.double(), order)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(out, expected, rtol=tol, atol=tol)
    assert ((out.double() - oracle).norm() / oracle.norm()).item() < tol


@pytest.mark.cuda
@pytest.mark.parametrize(
    "shape, kernel",
    [((100, 12, 32, 32), "conv_chain_c12_f32"), ((100, 24, 16, 16), "conv_chain_c24_f32"),
     ((100, 24, 8, 8), "conv_chain_f32"), ((2, 12, 40, 37), "conv_chain_f32")],
)
def test_conv2d_chain_takes_the_register_kernel_at_the_presets_shapes(shape, kernel):
    from torch.profiler import ProfilerActivity, profile

    c = shape[1]
    x = torch.randn(*shape, device="cuda")
    ws = [torch.randn(c, c, 3, 3, device="cuda") * 0.1 for _ in range(4)]
    inv_conv.conv2d_chain(x, ws, ["BR", "BL", "TR", "TL"])
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        inv_conv.conv2d_chain(x, ws, ["BR", "BL", "TR", "TL"])
        torch.cuda.synchronize()
    names = [ev.name for ev in prof.events() if ev.device_type == torch.autograd.DeviceType.CUDA]
    assert names == [kernel], names


def test_inv_flow_unit_reverse_inverts_forward_with_and_without_grad(device):
    unit = inv_conv.InvFlowUnit(12, kernel_size=3, init_std=0.05).to(device)
    x = torch.randn(3, 12, 10, 9, device=device)
    z, _ = unit(x)
    with torch.no_grad():
        back = unit.reverse(z)
    assert torch.allclose(back, x, atol=1e-4)
    back_grad = unit.reverse(z.detach().requires_grad_())
    assert back_grad.requires_grad
    assert torch.allclose(back_grad, back, atol=1e-5)


def test_conv2d_chain_bad_arguments():
    x = torch.randn(1, 3, 4, 4)
    w = torch.randn(3, 3, 3, 3)
    with pytest.raises(ValueError, match="weights and orders"):
        inv_conv.conv2d_chain(x, [w, w], ["TL"])
    with pytest.raises(ValueError, match="order"):
        inv_conv.conv2d_chain(x, [w], ["XX"])
    with pytest.raises(TypeError, match="weights\\[1\\]"):
        inv_conv.conv2d_chain(x.cuda() if torch.cuda.is_available() else x, [w, w.int()], ["TL", "BR"])


def test_mixed_numpy_and_torch_arguments_say_so():
    x = torch.randn(1, 3, 4, 4)
    w = torch.randn(3, 3, 3, 3)
    for fn, name in ((inv_conv.conv2d, "x"), (inv_conv.inv_conv2d, "y")):
        with pytest.raises(TypeError, match=f"both numpy arrays; {name} is a torch.Tensor, weight is a numpy.ndarray"):
            fn(x, w.numpy())
    with pytest.raises(TypeError, match="both numpy arrays; x is a numpy.ndarray, grad is a torch.Tensor"):
        inv_conv.conv2d_weight_grad(x.numpy(), x, 3)


@pytest.mark.parametrize("direction", ["inverse", "conv"])
def test_layer_names_its_own_input_on_a_wrong_shape(direction):
    layer = inv_conv.InvConv2d(12, direction=direction)
    with pytest.raises(ValueError, match=r"InvConv2d\(12\): x must be a \(B, 12, H, W\) tensor; got \(2, 3, 8, 8\)"):
        layer(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"InvConv2d\(12\): z must be a \(B, 12, H, W\) tensor; got \(12, 8, 8\)"):
        layer.reverse(torch.randn(12, 8, 8))


def test_unit_names_its_own_input_on_a_wrong_shape():
    unit = inv_conv.InvFlowUnit(12)
    with pytest.raises(ValueError, match=r"InvConv2d\(12\): z must be a \(B, 12, H, W\) tensor; got \(2, 5, 8, 8\)"):
        unit.reverse(torch.randn(2, 5, 8, 8))
