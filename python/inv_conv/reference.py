"""Pure-PyTorch reference implementation of the op contract (README, "The contract in brief").

Independent of the Rust extension: built only from ``torch.nn.functional.conv2d`` and dense
linear algebra. It is the oracle of the tests and the slow, autograd-differentiable path that
``InvConv2d(dense_reference=True)`` uses (small images only: the dense matrix has
``(C·H·W)²`` entries).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._args import normalise_order


def padding(order: str, kernel_h: int, kernel_w: int) -> tuple[int, int, int, int]:
    """Padding (left, right, top, bottom) of ``order``, in ``F.pad``'s convention."""
    order = normalise_order(order)
    left, right = (kernel_w - 1, 0) if order in ("TL", "BL") else (0, kernel_w - 1)
    top, bottom = (kernel_h - 1, 0) if order in ("TL", "TR") else (0, kernel_h - 1)
    return left, right, top, bottom


def anchor(order: str, kernel_h: int, kernel_w: int) -> tuple[int, int]:
    """Position (i, j) in the weight of the tap that reads the output pixel itself."""
    left, _, top, _ = padding(order, kernel_h, kernel_w)
    return top, left


def effective_weight(weight: torch.Tensor, order: str) -> torch.Tensor:
    """ŵ: ``weight`` with the anchor tap's channel matrix made unit lower-triangular.

    Masked entries are replaced (not multiplied), so NaN or Inf there is ignored.
    """
    c, _, kh, kw = weight.shape
    ai, aj = anchor(order, kh, kw)
    rows = torch.arange(c, device=weight.device)
    keep = rows[:, None] > rows[None, :]
    eye = torch.eye(c, dtype=weight.dtype, device=weight.device)
    anchor_matrix = torch.where(keep, weight[:, :, ai, aj], eye)
    out = weight.clone()
    out[:, :, ai, aj] = anchor_matrix
    return out


def conv2d(x: torch.Tensor, weight: torch.Tensor, order: str = "TL") -> torch.Tensor:
    """Sampling direction: ``conv2d(pad(x, PAD[order]), ŵ)``, exactly this expression."""
    kh, kw = weight.shape[2:]
    return F.conv2d(F.pad(x, padding(order, kh, kw)), effective_weight(weight, order))


def dense_matrix(weight: torch.Tensor, order: str, height: int, width: int) -> torch.Tensor:
    """The map A as a dense (D, D) matrix, D = C·H·W, in NCHW flattening (differentiable)."""
    c = weight.shape[0]
    d = c * height * width
    basis = torch.eye(d, dtype=weight.dtype, device=weight.device).reshape(d, c, height, width)
    return conv2d(basis, weight, order).reshape(d, d).T


def sweep_permutation(channels: int, height: int, width: int, order: str) -> torch.Tensor:
    """A permutation of the NCHW flat indices under which A is unit lower-triangular: pixels
    row by row from the order's starting corner, channels ascending within a pixel."""
    order = normalise_order(order)
    rows = range(height) if order in ("TL", "TR") else range(height - 1, -1, -1)
    cols = list(range(width) if order in ("TL", "BL") else range(width - 1, -1, -1))
    perm = [(ch * height + h) * width + w for h in rows for w in cols for ch in range(channels)]
    return torch.tensor(perm, dtype=torch.long)


def inv_conv2d(y: torch.Tensor, weight: torch.Tensor, order: str = "TL") -> torch.Tensor:
    """Density direction ``A⁻¹ y`` by a dense unit-triangular solve (differentiable)."""
    b, c, h, w = y.shape
    perm = sweep_permutation(c, h, w, order).to(y.device)
    a = dense_matrix(weight, order, h, w)[perm][:, perm]
    rhs = y.reshape(b, -1)[:, perm].T
    sol = torch.linalg.solve_triangular(a, rhs, upper=False, unitriangular=True).T
    return sol[:, torch.argsort(perm)].reshape(b, c, h, w)
