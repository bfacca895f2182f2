"""LU-parametrised invertible matrices: a dense linear flow layer for flat inputs."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .base import FlowLayer


def random_orthogonal(n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A random n x n orthogonal matrix (QR of a Gaussian matrix, sign-fixed)."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


class LUMatrix(nn.Module):
    """An invertible n x n matrix ``W = P L (U + diag(sign * exp(log_abs_diag)))``.

    ``P`` is a fixed permutation, ``L`` unit lower-triangular, ``U`` strictly upper-triangular
    (Glow's LU parametrisation). ``log|det W| = Σ log_abs_diag`` costs O(n) and ``W`` stays
    invertible for any parameter values. Initialised from a random orthogonal matrix.
    """

    def __init__(self, n: int):
        super().__init__()
        self.n = int(n)
        w0 = random_orthogonal(self.n)
        p, lower, upper = torch.linalg.lu(w0)
        diag = torch.diagonal(upper)
        self.register_buffer("permutation", p)
        self.register_buffer("sign_diag", torch.sign(diag))
        self.register_buffer("lower_mask", torch.tril(torch.ones(self.n, self.n), diagonal=-1))
        self.register_buffer("eye", torch.eye(self.n))
        self.lower = nn.Parameter(lower * self.lower_mask)
        self.upper = nn.Parameter(upper * self.lower_mask.T)
        self.log_abs_diag = nn.Parameter(torch.log(torch.abs(diag)))

    def _factors(self):
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_diag * self.log_abs_diag.exp())
        return lower, upper

    def weight(self) -> torch.Tensor:
        """The matrix W (n x n)."""
        lower, upper = self._factors()
        return self.permutation @ lower @ upper

    def inverse_weight(self) -> torch.Tensor:
        """W^{-1} via two triangular solves (no general matrix inverse)."""
        lower, upper = self._factors()
        lower_inv_pt = torch.linalg.solve_triangular(lower, self.permutation.T, upper=False,
                                                     unitriangular=True)
        return torch.linalg.solve_triangular(upper, lower_inv_pt, upper=True)

    def logabsdet(self) -> torch.Tensor:
        """log|det W| (a scalar)."""
        return self.log_abs_diag.sum()


class DenseMatrix(nn.Module):
    """An unconstrained n x n matrix initialised orthogonal; log|det| by ``slogdet``."""

    def __init__(self, n: int):
        super().__init__()
        self.n = int(n)
        self.matrix = nn.Parameter(random_orthogonal(self.n))

    def weight(self) -> torch.Tensor:
        return self.matrix

    def inverse_weight(self) -> torch.Tensor:
        return torch.linalg.inv(self.matrix)

    def logabsdet(self) -> torch.Tensor:
        return torch.linalg.slogdet(self.matrix)[1]


class LULinear(FlowLayer):
    """Invertible dense layer on flat inputs: ``y = x W^T + b`` with ``x`` of shape (B, D),
    ``W`` LU-parametrised (:class:`LUMatrix`). ``logdet = log|det W|`` per sample.
    Used by the ``fc`` model on flattened images."""

    def __init__(self, num_features: int, bias: bool = True):
        super().__init__()
        self.num_features = int(num_features)
        self.matrix = LUMatrix(num_features)
        self.bias = nn.Parameter(torch.zeros(num_features)) if bias else None

    def forward(self, x, context=None):
        if x.dim() != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"LULinear expects (B, {self.num_features}), got {tuple(x.shape)}")
        y = x @ self.matrix.weight().T
        if self.bias is not None:
            y = y + self.bias
        return y, self.matrix.logabsdet().expand(x.shape[0])

    def reverse(self, y, context=None):
        if self.bias is not None:
            y = y - self.bias
        return y @ self.matrix.inverse_weight().T

    def extra_repr(self) -> str:
        return f"{self.num_features}"
