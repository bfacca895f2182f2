"""Activation normalization (Glow) with data-dependent initialisation."""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import FlowLayer, channel_view


class ActNorm(FlowLayer):
    """Per-channel affine map ``y = (x + bias) * exp(log_scale)`` (Kingma & Dhariwal 2018).

    Works on ``(B, C, *spatial)`` inputs (images or flat ``(B, C)`` vectors).
    ``logdet = prod(spatial) * Σ_c log_scale_c`` (the same for every sample).

    Data-dependent init: on the first ``forward`` while ``initialized`` is 0, bias and scale are
    set so that this batch's output has zero mean and unit variance per channel. The
    ``initialized`` flag is a buffer, so it is saved and restored with ``state_dict`` (a
    reloaded model is not re-initialised). For distributed training, initialise before wrapping
    in DDP with statistics reduced over the ranks (see :func:`initialize_actnorm`).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.num_channels = int(num_channels)
        self.eps = float(eps)
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.log_scale = nn.Parameter(torch.zeros(num_channels))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))
        # Python-side mirror of the buffer so forward does not read a device tensor (a GPU
        # sync) on every call; reset whenever a state_dict is loaded.
        self._known_initialized = False

    def _load_from_state_dict(self, *args, **kwargs):
        self._known_initialized = False
        super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def initialize_from(self, x: torch.Tensor) -> None:
        """Set bias/scale from the per-channel mean and std of ``x`` and mark initialised."""
        if x.shape[1] != self.num_channels:
            raise ValueError(f"ActNorm expects {self.num_channels} channels, got {x.shape[1]}")
        # Two-pass float64 statistics.  ``_stats_all_reduce`` (set by initialize_actnorm for
        # distributed training) sums each partial statistic over the ranks, so every rank
        # initialises from the statistics of the global batch (the identity otherwise).
        reduce = getattr(self, "_stats_all_reduce", None) or (lambda t: t)
        per_channel = x.detach().transpose(0, 1).reshape(self.num_channels, -1).double()
        count = float(reduce(per_channel.new_tensor(per_channel.shape[1])))
        mean = reduce(per_channel.sum(dim=1)) / count
        var = reduce((per_channel - mean[:, None]).square().sum(dim=1)) / count
        # A single value per channel has no spread to normalise.
        std = var.sqrt() if count > 1 else torch.ones_like(mean)
        mean, std = mean.to(self.bias.dtype), std.to(self.bias.dtype)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(1)
        self._known_initialized = True

    def forward(self, x, context=None):
        if not self._known_initialized:
            if bool(self.initialized):
                self._known_initialized = True
            else:
                self.initialize_from(x)
        y = (x + channel_view(self.bias, x)) * channel_view(self.log_scale.exp(), x)
        logdet = (math.prod(x.shape[2:]) * self.log_scale.sum()).expand(x.shape[0])
        return y, logdet

    def reverse(self, y, context=None):
        return y * channel_view(torch.exp(-self.log_scale), y) - channel_view(self.bias, y)

    def extra_repr(self) -> str:
        return f"{self.num_channels}"


@torch.no_grad()
def initialize_actnorm(model: nn.Module, x: torch.Tensor, context=None,
                       all_reduce=None) -> int:
    """Run data-dependent initialisation of every not-yet-initialised :class:`ActNorm` in
    ``model`` with one batch ``x`` (a forward pass without gradient). Returns how many
    ActNorm layers were initialised by this call.

    Distributed training: pass ``all_reduce`` (a function returning the sum of a tensor over
    all ranks, e.g. :func:`inv_flow.distributed.all_reduce_sum`) and call this on every rank
    with its own share of the first global batch; each ActNorm then initialises from the
    statistics of the whole global batch (the same values on every rank, and the values a
    single process would get from that batch).
    """
    pending = [m for m in model.modules() if isinstance(m, ActNorm) and not bool(m.initialized)]
    if pending:
        was_training = model.training
        model.eval()  # no dropout etc.; ActNorm initialises in either mode
        for layer in pending:
            layer._stats_all_reduce = all_reduce
        try:
            model(x) if context is None else model(x, context)
        finally:
            model.train(was_training)
            for layer in pending:
                layer._stats_all_reduce = None
    return len(pending)
