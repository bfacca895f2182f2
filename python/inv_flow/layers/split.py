"""Multi-scale factoring-out of channels with a learned conditional Gaussian prior."""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn

from .base import FlowLayer, sum_except_batch

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class SplitPrior(FlowLayer):
    """Glow's multi-scale split: ``x`` (B, C, H, W) is split into ``kept = x[:, :C//2]``, which
    continues through the flow, and ``factored = x[:, C//2:]``, which is modelled by
    ``N(mean(kept), exp(log_std(kept))^2)`` elementwise, with ``(mean, log_std)`` from a
    zero-initialised 3x3 conv of ``kept`` (so the prior starts as a standard normal).

    ``forward`` returns ``(kept, log p(factored | kept))``: the conditional log-density plays
    the role of the log-determinant in the flow's sum, so ``FlowSequential.log_prob`` includes
    it. Use :meth:`split_forward` to also obtain ``factored`` (exact reconstruction), and
    ``reverse(kept, factored=None, temperature=1.0)`` which samples ``factored`` from the
    prior when it is not given.
    """

    def __init__(self, num_channels: int, kernel_size: int = 3):
        super().__init__()
        if num_channels < 2:
            raise ValueError(f"SplitPrior needs at least 2 channels, got {num_channels}")
        self.num_channels = int(num_channels)
        self.num_kept = num_channels // 2
        self.num_factored = num_channels - self.num_kept
        self.prior_net = nn.Conv2d(self.num_kept, 2 * self.num_factored, kernel_size,
                                   padding=kernel_size // 2)
        nn.init.zeros_(self.prior_net.weight)
        nn.init.zeros_(self.prior_net.bias)

    def prior_params(self, kept: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-std of the factored-out half given the kept half."""
        mean, log_std = torch.unflatten(self.prior_net(kept), 1, (-1, 2)).unbind(2)  # even, odd channels
        return mean, log_std

    def split_forward(self, x: torch.Tensor, context=None
                      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(kept, log p(factored | kept) [B], factored)``."""
        kept, factored = x.split_with_sizes((self.num_kept, self.num_factored), dim=1)
        mean, log_std = self.prior_params(kept)
        eps = (factored - mean) * torch.exp(-log_std)
        log_density = sum_except_batch(-0.5 * eps * eps - log_std - _HALF_LOG_2PI)
        return kept, log_density, factored

    def forward(self, x, context=None):
        kept, log_density, _ = self.split_forward(x, context)
        return kept, log_density

    def reverse(self, y, context=None, factored: Optional[torch.Tensor] = None,
                temperature: float = 1.0):
        if factored is None:
            mean, log_std = self.prior_params(y)
            factored = mean + temperature * torch.exp(log_std) * torch.randn_like(mean)
        return torch.cat([y, factored], dim=1)

    def extra_repr(self) -> str:
        return f"{self.num_channels} -> {self.num_kept}"
