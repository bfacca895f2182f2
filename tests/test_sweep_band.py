"""The wavefront sweep's launch variants (one block per sample, or a cluster of 2, 4 or 8 CTAs
per sample each solving a band of rows: `INV_CONV_SWEEP_CTAS`) all solve A x = y and Aᵀ u = g,
checked by applying A and Aᵀ of the test oracle (PyTorch's own convolution) in float64, for every order, odd
and non-square shapes, both dtypes. Marked `cuda` (the bands need sm_90; elsewhere every
setting falls back to one block per sample, which is checked the same way)."""

import pytest
import torch

import oracle
from conftest import ORDERS

pytestmark = pytest.mark.cuda

# (B, C, H, W, K): bands of 1..16 rows, the halo (K − 1 rows) as high as a band, C = 1, odd C.
SHAPES = [(2, 3, 5, 7, 3), (1, 1, 9, 4, 3), (3, 12, 16, 11, 3), (1, 5, 24, 6, 5), (2, 4, 8, 3, 1)]
CTAS = ("1", "2", "4", "8")
TOL = {torch.float32: 2e-5, torch.float64: 1e-11}


@pytest.mark.parametrize("ctas", CTAS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_every_sweep_variant_solves_both_directions(ctas, shape, dtype, monkeypatch):
    from inv_conv import _cuda

    monkeypatch.setenv("INV_CONV_SWEEP_CTAS", ctas)
    b, c, h, wd, k = shape
    gen = torch.Generator(device="cuda").manual_seed(hash((ctas, shape)) % 2**31)
    for order in ORDERS:
        y = torch.randn(b, c, h, wd, device="cuda", dtype=dtype, generator=gen)
        w = torch.randn(c, c, k, k, device="cuda", dtype=dtype, generator=gen) / (2 * k * c**0.5)
        x = _cuda.inverse(y, w, order)
        u = _cuda.inverse_adjoint(y, w, order)
        y64, w64 = y.double(), w.double()
        tol = TOL[dtype] * y64.norm()
        assert (oracle.conv2d(x.double(), w64, order) - y64).norm() <= tol, (order, "inverse")
        assert (oracle.conv2d_transpose(u.double(), w64, order) - y64).norm() <= tol, (order, "inverse_adjoint")
        # Each launch shape is repeatable bit for bit.
        assert torch.equal(x, _cuda.inverse(y, w, order))
        assert torch.equal(u, _cuda.inverse_adjoint(y, w, order))


def test_band_split_is_bitwise_independent_of_the_other_samples(monkeypatch):
    """A sample's solution does not depend on what the rest of the batch holds."""
    from inv_conv import _cuda

    monkeypatch.setenv("INV_CONV_SWEEP_CTAS", "4")
    y = torch.randn(3, 12, 20, 13, device="cuda")
    w = torch.randn(12, 12, 3, 3, device="cuda") * 0.05
    x = _cuda.inverse(y, w, "BR")
    y2 = y.clone()
    y2[1:] = torch.randn_like(y2[1:])
    assert torch.equal(_cuda.inverse(y2, w, "BR")[0], x[0])
