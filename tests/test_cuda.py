"""CUDA-only behaviour against the one oracle (tests/oracle.py) and the CPU backend: the tiled
kernels' shapes, fallback windows of large problems, kernel plans (tiled vs generic, fused
backward), determinism, CUDA graphs, streams and device indices. What every backend must do
runs on CUDA too from the bodies in test_ops.py and the other device-parametrised tests.

Marked `cuda`: skipped where there is no GPU (CI). Inputs are fresh random draws; outputs are
poisoned-free by construction (torch.empty + every element checked against a reference).
"""

import pytest
import torch

import inv_conv
import oracle
from inv_conv import _dispatch
from oracle import rel

from conftest import ORDERS, random_problem

pytestmark = pytest.mark.cuda

DTYPES = (torch.float32, torch.float64)


def _cuda():
    from inv_conv import _cuda

    return _cuda


def problem(shape, dtype=torch.float64):
    # Scaled so that the inverse stays well conditioned at every size tested.
    c, kh, kw = shape[1], shape[4], shape[5]
    return random_problem(shape, dtype, weight_scale=1 / (2.0 * (c * kh * kw) ** 0.5))


def cpu64(name, *args):
    return getattr(_dispatch, name)(*args)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("order", ORDERS)
# C % 16 == 0: the tiled conv (partial tiles, K up to 5) and the 2-CTA cluster sweep (the other
# shapes of the contract run on CUDA in test_ops.test_every_op_matches_the_oracle_and_the_cpu).
@pytest.mark.parametrize("shape", [(2, 16, 5, 37, 3, 3), (3, 32, 18, 9, 5, 2)], ids=lambda s: "x".join(map(str, s)))
def test_tiled_shapes_match_the_oracle_and_the_cpu(shape, order, dtype):
    oracle.assert_every_op_matches(shape, order, dtype, "cuda")


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
    assert rel(y, oracle.conv2d(x64, w64, order)) < 1e-11
    assert rel(cu.inverse(y, w, order), x64) < 1e-9
    assert rel(cu.inverse_adjoint(g, w, order), cpu64("run_inverse_adjoint", g64, w64, order)) < 1e-9
    assert rel(cu.forward_adjoint(g, w, order), cpu64("run_forward_adjoint", g64, w64, order)) < 1e-11
    kh, kw = shape[4:]
    assert rel(cu.weight_grad(x, g, order, kh, kw), cpu64("run_weight_grad", x64, g64, order, kh, kw)) < 1e-11
    # float32 on the same problem
    x32, w32, g32 = x.float(), w.float(), g.float()
    assert rel(cu.inverse(cu.forward(x32, w32, order), w32, order), x64) < 1e-4
    assert rel(cu.weight_grad(x32, g32, order, kh, kw), cpu64("run_weight_grad", x64, g64, order, kh, kw)) < 1e-4


@pytest.mark.parametrize("c", [12, 16, 24, 32, 48, 5, 20, 44, 52])
def test_channel_mix_widths(c, monkeypatch):
    """z = P·rhs before the sweep (kernels/conv.cu channel_mix): the widths with a compiled-in
    pass (C = 12, 16, 24, 32, 48) and others, float32, every order, both directions, against
    float64 on the CPU. The generic sweep is forced so that every shape goes through it."""
    monkeypatch.setenv("INV_CONV_CUDA_GENERIC", "1")
    cu = _cuda()
    shape = (3, c, 7, 9, 3, 3)
    x64, w64 = problem(shape, torch.float64)
    g64 = torch.randn_like(x64)
    x, w, g = (t.to("cuda", torch.float32) for t in (x64, w64, g64))
    for order in ORDERS:
        y64 = cpu64("run_forward", x64, w64, order)
        assert rel(cu.inverse(y64.to("cuda", torch.float32), w, order), x64) < 1e-5
        assert rel(cu.inverse_adjoint(g, w, order), cpu64("run_inverse_adjoint", g64, w64, order)) < 1e-5


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
        (20, 20, 30, 70, 3, 3),  # more tiles than blocks: the double-buffered staging
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
        assert (out[oracle.masked_entries(c, kh, kw, order, out.device)] == 0).all()


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
    assert rel(y, oracle.conv2d(x.cpu(), w.cpu(), "TR")) < 1e-11
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


def test_mismatched_devices_or_dtypes_raise():
    cu = _cuda()
    x = torch.randn(1, 2, 3, 3, device="cuda")
    with pytest.raises((ValueError, TypeError)):
        cu.forward(x, torch.randn(2, 2, 3, 3), "TL")
    with pytest.raises(TypeError):
        cu.forward(x, torch.randn(2, 2, 3, 3, device="cuda", dtype=torch.float64), "TL")
    # The public API names the arguments and their devices.
    for fn, name in ((inv_conv.conv2d, "x"), (inv_conv.inv_conv2d, "y"), (inv_conv.inv_conv2d_transpose, "grad")):
        with pytest.raises(ValueError, match=rf"{name} and weight must be on the same device; got cuda:0 and cpu"):
            fn(x, torch.randn(2, 2, 3, 3), "TL")
    with pytest.raises(ValueError, match=r"x and grad must be on the same device; got cuda:0 and cpu"):
        inv_conv.conv2d_weight_grad(x, x.cpu(), 3)


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
