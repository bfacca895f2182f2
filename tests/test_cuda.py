"""CUDA backend vs the CPU backend vs float64 oracles, for every op, order and dtype.

Marked `cuda`: skipped where there is no GPU (CI). Inputs are fresh random draws; outputs are
poisoned-free by construction (torch.empty + every element checked against a reference).
"""

import pytest
import torch
import torch.nn.functional as F

import inv_conv
from inv_conv import _dispatch

from conftest import ORDERS

pytestmark = pytest.mark.cuda

DTYPES = (torch.float32, torch.float64)
TOL = {torch.float32: 2e-5, torch.float64: 1e-11}

# (B, C, H, W, KH, KW): odd/non-square images and kernels, C = 1, C not a multiple of 4,
# K = 1, 2, 3, 5.
SHAPES = [
    (2, 3, 5, 7, 3, 3),
    (1, 1, 4, 3, 3, 3),
    (3, 5, 6, 4, 2, 3),
    (2, 4, 3, 5, 1, 1),
    (1, 2, 7, 2, 5, 2),
    (2, 6, 9, 8, 5, 5),
    (4, 12, 16, 16, 3, 3),
    # C % 16 == 0: the tiled conv (partial tiles, K up to 5) and the 2-CTA cluster sweep
    (2, 16, 5, 37, 3, 3),
    (3, 32, 18, 9, 5, 2),
]


def _cuda():
    from inv_conv import _cuda

    return _cuda


def pad_of(order, kh, kw):
    left = kw - 1 if order in ("TL", "BL") else 0
    top = kh - 1 if order in ("TL", "TR") else 0
    return (left, kw - 1 - left, top, kh - 1 - top)


def masked(weight, order):
    kh, kw = weight.shape[2:]
    left, _, top, _ = pad_of(order, kh, kw)
    w = weight.clone()
    c = w.shape[0]
    tri = torch.tril(torch.ones(c, c, dtype=torch.bool, device=w.device), -1)
    a = w[:, :, top, left]
    w[:, :, top, left] = torch.where(tri, a, torch.eye(c, dtype=w.dtype, device=w.device))
    return w


def oracle_forward(x, weight, order):
    kh, kw = weight.shape[2:]
    return F.conv2d(F.pad(x, pad_of(order, kh, kw)), masked(weight, order))


def problem(shape, dtype):
    b, c, h, w, kh, kw = shape
    x = torch.randn(b, c, h, w, dtype=dtype)
    # Scaled so that the inverse stays well conditioned at every size tested.
    weight = torch.randn(c, c, kh, kw, dtype=dtype) / (2.0 * (c * kh * kw) ** 0.5)
    return x, weight


def rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    assert torch.isfinite(a).all(), "non-finite values in the CUDA result"
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def cpu64(name, *args):
    return getattr(_dispatch, name)(*args)


def poison_anchor(weight, order):
    """Writes NaN into every masked entry: the ops must never read them."""
    kh, kw = weight.shape[2:]
    left, _, top, _ = pad_of(order, kh, kw)
    w = weight.clone()
    c = w.shape[0]
    upper = torch.triu(torch.ones(c, c, dtype=torch.bool), 0)
    a = w[:, :, top, left]
    w[:, :, top, left] = torch.where(upper, torch.full_like(a, float("nan")), a)
    return w


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_op_matches_cpu_and_oracles(shape, order, dtype):
    cu = _cuda()
    x64, w64 = problem(shape, torch.float64)
    wpois = poison_anchor(w64, order)
    g64 = torch.randn_like(x64)
    x, w, g = (t.to("cuda", dtype) for t in (x64, wpois, g64))
    tol = TOL[dtype]

    # forward vs the PyTorch expression itself (float64) and the CPU backend
    y = cu.forward(x, w, order)
    y_ref = oracle_forward(x64, w64, order)
    assert rel(y, y_ref) < tol
    assert rel(y, cpu64("run_forward", x64, wpois, order)) < tol

    # inverse: CPU float64 and inverse(forward(x)) = x
    y_ref_dev = y_ref.to("cuda", dtype)
    x_back = cu.inverse(y_ref_dev, w, order)
    assert rel(x_back, x64) < 10 * tol
    assert rel(x_back, cpu64("run_inverse", y_ref, wpois, order)) < 10 * tol

    # forward adjoint: ⟨Aᵀg, x⟩ = ⟨g, Ax⟩ and the CPU backend
    at_g = cu.forward_adjoint(g, w, order)
    assert rel(at_g, cpu64("run_forward_adjoint", g64, wpois, order)) < tol
    lhs = (at_g.double().cpu() * x64).sum()
    rhs = (g64 * y_ref).sum()
    assert abs(lhs - rhs) <= 10 * tol * (g64.norm() * y_ref.norm())

    # inverse adjoint: ⟨A⁻ᵀg, y⟩ = ⟨g, A⁻¹y⟩ and the CPU backend
    u = cu.inverse_adjoint(g, w, order)
    assert rel(u, cpu64("run_inverse_adjoint", g64, wpois, order)) < 10 * tol
    lhs = (u.double().cpu() * y_ref).sum()
    rhs = (g64 * x64).sum()
    assert abs(lhs - rhs) <= 10 * tol * (u.double().cpu().norm() * y_ref.norm())

    # weight gradient vs torch.nn.grad.conv2d_weight on the padded input, masked
    kh, kw = shape[4], shape[5]
    dw = cu.weight_grad(x, g, order, kh, kw)
    dw_ref = torch.nn.grad.conv2d_weight(F.pad(x64, pad_of(order, kh, kw)), w64.shape, g64)
    left, _, top, _ = pad_of(order, kh, kw)
    c = shape[1]
    upper = torch.triu(torch.ones(c, c, dtype=torch.bool), 0)
    dw_ref[:, :, top, left] = torch.where(upper, torch.zeros_like(dw_ref[:, :, top, left]), dw_ref[:, :, top, left])
    assert rel(dw, dw_ref) < tol
    assert rel(dw, cpu64("run_weight_grad", x64, g64, order, kh, kw)) < tol


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(
    "shape",
    [
        (2048, 3, 6, 5, 3, 3),  # B far above 1024 (the original broke there)
        (2, 4, 256, 256, 3, 3),  # a 256×256 image: ring window of the sweep
        (1, 40, 48, 40, 3, 3),  # C·H·W too large for a whole-sample window in float64
        (1, 300, 24, 20, 3, 3),  # coefficients and ring too large for shared memory: global window
        (2, 48, 64, 64, 3, 3),  # the S2 shape: cluster sweep (ring), tiled conv
        (1, 24, 70, 40, 3, 3),  # C % 8 == 0, not % 16, ring window: one-CTA tiled sweep
        (1, 16, 40, 100, 5, 5),  # pixels per pass cover 40 rows; 100 columns: 4 column tiles
    ],
    ids=lambda s: "x".join(map(str, s)),
)
def test_large_shapes_and_fallback_windows(shape, order):
    cu = _cuda()
    x64, w64 = problem(shape, torch.float64)
    g64 = torch.randn_like(x64)
    x, w, g = (t.cuda() for t in (x64, w64, g64))
    y = cu.forward(x, w, order)
    assert rel(y, oracle_forward(x64, w64, order)) < 1e-11
    assert rel(cu.inverse(y, w, order), x64) < 1e-9
    assert rel(cu.inverse_adjoint(g, w, order), cpu64("run_inverse_adjoint", g64, w64, order)) < 1e-9
    assert rel(cu.forward_adjoint(g, w, order), cpu64("run_forward_adjoint", g64, w64, order)) < 1e-11
    kh, kw = shape[4:]
    assert rel(cu.weight_grad(x, g, order, kh, kw), cpu64("run_weight_grad", x64, g64, order, kh, kw)) < 1e-11
    # float32 on the same problem
    x32, w32, g32 = x.float(), w.float(), g.float()
    assert rel(cu.inverse(cu.forward(x32, w32, order), w32, order), x64) < 1e-4
    assert rel(cu.weight_grad(x32, g32, order, kh, kw), cpu64("run_weight_grad", x64, g64, order, kh, kw)) < 1e-4


def test_weight_grad_is_deterministic():
    cu = _cuda()
    for c in (12, 48):  # the chunked kernel (C = 12) and wgrad_tile (C = 48)
        x = torch.randn(16, c, 32, 32, device="cuda")
        g = torch.randn_like(x)
        a = cu.weight_grad(x, g, "TL", 3, 3)
        b = cu.weight_grad(x, g, "TL", 3, 3)
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize(
    "shape",
    [
        (3, 32, 40, 36, 3, 3),  # one pass (f32), two passes (f64)
        (2, 22, 7, 13, 2, 2),  # C not a multiple of 4, W < 32, partial tiles
        (2, 36, 9, 40, 1, 3),  # KH = 1, a partial column tile
        (1, 64, 10, 12, 3, 3),  # several passes over the tiles
    ],
    ids=lambda s: "x".join(map(str, s)),
)
def test_weight_grad_tile_matches_generic_and_cpu(shape, dtype, monkeypatch):
    """wgrad_tile (KW <= 3, C >= 16) vs the chunked kernel and the CPU, every order, masked
    entries exactly zero, bitwise-equal reruns."""
    cu = _cuda()
    b, c, h, w, kh, kw = shape
    torch.manual_seed(2)
    x64 = torch.randn(b, c, h, w, dtype=torch.float64)
    g64 = torch.randn_like(x64)
    x, g = x64.to("cuda", dtype), g64.to("cuda", dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for order in ORDERS:
        monkeypatch.setenv("INV_CONV_CUDA_GENERIC", "1")
        ref = cu.weight_grad(x, g, order, kh, kw)
        monkeypatch.delenv("INV_CONV_CUDA_GENERIC")
        out = cu.weight_grad(x, g, order, kh, kw)
        assert torch.equal(out, cu.weight_grad(x, g, order, kh, kw))
        assert rel(out, ref) < tol
        assert rel(out, cpu64("run_weight_grad", x64, g64, order, kh, kw)) < tol
        left, _, top, _ = pad_of(order, kh, kw)
        assert (out[:, :, top, left].triu() == 0).all()


def test_gradcheck_through_public_api():
    torch.manual_seed(0)
    for order in ORDERS:
        y = torch.randn(2, 3, 5, 4, dtype=torch.float64, device="cuda", requires_grad=True)
        w = (torch.randn(3, 3, 3, 2, dtype=torch.float64, device="cuda") * 0.2).requires_grad_()
        assert torch.autograd.gradcheck(lambda a, b: inv_conv.inv_conv2d(a, b, order), (y, w))
        assert torch.autograd.gradcheck(lambda a, b: inv_conv.conv2d(a, b, order), (y, w))


def test_cuda_graph_capture_and_replay():
    cu = _cuda()
    y = torch.randn(8, 5, 12, 10, device="cuda")
    w = torch.randn(5, 5, 3, 3, device="cuda") * 0.2
    g = torch.randn_like(y)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up (compiles the kernels outside the capture)
        for _ in range(2):
            cu.weight_grad(cu.inverse(y, w, "BR"), cu.inverse_adjoint(g, w, "BR"), "BR", 3, 3)
            cu.forward(y, w, "BR")
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        x_out = cu.inverse(y, w, "BR")
        u_out = cu.inverse_adjoint(g, w, "BR")
        dw_out = cu.weight_grad(x_out, u_out, "BR", 3, 3)
        f_out = cu.forward(x_out, w, "BR")
    for _ in range(2):  # fresh inputs each replay, copied into the captured buffers
        y.copy_(torch.randn_like(y))
        g.copy_(torch.randn_like(g))
        graph.replay()
        torch.cuda.synchronize()
        assert rel(x_out, cu.inverse(y, w, "BR")) < 1e-6
        assert rel(f_out, y) < 1e-5
        assert rel(u_out, cu.inverse_adjoint(g, w, "BR")) < 1e-6
        assert rel(dw_out, cu.weight_grad(x_out, u_out, "BR", 3, 3)) < 1e-6


def test_non_default_stream():
    cu = _cuda()
    x = torch.randn(16, 6, 20, 20, device="cuda", dtype=torch.float64)
    w = torch.randn(6, 6, 3, 3, device="cuda", dtype=torch.float64) * 0.2
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        y = cu.forward(x, w, "TR")
        x_back = cu.inverse(y, w, "TR")
        dw = cu.weight_grad(x_back, y, "TR", 3, 3)
    stream.synchronize()
    assert rel(x_back, x) < 1e-10
    assert rel(y, oracle_forward(x.cpu(), w.cpu(), "TR")) < 1e-11
    assert rel(dw, cpu64("run_weight_grad", x.cpu(), y.cpu(), "TR", 3, 3)) < 1e-10


def test_explicit_device_index_and_current_device():
    cu = _cuda()
    x = torch.randn(3, 4, 9, 7, device="cuda:0", dtype=torch.float64)
    w = torch.randn(4, 4, 2, 2, device=torch.device("cuda", 0), dtype=torch.float64) * 0.3
    with torch.cuda.device(0):
        y = cu.forward(x, w, "BL")
    last = torch.cuda.device_count() - 1
    xl, wl = x.to(f"cuda:{last}"), w.to(f"cuda:{last}")
    with torch.cuda.device(last):  # a device set current, tensors on "cuda" (no index)
        x_back = cu.inverse(y.to(f"cuda:{last}"), wl, "BL")
    assert x_back.device == xl.device
    assert rel(x_back, x) < 1e-10
    assert cu.device_info(0)["arch"].startswith("sm_")


def test_torch_compile_on_cuda():
    def step(y, w):
        x = inv_conv.inv_conv2d(y, w, "TL")
        return inv_conv.conv2d(torch.tanh(x), w, "TL").sum()

    compiled = torch.compile(step, fullgraph=True)
    y = torch.randn(4, 3, 8, 8, device="cuda")
    w = torch.randn(3, 3, 3, 3, device="cuda") * 0.2
    assert rel(compiled(y, w), step(y, w)) < 1e-5


def test_mismatched_devices_or_dtypes_raise():
    cu = _cuda()
    x = torch.randn(1, 2, 3, 3, device="cuda")
    with pytest.raises((ValueError, TypeError)):
        cu.forward(x, torch.randn(2, 2, 3, 3), "TL")
    with pytest.raises(TypeError):
        cu.forward(x, torch.randn(2, 2, 3, 3, device="cuda", dtype=torch.float64), "TL")


def test_tiled_kernels_match_generic_capture_and_are_deterministic(monkeypatch):
    """conv_tile and the cluster sweep (C % 16 == 0) vs the generic kernels, in a CUDA graph,
    and bitwise-equal reruns."""
    cu = _cuda()
    torch.manual_seed(1)
    for dtype in DTYPES:
        y = torch.randn(3, 32, 40, 36, device="cuda", dtype=dtype)
        w = torch.randn(32, 32, 3, 3, device="cuda", dtype=dtype) / (2.0 * (32 * 9) ** 0.5)
        g = torch.randn_like(y)
        for order in ORDERS:
            monkeypatch.setenv("INV_CONV_CUDA_GENERIC", "1")
            ref = [cu.forward(y, w, order), cu.inverse(y, w, order), cu.inverse_adjoint(g, w, order), cu.forward_adjoint(g, w, order)]
            monkeypatch.delenv("INV_CONV_CUDA_GENERIC")
            out = [cu.forward(y, w, order), cu.inverse(y, w, order), cu.inverse_adjoint(g, w, order), cu.forward_adjoint(g, w, order)]
            again = [cu.forward(y, w, order), cu.inverse(y, w, order), cu.inverse_adjoint(g, w, order), cu.forward_adjoint(g, w, order)]
            for a, b, c in zip(out, ref, again):
                assert rel(a, b) < (1e-5 if dtype == torch.float32 else 1e-12)
                assert torch.equal(a, c)
    y = torch.randn(4, 16, 24, 20, device="cuda")
    w = torch.randn(16, 16, 3, 3, device="cuda") / 24.0
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        cu.inverse(y, w, "TR"), cu.forward(y, w, "TR")
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        x_out = cu.inverse(y, w, "TR")
        f_out = cu.forward(x_out, w, "TR")
    y.copy_(torch.randn_like(y))
    graph.replay()
    torch.cuda.synchronize()
    assert rel(x_out, cu.inverse(y, w, "TR")) < 1e-6
    assert rel(f_out, y) < 1e-5


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_fused_inverse_backward_matches_separate_ops(dtype):
    """inv_conv::inverse_backward (one native call, negation in wgrad_reduce) is bitwise the
    separate ops; the autograd path uses it and matches the CPU."""
    from inv_conv import ops

    cu = _cuda()
    torch.manual_seed(3)
    for shape in ((4, 12, 16, 16, 3, 3), (2, 32, 20, 24, 3, 3)):
        b, c, h, w_, kh, kw = shape
        y = torch.randn(b, c, h, w_, device="cuda", dtype=dtype)
        w = torch.randn(c, c, kh, kw, device="cuda", dtype=dtype) / (2.0 * (c * kh * kw) ** 0.5)
        g = torch.randn_like(y)
        for order in ORDERS:
            x = cu.inverse(y, w, order)
            u, gw = ops._inverse_backward_op(x, g, w, order)
            u_ref = cu.inverse_adjoint(g, w, order)
            assert torch.equal(u, u_ref)
            assert torch.equal(gw, -cu.weight_grad(x, u_ref, order, kh, kw))
            yr, wr = y.clone().requires_grad_(), w.clone().requires_grad_()
            inv_conv.inv_conv2d(yr, wr, order).backward(g)
            yc, wc = y.cpu().double().requires_grad_(), w.cpu().double().requires_grad_()
            inv_conv.inv_conv2d(yc, wc, order).backward(g.cpu().double())
            tol = 1e-4 if dtype == torch.float32 else 1e-9
            assert rel(yr.grad, yc.grad) < tol
            assert rel(wr.grad, wc.grad) < tol
