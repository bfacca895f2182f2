"""Base distributions for flows."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class DiagonalGaussian(nn.Module):
    """Elementwise Gaussian ``N(mean, exp(log_std)^2)`` over latents of shape ``shape``
    (excluding the batch dim). ``mean``/``log_std`` have that shape (O(D) memory, no
    covariance matrix); they are parameters when ``learnable`` else buffers (zeros: standard
    normal), so either way they follow ``.to(device)`` / ``.double()``.
    """

    def __init__(self, shape: Sequence[int], learnable: bool = False):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.learnable = bool(learnable)
        mean, log_std = torch.zeros(self.shape), torch.zeros(self.shape)
        if learnable:
            self.mean, self.log_std = nn.Parameter(mean), nn.Parameter(log_std)
        else:
            self.register_buffer("mean", mean)
            self.register_buffer("log_std", log_std)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Per-sample log-density, shape ``[B]``."""
        if tuple(z.shape[1:]) != self.shape:
            raise ValueError(f"latent shape {tuple(z.shape[1:])} != base shape {self.shape}")
        eps = (z - self.mean) * torch.exp(-self.log_std)
        elementwise = -0.5 * eps * eps - self.log_std - _HALF_LOG_2PI
        return elementwise.reshape(z.shape[0], -1).sum(dim=1)

    def sample(self, num_samples: int, temperature: float = 1.0) -> torch.Tensor:
        """``num_samples`` latents; ``temperature`` scales the standard deviation."""
        noise = torch.randn((num_samples,) + self.shape, device=self.mean.device,
                            dtype=self.mean.dtype)
        return self.mean + temperature * torch.exp(self.log_std) * noise

    def standardize(self, z: torch.Tensor) -> torch.Tensor:
        """``(z - mean) / std`` — maps this distribution to a standard normal."""
        return (z - self.mean) * torch.exp(-self.log_std)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, learnable={self.learnable}"
