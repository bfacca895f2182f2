"""The one oracle of the op contract for the tests (DESIGN.md, "The op contract").

The forward map and its inverse are :mod:`inv_conv.reference`, an independent implementation
built only from PyTorch's own ops: ``forward = F.conv2d(F.pad(x, PAD[order]), ŵ)`` and
``inverse`` = a dense unit-triangular solve of the explicit matrix. Everything else the tests
compare against is derived from those two by autograd, never by the library's backends:

- ``conv2d_transpose(g) = Aᵀ g``: the vector-Jacobian product of ``conv2d`` in ``x``;
- ``inv_conv2d_transpose(g) = A⁻ᵀ g``: the same of the dense ``inv_conv2d`` (small images);
- ``weight_grad(x, g) = Σ g · pad(x)``, zero at the masked entries: the product in ``w``.

The op tests (test_ops, test_cuda, test_fast_path) take the reference through
here (``oracle.conv2d``, ...). ``tests/cpu_ops.rs`` checks the Rust core against direct loops
over the same definition (``cargo test`` runs without Python); ``flow_oracles.py`` is a
different thing (whole-model densities by brute force).
"""

from __future__ import annotations

import torch

from inv_conv.reference import anchor, conv2d, dense_matrix, inv_conv2d, padding, sweep_permutation

__all__ = [
    "anchor", "conv2d", "conv2d_transpose", "dense_matrix", "inv_conv2d", "inv_conv2d_transpose",
    "masked_entries", "padding", "poison", "rel", "sweep_permutation", "weight_grad",
]


def _vjp(fn, primal: torch.Tensor, cotangent: torch.Tensor) -> torch.Tensor:
    """⟨cotangent, fn(·)⟩'s gradient at ``primal`` (the maps here are linear in it)."""
    primal = primal.detach().requires_grad_(True)
    with torch.enable_grad():
        (out,) = torch.autograd.grad(fn(primal), primal, cotangent)
    return out


def conv2d_transpose(g: torch.Tensor, weight: torch.Tensor, order: str = "TL") -> torch.Tensor:
    """Aᵀ g: the input-gradient of :func:`conv2d`."""
    return _vjp(lambda x: conv2d(x, weight.detach(), order), torch.zeros_like(g), g)


def inv_conv2d_transpose(g: torch.Tensor, weight: torch.Tensor, order: str = "TL") -> torch.Tensor:
    """A⁻ᵀ g: the input-gradient of the dense :func:`inv_conv2d` ((C·H·W)² memory: small only)."""
    return _vjp(lambda y: inv_conv2d(y, weight.detach(), order), torch.zeros_like(g), g)


def weight_grad(x: torch.Tensor, g: torch.Tensor, order: str, kernel_h: int, kernel_w: int) -> torch.Tensor:
    """Σ_{b,h,w} g[b,c,h,w]·pad(x)[b,c',h+i,w+j]: the weight-gradient of :func:`conv2d` (affine in
    the weight, so taken at zero), exactly zero at the masked entries."""
    c = x.shape[1]
    w0 = torch.zeros(c, c, kernel_h, kernel_w, dtype=x.dtype, device=x.device)
    return _vjp(lambda w: conv2d(x.detach(), w, order), w0, g)


def masked_entries(channels: int, kernel_h: int, kernel_w: int, order: str, device="cpu") -> torch.Tensor:
    """Boolean (C, C, KH, KW): True at the entries the mask overrides (the anchor tap's diagonal
    and upper triangle)."""
    ai, aj = anchor(order, kernel_h, kernel_w)
    out = torch.zeros(channels, channels, kernel_h, kernel_w, dtype=torch.bool, device=device)
    out[:, :, ai, aj] = torch.ones(channels, channels, dtype=torch.bool, device=device).triu()
    return out


def poison(weight: torch.Tensor, order: str) -> torch.Tensor:
    """A copy of ``weight`` with NaN on the anchor's diagonal and ±Inf above it: values an op
    that read a masked entry could not hide (NaN·0 and Inf·0 are NaN)."""
    c, _, kh, kw = weight.shape
    ai, aj = anchor(order, kh, kw)
    rows = torch.arange(c, device=weight.device)
    sign = torch.where((rows[:, None] + rows[None, :]) % 2 == 0, 1.0, -1.0).to(weight.dtype)
    block = weight[:, :, ai, aj]
    block = torch.where(rows[:, None] < rows[None, :], sign * float("inf"), block)
    block = torch.where(rows[:, None] == rows[None, :], torch.full_like(block, float("nan")), block)
    out = weight.clone()
    out[:, :, ai, aj] = block
    masked = masked_entries(c, kh, kw, order, weight.device)
    assert torch.isnan(out).sum() == c and torch.isinf(out).sum() == c * (c - 1) // 2
    assert torch.equal(out[~masked], weight[~masked]) and not torch.isfinite(out[masked]).any()
    return out


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in float64 on the CPU; ``a`` must be finite."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    assert torch.isfinite(a).all(), "non-finite values in the result"
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


# ---------------------------------------------------------------------------------------------
# The check shared by test_ops (every device) and test_cuda (shapes for the tiled kernels).
# ---------------------------------------------------------------------------------------------

#: Relative tolerances of a device result against the float64 oracle.
TOL = {torch.float32: 2e-5, torch.float64: 1e-11}


def assert_every_op_matches(shape, order: str, dtype: torch.dtype, device: str) -> None:
    """Every public op on ``device`` in ``dtype``, with the masked entries poisoned, against the
    oracle (float64) and against the CPU backend in float64."""
    import inv_conv
    from conftest import random_problem

    b, c, h, w, kh, kw = shape
    # Scaled so that the inverse stays well conditioned at every size tested.
    x64, w64 = random_problem(shape, weight_scale=1 / (2.0 * (c * kh * kw) ** 0.5))
    wpois = poison(w64, order)
    g64 = torch.randn_like(x64)
    x, wt, g = (t.to(device, dtype) for t in (x64, wpois, g64))
    tol = TOL[dtype]

    # forward vs the PyTorch expression itself (float64) and the CPU backend
    y = inv_conv.conv2d(x, wt, order)
    y_ref = conv2d(x64, w64, order)
    assert rel(y, y_ref) < tol
    assert rel(y, inv_conv.conv2d(x64, wpois, order)) < tol

    # inverse: inverse(forward(x)) = x and the CPU backend
    x_back = inv_conv.inv_conv2d(y_ref.to(device, dtype), wt, order)
    assert rel(x_back, x64) < 10 * tol
    assert rel(x_back, inv_conv.inv_conv2d(y_ref, wpois, order)) < 10 * tol

    # forward adjoint: Aᵀg vs the oracle and the CPU backend; ⟨Aᵀg, x⟩ = ⟨g, Ax⟩
    at_g = inv_conv.conv2d_transpose(g, wt, order)
    assert rel(at_g, conv2d_transpose(g64, w64, order)) < tol
    assert rel(at_g, inv_conv.conv2d_transpose(g64, wpois, order)) < tol
    lhs = (at_g.double().cpu() * x64).sum()
    rhs = (g64 * y_ref).sum()
    assert abs(lhs - rhs) <= 10 * tol * (g64.norm() * y_ref.norm())

    # inverse adjoint: Aᵀu = g with the oracle's Aᵀ, the CPU backend; ⟨A⁻ᵀg, y⟩ = ⟨g, A⁻¹y⟩
    u = inv_conv.inv_conv2d_transpose(g, wt, order)
    u64 = u.double().cpu()
    assert rel(conv2d_transpose(u64, w64, order), g64) < 10 * tol
    assert rel(u, inv_conv.inv_conv2d_transpose(g64, wpois, order)) < 10 * tol
    lhs = (u64 * y_ref).sum()
    rhs = (g64 * x64).sum()
    assert abs(lhs - rhs) <= 10 * tol * (u64.norm() * y_ref.norm())

    # weight gradient vs the oracle's (conv2d's weight-gradient) and the CPU backend; masked
    # entries exactly zero
    dw = inv_conv.conv2d_weight_grad(x, g, (kh, kw), order)
    assert rel(dw, weight_grad(x64, g64, order, kh, kw)) < tol
    assert rel(dw, inv_conv.conv2d_weight_grad(x64, g64, (kh, kw), order)) < tol
    assert (dw[masked_entries(c, kh, kw, order, dw.device)] == 0).all()
