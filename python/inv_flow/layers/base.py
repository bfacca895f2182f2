"""Base class shared by every flow layer of ``inv_flow``."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn


class FlowLayer(nn.Module):
    """An invertible map with a tractable log-Jacobian-determinant.

    Subclasses implement the *density* direction ``forward`` (data -> latent) and its exact
    inverse ``reverse`` (latent -> data, the sampling direction).

    * ``forward(x, context=None) -> (y, logdet)`` where ``logdet`` has shape ``[B]`` and holds
      ``log|det dy/dx|`` per sample, in nats.
    * ``reverse(y, context=None) -> x``.

    ``context`` is accepted everywhere for interface compatibility with conditional flows; the
    layers in this package ignore it.
    """

    #: True for fixed pre-processing maps (dequantization, scaling, logit) that have no
    #: parameters worth logging; lets training code separate them from learned layers.
    is_preprocessing: bool = False

    #: True when ``forward``'s logdet is zero for every input (volume-preserving maps), so that
    #: ``FlowSequential`` need not add it. Only read from the class that defines ``forward``
    #: (:func:`logdet_is_zero`): a subclass that overrides ``forward`` is summed as usual.
    logdet_always_zero: bool = False

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def reverse(self, y: torch.Tensor, context: Optional[torch.Tensor] = None
                ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def zero_logdet(x: torch.Tensor) -> torch.Tensor:
    """A ``[B]`` tensor of zeros on x's device and dtype (for volume-preserving layers)."""
    return x.new_zeros(x.shape[0])


def channel_view(param: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-channel vector ``(C,)`` so it broadcasts against ``x`` of shape
    ``(B, C, *spatial)`` (any number of spatial dims, including none)."""
    return param.view(1, -1, *([1] * (x.dim() - 2)))


def sum_except_batch(x: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension except the first (batch) one -> shape ``[B]``."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def logdet_is_zero(layer: nn.Module) -> bool:
    """Whether ``layer``'s forward returns a zero logdet: the class attribute ``logdet_always_zero`` of
    the class in its MRO that defines ``forward``."""
    for kind in type(layer).__mro__:
        attributes = kind.__dict__
        if "forward" in attributes:
            return bool(attributes.get("logdet_always_zero", False))
    return False
