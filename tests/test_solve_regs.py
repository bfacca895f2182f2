"""The one-launch solve for the flow presets' shapes (`solve_regs`: float32, 3×3, C = 12 or 24,
every variant picked with INV_CONV_SOLVE_TSPLIT) against the oracle and the CPU backend in
every order, odd and non-square shapes, both directions, masked entries poisoned; tiled
images (one launch per tile diagonal) against the oracle and bitwise against the whole-image
solve; against the generic kernels (INV_CONV_CUDA_GENERIC=1); bitwise reruns; a sample
independent of the rest of the batch; and a check, by the profiler, that these shapes really
run it. Marked `cuda`."""

import pytest
import torch

import oracle
from conftest import ORDERS
from oracle import rel

pytestmark = pytest.mark.cuda

# (B, C, H, W, KH, KW): odd and non-square, one row, one column, a diagonal longer than a
# block's pixel slots (C = 24 at 16 × 20: two passes), the largest window that fits (64²),
# the presets' S1 shape, and a 1×9 kernel (also 8 off-anchor taps).
SHAPES = [
    (3, 12, 16, 11, 3, 3),
    (2, 12, 1, 7, 3, 3),
    (2, 12, 9, 1, 3, 3),
    (2, 24, 9, 14, 3, 3),
    (2, 24, 16, 20, 3, 3),
    (1, 12, 64, 64, 3, 3),
    (64, 12, 32, 32, 3, 3),
    (2, 12, 6, 13, 1, 9),
]
VARIANTS = {12: ("4", "8", "1"), 24: ("4", "8", "2")}


def _variants(shape):
    return VARIANTS[shape[1]]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_variant_matches_the_oracle_and_the_cpu(shape, order, monkeypatch):
    for tsplit in _variants(shape):
        monkeypatch.setenv("INV_CONV_SOLVE_TSPLIT", tsplit)
        oracle.assert_every_op_matches(shape, order, torch.float32, "cuda")


# Tiled solves, (shape, INV_CONV_SOLVE_TILE): partial tiles in both directions, a one-row
# image, 1×9 and 9×1 kernels whose border spans three earlier tiles; and (cap None) images too
# large for one block, which the plan cuts itself (C = 12: 5 × 3 tiles of 26 × 24; C = 24:
# 4 × 6 tiles of 13 × 15).
TILED = [
    ((2, 12, 13, 17, 3, 3), "5"),
    ((2, 24, 11, 9, 3, 3), "4"),
    ((1, 12, 1, 23, 3, 3), "6"),
    ((2, 12, 6, 13, 1, 9), "3"),
    ((2, 12, 14, 5, 9, 1), "3"),
    ((2, 12, 130, 70, 3, 3), None),
    ((1, 24, 50, 90, 3, 3), None),
]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shape, cap", TILED, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_tiled_solves_match_the_oracle_and_the_cpu(shape, cap, order, monkeypatch):
    if cap:
        monkeypatch.setenv("INV_CONV_SOLVE_TILE", cap)
    for tsplit in _variants(shape):
        monkeypatch.setenv("INV_CONV_SOLVE_TSPLIT", tsplit)
        oracle.assert_every_op_matches(shape, order, torch.float32, "cuda")


@pytest.mark.parametrize("pdl", ["1", "0"], ids=["programmatic", "serial"])
@pytest.mark.parametrize("c", (12, 24))
def test_tiles_give_the_whole_image_solve_bitwise(c, pdl, monkeypatch):
    """A tile's border holds the same solved values the whole-image window would, and every
    pixel's sums run in the same order: tiling changes no bit (with the later tile diagonals
    launched programmatically or not, INV_CONV_PDL)."""
    monkeypatch.setenv("INV_CONV_PDL", pdl)
    gen = torch.Generator(device="cuda").manual_seed(c + 1)
    y = torch.randn(3, c, 19, 23, device="cuda", generator=gen)
    g = torch.randn(3, c, 19, 23, device="cuda", generator=gen)
    w = torch.randn(c, c, 3, 3, device="cuda", generator=gen) / (2 * 3 * c**0.5)
    for order in ORDERS:
        monkeypatch.delenv("INV_CONV_SOLVE_TILE", raising=False)
        whole = _solves(y, g, w, order)
        for cap in ("1", "4", "7", "16"):
            monkeypatch.setenv("INV_CONV_SOLVE_TILE", cap)
            for a, b in zip(_solves(y, g, w, order), whole):
                assert torch.equal(a, b), (order, cap)


def _solves(y, g, w, order):
    from inv_conv import _cuda

    return _cuda.inverse(y, w, order), _cuda.inverse_adjoint(g, w, order)


@pytest.mark.parametrize("c", (12, 24))
def test_matches_the_generic_kernels_bitwise_repeatable_per_sample(c, monkeypatch):
    gen = torch.Generator(device="cuda").manual_seed(c)
    y = torch.randn(5, c, 17, 13, device="cuda", generator=gen)
    g = torch.randn(5, c, 17, 13, device="cuda", generator=gen)
    w = torch.randn(c, c, 3, 3, device="cuda", generator=gen) / (2 * 3 * c**0.5)
    for order in ORDERS:
        monkeypatch.setenv("INV_CONV_CUDA_GENERIC", "1")
        ref = _solves(y, g, w, order)
        monkeypatch.delenv("INV_CONV_CUDA_GENERIC")
        for tsplit in VARIANTS[c]:
            monkeypatch.setenv("INV_CONV_SOLVE_TSPLIT", tsplit)
            out = _solves(y, g, w, order)
            for a, b in zip(out, ref):
                assert rel(a, b) < 1e-5, (order, tsplit)
            for a, b in zip(out, _solves(y, g, w, order)):
                assert torch.equal(a, b), (order, tsplit)
            # The rest of the batch does not change a sample's solution.
            y2, g2 = y.clone(), g.clone()
            y2[1:], g2[1:] = torch.randn_like(y2[1:]), torch.randn_like(g2[1:])
            for a, b in zip(out, _solves(y2, g2, w, order)):
                assert torch.equal(a[0], b[0]), (order, tsplit)


def test_gradients_through_the_autograd_path_match_the_cpu():
    import inv_conv

    gen = torch.Generator().manual_seed(5)
    y = torch.randn(3, 12, 10, 15, generator=gen, dtype=torch.float64)
    w = torch.randn(12, 12, 3, 3, generator=gen, dtype=torch.float64) / 20
    for order in ORDERS:
        grads = []
        for dev, dt in (("cpu", torch.float64), ("cuda", torch.float32)):
            yd = y.to(dev, dt, copy=True).requires_grad_(True)
            wd = w.to(dev, dt, copy=True).requires_grad_(True)
            x = inv_conv.inv_conv2d(yd, wd, order)
            (x * torch.linspace(-1, 1, x.numel(), device=dev, dtype=dt).view_as(x)).sum().backward()
            grads.append((x.detach(), yd.grad, wd.grad))
        for a, b in zip(grads[1], grads[0]):
            assert rel(a, b) < 1e-4, order


@pytest.mark.parametrize(
    "shape, kernel, launches",
    [
        ((64, 12, 32, 32), "solve_regs_c12_t4_o4_f32", 1),
        ((64, 24, 8, 8), "solve_regs_c24_t2_o1_f32", 1),
        ((2, 12, 128, 128), "solve_regs_c12_t4_o4_f32", 7),  # 4 × 4 tiles: 7 tile diagonals
    ],
)
def test_the_presets_shapes_run_one_launch(shape, kernel, launches):
    """Each direction of the solve is one kernel at these shapes (one launch per tile
    diagonal), and float64 keeps the generic path."""
    from torch.profiler import ProfilerActivity, profile

    c = shape[1]
    y = torch.randn(*shape, device="cuda")
    w = torch.randn(c, c, 3, 3, device="cuda") / 20
    _solves(y, y, w, "TL")
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        _solves(y, y, w, "TL")
        _solves(y.double(), y.double(), w.double(), "TL")
        torch.cuda.synchronize()
    names = [ev.name for ev in prof.events() if ev.device_type == torch.autograd.DeviceType.CUDA]
    assert names.count(kernel) == 2 * launches, names
    f64 = [n for n in names if n.endswith("_f64")]
    assert f64.count("channel_mix_f64") == 2 and any(n.startswith("sweep_") for n in f64), names
    assert not [n for n in names if n.endswith("_f32") and n != kernel], names
