"""Uniform dequantization of 8-bit pixel values."""

from __future__ import annotations

import warnings
from typing import Optional, Tuple

import torch

from .base import FlowLayer, zero_logdet


class Dequantization(FlowLayer):
    """Uniform dequantization: ``y = x + u`` with ``u ~ U[0, 1)``, independently per pixel.

    Input convention (the whole model relies on it): ``x`` holds the raw pixel values
    ``k ∈ {0, 1, ..., num_levels - 1}`` (as float or integer tensor, NOT scaled to [0, 1]).
    The output lives in ``[0, num_levels)^D``; the flow's ``log_prob`` is therefore a density
    w.r.t. Lebesgue measure on ``[0, 256)^D``, and since every integer cell has unit volume,
    ``E_u[log p(x + u)]`` lower-bounds the discrete log-likelihood of ``x`` (Theis et al. 2016).
    Bits per dimension are then ``-log_prob / (D ln 2)`` with no extra constant.

    The log-determinant is 0 (a shift). ``reverse`` re-quantizes: ``floor(y)`` clamped to
    ``[0, num_levels - 1]`` — for samples this yields valid pixel values.

    ``midpoint = True`` replaces the noise by ``u = 0.5`` (deterministic). ``FlowSequential.
    reconstruct`` uses it so that a float32 round-trip error below half a pixel level does not
    flip ``floor`` at a bin edge (with random ``u`` a few pixels per batch would come back off
    by one even though the flow is exact to ~1e-4).
    """

    is_preprocessing = True

    def __init__(self, num_levels: int = 256):
        super().__init__()
        self.num_levels = int(num_levels)
        self._checked_input_range = False
        self.midpoint = False

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        if not self._checked_input_range:
            # One-time sanity check: a [0, 1]-scaled input would silently give wrong bits/dim.
            self._checked_input_range = True
            peak = float(x.detach().max())
            if 0.0 < peak <= 1.0:
                warnings.warn(
                    "Dequantization expects raw pixel values in {0..%d}, but the first batch "
                    "has max %.3g; was the data scaled to [0, 1]?" % (self.num_levels - 1, peak),
                    stacklevel=2)
        noise = torch.full_like(x, 0.5) if self.midpoint else torch.rand_like(x)
        return x + noise, zero_logdet(x)

    def reverse(self, y: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        return torch.floor(y).clamp(0, self.num_levels - 1)

    def extra_repr(self) -> str:
        return f"num_levels={self.num_levels}"
