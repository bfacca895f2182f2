"""The register-blocked wavefront sweep (`sweep_blk2` / `sweep_blk`: float32, C % 16 == 0, the
S2 kind of shape) against the oracle and the CPU backend in every order, odd and non-square
shapes, diagonals longer than one pass, 1×9, 2×2 and 5×5 kernels, both directions, masked
entries poisoned, every tap split (INV_CONV_SOLVE_TSPLIT) and both CTA counts
(INV_CONV_SWEEP_CTAS=1: one CTA per sample); against `sweep_tile` (INV_CONV_SWEEP_BLK=0);
bitwise reruns; a sample independent of the rest of the batch; and a check, by the profiler,
that S2 runs it. Marked `cuda`."""

import pytest
import torch

import oracle
from conftest import ORDERS
from oracle import rel

pytestmark = pytest.mark.cuda

# (B, C, H, W, KH, KW): odd and non-square, one row, one column, diagonals of 67 and 70 pixels
# (two passes of 64), kernels with 8, 3 and 24 off-anchor taps.
SHAPES = [
    (2, 16, 9, 14, 3, 3),
    (3, 48, 17, 11, 3, 3),
    (2, 32, 1, 7, 3, 3),
    (2, 16, 9, 1, 3, 3),
    (1, 16, 70, 67, 3, 3),
    (2, 16, 6, 13, 1, 9),
    (2, 32, 10, 12, 2, 2),
    (2, 16, 11, 9, 5, 5),
]
# (CTAs per sample, tap splits): the kernel takes a split only up to the kernel's taps.
SETTINGS = [(None, "8"), (None, "4"), (None, "2"), (None, "1"), ("1", "4"), ("1", "1")]


def _apply(monkeypatch, ctas, tsplit):
    for name, value in (("INV_CONV_SWEEP_CTAS", ctas), ("INV_CONV_SOLVE_TSPLIT", tsplit)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def _settings(shape):
    taps = shape[4] * shape[5] - 1
    return [(c, t) for c, t in SETTINGS if int(t) <= taps]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_setting_matches_the_oracle_and_the_cpu(shape, order, monkeypatch):
    for ctas, tsplit in _settings(shape):
        _apply(monkeypatch, ctas, tsplit)
        oracle.assert_every_op_matches(shape, order, torch.float32, "cuda")


def _solves(y, g, w, order):
    from inv_conv import _cuda

    return _cuda.inverse(y, w, order), _cuda.inverse_adjoint(g, w, order)


@pytest.mark.parametrize("c", (16, 48))
def test_matches_sweep_tile_bitwise_repeatable_per_sample(c, monkeypatch):
    gen = torch.Generator(device="cuda").manual_seed(c)
    y = torch.randn(5, c, 21, 13, device="cuda", generator=gen)
    g = torch.randn(5, c, 21, 13, device="cuda", generator=gen)
    w = torch.randn(c, c, 3, 3, device="cuda", generator=gen) / (2 * 3 * c**0.5)
    for order in ORDERS:
        _apply(monkeypatch, None, None)
        monkeypatch.setenv("INV_CONV_SWEEP_BLK", "0")
        ref = _solves(y, g, w, order)
        monkeypatch.delenv("INV_CONV_SWEEP_BLK")
        for ctas, tsplit in SETTINGS:
            _apply(monkeypatch, ctas, tsplit)
            out = _solves(y, g, w, order)
            for a, b in zip(out, ref):
                assert rel(a, b) < 1e-5, (order, ctas, tsplit)
            for a, b in zip(out, _solves(y, g, w, order)):
                assert torch.equal(a, b), (order, ctas, tsplit)
            # The rest of the batch does not change a sample's solution.
            y2, g2 = y.clone(), g.clone()
            y2[1:], g2[1:] = torch.randn_like(y2[1:]), torch.randn_like(g2[1:])
            for a, b in zip(out, _solves(y2, g2, w, order)):
                assert torch.equal(a[0], b[0]), (order, ctas, tsplit)


@pytest.mark.parametrize("blk, kernel", [(None, "sweep_blk2_f32"), ("0", "sweep_tile2_f32")])
def test_s2_runs_the_register_blocked_sweep(blk, kernel, monkeypatch):
    from torch.profiler import ProfilerActivity, profile

    _apply(monkeypatch, None, None)
    if blk is not None:
        monkeypatch.setenv("INV_CONV_SWEEP_BLK", blk)
    y = torch.randn(2, 48, 64, 64, device="cuda")
    w = torch.randn(48, 48, 3, 3, device="cuda") / 40
    _solves(y, y, w, "TL")
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        _solves(y, y, w, "TL")
        torch.cuda.synchronize()
    names = [ev.name for ev in prof.events() if ev.device_type == torch.autograd.DeviceType.CUDA]
    sweeps = [n for n in names if n.startswith("sweep_")]
    assert sweeps == [kernel, kernel], names
