"""Invertible elementwise activations with exact inverses and log-determinants.

All act on ``(B, C, *spatial)`` tensors; per-channel parameters broadcast over spatial dims
(for flat ``(B, D)`` inputs every feature is its own "channel").
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .base import FlowLayer, channel_view, sum_except_batch


class SmoothLeakyReLU(FlowLayer):
    """Smooth leaky ReLU ``y = alpha x + (1 - alpha) r(x)`` with the smooth ReLU
    ``r(x) = (x + sqrt(x^2 + 1) - 1) / 2`` (a hyperbola: r(0) = 0, r -> x for x -> +inf,
    r -> 0 for x -> -inf).

    The slope ``alpha + (1 - alpha)(1 + x / sqrt(x^2 + 1)) / 2`` lies in ``(alpha, 1)``, so the
    map is strictly monotone, and — unlike a softplus blend — its inverse has a closed form:
    with ``beta = (1 - alpha)/2``, ``a = (1 + alpha)/2`` and ``t = y + beta``, squaring
    ``t - a x = beta sqrt(x^2 + 1)`` gives ``alpha x^2 - 2 a t x + t^2 - beta^2 = 0`` whose
    admissible (smaller) root is ``x = (a t - beta sqrt(t^2 + alpha)) / alpha``
    = ``(t^2 - beta^2) / (a t + beta sqrt(t^2 + alpha))`` (the second form is used for t > 0 to
    avoid cancellation). Exact to float precision, no iteration.
    """

    def __init__(self, alpha: float = 0.3):
        super().__init__()
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"SmoothLeakyReLU alpha must be in (0, 1), got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x, context=None):
        alpha, beta = self.alpha, (1.0 - self.alpha) / 2.0
        root = torch.sqrt(x * x + 1.0)
        y = alpha * x + beta * (x + root - 1.0)
        slope = alpha + beta * (1.0 + x / root)
        return y, sum_except_batch(torch.log(slope))

    def reverse(self, y, context=None):
        alpha, beta = self.alpha, (1.0 - self.alpha) / 2.0
        a = (1.0 + alpha) / 2.0
        t = y + beta
        root = torch.sqrt(t * t + alpha)
        direct = (a * t - beta * root) / alpha
        conjugate = (t * t - beta * beta) / (a * t + beta * root)
        return torch.where(t > 0, conjugate, direct)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class LearnableLeakyReLU(FlowLayer):
    """Leaky ReLU with a learnable per-channel negative slope ``exp(log_slope) > 0``:
    ``y = x`` for ``x >= 0`` and ``slope * x`` otherwise. ``logdet = Σ_{x<0} log slope``."""

    def __init__(self, num_channels: int, init_slope: float = 0.5):
        super().__init__()
        if init_slope <= 0:
            raise ValueError("init_slope must be positive")
        self.num_channels = int(num_channels)
        self.log_slope = nn.Parameter(torch.full((num_channels,), math.log(init_slope)))

    def forward(self, x, context=None):
        log_slope = channel_view(self.log_slope, x)
        negative = x < 0
        y = torch.where(negative, x * log_slope.exp(), x)
        logdet = sum_except_batch(torch.where(negative, log_slope.expand_as(x),
                                              torch.zeros_like(x)))
        return y, logdet

    def reverse(self, y, context=None):
        return torch.where(y < 0, y * channel_view(torch.exp(-self.log_slope), y), y)

    def extra_repr(self) -> str:
        return f"{self.num_channels}"


class InvertibleSELU(FlowLayer):
    """SELU ``y = lam x`` (x > 0), ``lam alpha (e^x - 1)`` (x <= 0), with the standard
    constants. Strictly increasing onto ``(-lam alpha, inf)``; the inverse is
    ``y / lam`` (y > 0), ``log(1 + y / (lam alpha))`` (y <= 0). Latent values below
    ``-lam alpha`` (possible when sampling) are outside the range and are clamped just inside.
    ``logdet = Σ [log lam  (x > 0);  log(lam alpha) + x  (x <= 0)]``.
    """

    scale = 1.0507009873554804934193349852946
    alpha = 1.6732632423543772848170429916717

    def forward(self, x, context=None):
        positive = x > 0
        x_neg = torch.clamp(x, max=0.0)  # keeps the unused branch finite (no inf/NaN grads)
        y = torch.where(positive, self.scale * x, self.scale * self.alpha * torch.expm1(x_neg))
        log_slope = torch.where(positive, torch.full_like(x, math.log(self.scale)),
                                math.log(self.scale * self.alpha) + x_neg)
        return y, sum_except_batch(log_slope)

    def reverse(self, y, context=None):
        lower_limit = -1.0 + torch.finfo(y.dtype).eps
        ratio = torch.clamp(y, max=0.0) / (self.scale * self.alpha)
        x_neg = torch.log1p(torch.clamp(ratio, min=lower_limit))
        return torch.where(y > 0, y / self.scale, x_neg)


class SplineActivation(FlowLayer):
    """Elementwise monotone rational-quadratic spline (Durkan et al. 2019, "Neural Spline
    Flows") with ``num_bins`` learned bins per channel on ``[-tail_bound, tail_bound]`` and
    identity tails outside (boundary derivatives fixed to 1, so the map is C^1).

    Parameters are initialised so the spline is the identity (uniform bins, unit derivatives).
    """

    def __init__(self, num_channels: int, num_bins: int = 10, tail_bound: float = 10.0,
                 min_bin_width: float = 1e-3, min_bin_height: float = 1e-3,
                 min_derivative: float = 1e-3):
        super().__init__()
        if num_bins < 1 or num_bins * max(min_bin_width, min_bin_height) >= 1.0:
            raise ValueError(f"invalid num_bins={num_bins} for the minimum bin sizes")
        if tail_bound <= 0:
            raise ValueError("tail_bound must be positive")
        self.num_channels, self.num_bins = int(num_channels), int(num_bins)
        self.tail_bound = float(tail_bound)
        self.min_bin_width, self.min_bin_height = min_bin_width, min_bin_height
        self.min_derivative = min_derivative
        self.unnormalized_widths = nn.Parameter(torch.zeros(num_channels, num_bins))
        self.unnormalized_heights = nn.Parameter(torch.zeros(num_channels, num_bins))
        # softplus(d) + min_derivative == 1  ->  identity at initialisation
        identity_derivative = math.log(math.expm1(1.0 - min_derivative))
        self.unnormalized_derivatives = nn.Parameter(
            torch.full((num_channels, num_bins - 1), identity_derivative))

    def _knots(self, unnormalized: torch.Tensor, min_size: float):
        """Bin edges (C, K+1) spanning [-B, B] exactly, and bin sizes (C, K)."""
        bound = self.tail_bound
        sizes = min_size + (1.0 - min_size * self.num_bins) * F.softmax(unnormalized, dim=-1)
        edges = F.pad(torch.cumsum(sizes, dim=-1), (1, 0))
        edges = 2.0 * bound * edges - bound
        # pin the ends exactly so searchsorted and the tails agree at +-B
        edges = torch.cat([torch.full_like(edges[:, :1], -bound), edges[:, 1:-1],
                           torch.full_like(edges[:, :1], bound)], dim=1)
        return edges, edges[:, 1:] - edges[:, :-1]

    def _derivatives(self):
        inner = self.min_derivative + F.softplus(self.unnormalized_derivatives)
        ones = torch.ones_like(inner[:, :1])
        return torch.cat([ones, inner, ones], dim=1)  # (C, K+1), unit slope at the boundary

    def _per_channel_rows(self, x):
        """(B, C, *S) -> (C, N) so each row is searched against its own channel's knots."""
        return x.transpose(0, 1).reshape(x.shape[1], -1)

    @staticmethod
    def _from_rows(rows, like):
        shape = (like.shape[1], like.shape[0]) + tuple(like.shape[2:])
        return rows.reshape(shape).transpose(0, 1)

    def _bin_params(self, values, edges_in, edges_out, widths_in, widths_out, derivatives):
        bins = torch.searchsorted(edges_in.contiguous(), values.contiguous(), right=True) - 1
        bins = bins.clamp(0, self.num_bins - 1)
        return (torch.gather(edges_in, 1, bins), torch.gather(widths_in, 1, bins),
                torch.gather(edges_out, 1, bins), torch.gather(widths_out, 1, bins),
                torch.gather(derivatives, 1, bins), torch.gather(derivatives, 1, bins + 1))

    def _locate(self, values, inverse: bool):
        """``values`` (B, C, *S) as per-channel rows, which of them lie in [-B, B], the rows
        clamped there (keeps the spline branch finite outside) and the bin parameters of each:
        ``(start, size)`` of its bin on its own side, then on the other side, and the bin's two
        knot derivatives.  The bins are searched on the x side, or the y side when ``inverse``."""
        bound, dtype = self.tail_bound, values.dtype
        x_edges, x_widths = self._knots(self.unnormalized_widths, self.min_bin_width)
        y_edges, y_heights = self._knots(self.unnormalized_heights, self.min_bin_height)
        x_side = (x_edges.to(dtype), x_widths.to(dtype))
        y_side = (y_edges.to(dtype), y_heights.to(dtype))
        (edges_in, sizes_in), (edges_out, sizes_out) = \
            (y_side, x_side) if inverse else (x_side, y_side)
        rows = self._per_channel_rows(values)
        inside = (rows >= -bound) & (rows <= bound)
        clamped = rows.clamp(-bound, bound)
        params = self._bin_params(clamped, edges_in, edges_out, sizes_in, sizes_out,
                                  self._derivatives().to(dtype))
        return rows, inside, clamped, params

    def forward(self, x, context=None):
        if x.shape[1] != self.num_channels:
            raise ValueError(f"SplineActivation expects {self.num_channels} channels, got {x.shape[1]}")
        rows, inside, clamped, (x_k, w_k, y_k, h_k, d_k, d_k1) = self._locate(x, inverse=False)
        slope = h_k / w_k
        xi = (clamped - x_k) / w_k
        xi_1mxi = xi * (1.0 - xi)
        denominator = slope + (d_k1 + d_k - 2.0 * slope) * xi_1mxi
        y_spline = y_k + h_k * (slope * xi * xi + d_k * xi_1mxi) / denominator
        derivative_numerator = slope * slope * (d_k1 * xi * xi + 2.0 * slope * xi_1mxi
                                                + d_k * (1.0 - xi) ** 2)
        log_slope = torch.log(derivative_numerator) - 2.0 * torch.log(denominator)
        y_rows = torch.where(inside, y_spline, rows)
        log_slope = torch.where(inside, log_slope, torch.zeros_like(log_slope))
        return self._from_rows(y_rows, x), sum_except_batch(self._from_rows(log_slope, x))

    def reverse(self, y, context=None):
        rows, inside, clamped, (y_k, h_k, x_k, w_k, d_k, d_k1) = self._locate(y, inverse=True)
        slope = h_k / w_k
        offset = clamped - y_k
        curvature = d_k1 + d_k - 2.0 * slope
        a = h_k * (slope - d_k) + offset * curvature
        b = h_k * d_k - offset * curvature
        c = -slope * offset
        discriminant = torch.clamp(b * b - 4.0 * a * c, min=0.0)
        xi = (2.0 * c) / (-b - torch.sqrt(discriminant))  # the root in [0, 1], stable form
        x_rows = torch.where(inside, xi * w_k + x_k, rows)
        return self._from_rows(x_rows, y)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, num_bins={self.num_bins}, tail_bound={self.tail_bound}"


ACTIVATIONS = ("SLR", "LLR", "Spline", "SELU")


def build_activation(name: Optional[str], num_channels: int, spline_bins: int = 10,
                     spline_tail_bound: float = 10.0, slr_alpha: float = 0.3
                     ) -> Optional[FlowLayer]:
    """Activation layer by config name (``None``/``"none"`` -> ``None``)."""
    if name is None or str(name).lower() == "none":
        return None
    if name == "SLR":
        return SmoothLeakyReLU(alpha=slr_alpha)
    if name == "LLR":
        return LearnableLeakyReLU(num_channels)
    if name == "Spline":
        return SplineActivation(num_channels, num_bins=spline_bins, tail_bound=spline_tail_bound)
    if name == "SELU":
        return InvertibleSELU()
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS} or None")
