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

    Anything else is a ``ValueError`` that says how to fix the data (``[0, 1]``-scaled
    ``ToTensor()`` images give a plausible but wrong bits/dim otherwise); a float batch of only
    0s and 1s gets a warning.  ``check_input=False`` skips these checks (one device sync per call).

    The log-determinant is 0 (a shift). ``reverse`` re-quantizes: ``floor(y)`` clamped to
    ``[0, num_levels - 1]`` — for samples this yields valid pixel values.

    ``midpoint = True`` replaces the noise by ``u = 0.5`` (deterministic). ``FlowSequential.
    reconstruct`` uses it so that a float32 round-trip error below half a pixel level does not
    flip ``floor`` at a bin edge (with random ``u`` a few pixels per batch would come back off
    by one even though the flow is exact to ~1e-4).
    """

    is_preprocessing = True
    logdet_always_zero = True

    def __init__(self, num_levels: int = 256, check_input: bool = True):
        super().__init__()
        self.num_levels = int(num_levels)
        #: Reject inputs that are not raw pixel values (a data sync per call; turn off for
        #: torch.compile or when the data are known to be right).
        self.check_input = check_input
        self.midpoint = False

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        if self.check_input and not torch.compiler.is_compiling():  # a graph break when compiled
            check_pixel_values(x, self.num_levels)
        noise = torch.full_like(x, 0.5) if self.midpoint else torch.rand_like(x)
        return x + noise, zero_logdet(x)

    def reverse(self, y: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        return torch.floor(y).clamp(0, self.num_levels - 1)

    def extra_repr(self) -> str:
        return f"num_levels={self.num_levels}"


def check_pixel_values(x: torch.Tensor, num_levels: int) -> None:
    """ValueError, with the fix, unless ``x`` holds integers in ``[0, num_levels - 1]``."""
    detached = x.detach()
    stats = [detached.min(), detached.max()]
    if detached.is_floating_point():
        stats.append((detached != torch.round(detached)).any())
    # One host synchronisation for all three (on a GPU each transfer waits for the device).
    values = torch.stack([s.to(torch.float64) for s in stats]).tolist()
    low, high = values[0], values[1]
    top = num_levels - 1
    if len(values) > 2 and values[2]:
        scaled = " (it looks scaled to [0, 1], as ToTensor() does)" if low >= 0 and high <= 1 else ""
        raise ValueError(
            f"the model expects raw pixel values, integers 0..{top}, but got non-integer values "
            f"in [{low:.3g}, {high:.3g}]{scaled}. Feed the integer pixel values: "
            f"(x * {top}).round() for [0, 1]-scaled images, or transforms.PILToTensor() instead "
            "of ToTensor(); for continuous data use a flow without Dequantization.")
    if low < 0 or high > top:
        raise ValueError(f"the model expects raw pixel values 0..{top} (num_levels={num_levels}), "
                         f"but got values in [{low:g}, {high:g}]")
    if high <= 1 and top > 1 and x.is_floating_point() and x.numel() > 1:
        warnings.warn(
            f"the model expects raw pixel values 0..{top}, but this batch holds only 0s and 1s; "
            f"if the images were scaled to [0, 1] (ToTensor()), feed (x * {top}).round() instead, "
            "or the bits/dim will be wrong", stacklevel=3)
