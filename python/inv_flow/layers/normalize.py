"""Fixed affine scaling and the logit transform used as pre-processing."""

from __future__ import annotations

import math

import torch

from .base import FlowLayer, sum_except_batch


class Normalization(FlowLayer):
    """Fixed elementwise affine map ``y = x * scale + shift``.

    ``logdet = D * log|scale|`` where D is the number of elements per sample.
    Typical use: ``Normalization(scale=1/256)`` maps dequantized pixels ``[0, 256)`` to ``[0, 1)``.
    """

    is_preprocessing = True

    def __init__(self, scale: float, shift: float = 0.0):
        super().__init__()
        if scale == 0:
            raise ValueError("Normalization scale must be non-zero")
        self.scale = float(scale)
        self.shift = float(shift)

    def forward(self, x, context=None):
        num_elements = math.prod(x.shape[1:])
        logdet = x.new_full((x.shape[0],), num_elements * math.log(abs(self.scale)))
        return x * self.scale + self.shift, logdet

    def reverse(self, y, context=None):
        return (y - self.shift) / self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}, shift={self.shift}"


class LogitTransform(FlowLayer):
    """Logit transform with boundary shrinkage (RealNVP, Dinh et al. 2017).

    For ``x ∈ [0, 1]``: ``p = alpha + (1 - 2 alpha) x`` and ``y = log p - log(1 - p)``.  The map
    is a bijection from ``(-alpha, 1 - alpha) / (1 - 2 alpha)`` (slightly wider than [0, 1], so
    continuous samples may land just outside it) onto the real line; an input with ``p`` outside
    ``(0, 1)`` is a ValueError (e.g. the scaling step to [0, 1] is missing), not NaN.
    ``alpha`` keeps ``p`` away from 0 and 1 so ``y`` stays finite.
    ``logdet = Σ [log(1 - 2 alpha) - log p - log(1 - p)]``.
    """

    is_preprocessing = True

    def __init__(self, alpha: float = 0.05):
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"LogitTransform alpha must be in [0, 0.5), got {alpha}")
        self.alpha = float(alpha)

    def _check_domain(self, x, p) -> None:
        low, high = torch.stack(torch.aminmax(p.detach())).tolist()  # one host sync
        if not (low > 0 and high < 1):  # outside the logit's domain: NaN or inf
            raise ValueError(
                f"LogitTransform expects inputs in [0, 1] (alpha={self.alpha} keeps them finite), "
                f"got values in [{float(x.detach().min()):.4g}, {float(x.detach().max()):.4g}]; "
                "put Normalization(scale=1/num_levels) between Dequantization and "
                "LogitTransform (dequantized pixels lie in [0, num_levels))")

    def forward(self, x, context=None):
        p = self.alpha + (1.0 - 2.0 * self.alpha) * x
        # Checked in eager mode only: under torch.compile the check would break the graph.
        if not torch.compiler.is_compiling():
            self._check_domain(x, p)
        log_p, log_1mp = torch.log(p), torch.log1p(-p)
        y = log_p - log_1mp
        logdet = sum_except_batch(math.log1p(-2.0 * self.alpha) - log_p - log_1mp)
        return y, logdet

    def reverse(self, y, context=None):
        return (torch.sigmoid(y) - self.alpha) / (1.0 - 2.0 * self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"
