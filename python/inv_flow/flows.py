"""FlowSequential: a stack of flow layers on top of a base distribution."""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .distributions import DiagonalGaussian
from .layers.base import FlowLayer, logdet_is_zero
from .layers.dequantize import Dequantization
from .layers.invconv import fused_step_reverse
from .layers.split import SplitPrior

_LN2 = math.log(2.0)


def bits_per_dim(log_prob: Union[torch.Tensor, float], num_dims: int) -> Union[torch.Tensor, float]:
    """Bits per dimension from a model log-density (nats).

    The models built by :func:`inv_flow.models.build_model` return ``log_prob`` as a density
    w.r.t. raw pixel values dequantized to ``[0, 256)^D`` (unit-volume bins), so no constant
    (such as the usual ``D log 256``) is needed: ``bpd = -log_prob / (D ln 2)``.
    Works elementwise on a ``[B]`` tensor (average it afterwards) or on a float.
    """
    return -log_prob / (num_dims * _LN2)


class FlowSequential(nn.Module):
    """A normalizing flow: ``layers`` applied in order (data -> latent) and a ``base``
    distribution on the final latent.

    * ``forward(x) -> (z, log_prob)``: ``log_prob = base.log_prob(z) + Σ_layers logdet`` per
      sample (each layer's term added once). :class:`SplitPrior` layers contribute the
      conditional log-density of the channels they factor out through their logdet term.
    * Multi-scale latents: ``z`` is the final (smallest) latent. :meth:`encode` also returns
      the factored-out tensors ``splits`` (one per SplitPrior, in forward order);
      :meth:`reverse` accepts them, or samples any that are missing (``None``) from their
      conditional priors, so ``sample(n)`` works end-to-end and ``reconstruct`` is exact.
    * ``forward(x, return_layer_logdets=True)`` additionally returns a dict
      ``name -> per-sample logdet [B]`` and stores ``last_layer_logdets`` (``name -> mean``,
      Python floats) for verbose logging. Names are ``"<index>_<ClassName>"``.
    """

    def __init__(self, layers: Iterable[FlowLayer], base: DiagonalGaussian,
                 input_shape: Optional[Sequence[int]] = None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.base = base
        width = max(2, len(str(max(len(self.layers) - 1, 0))))
        self.layer_names: List[str] = [f"{i:0{width}d}_{type(layer).__name__}"
                                       for i, layer in enumerate(self.layers)]
        #: shape of one data sample (C, H, W) when known (set by build_model)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.last_layer_logdets: Dict[str, float] = {}

    @property
    def num_dims(self) -> int:
        """Number of dimensions D of one data sample (for bits/dim)."""
        if self.input_shape is None:
            raise AttributeError("input_shape was not given to FlowSequential")
        return math.prod(self.input_shape)

    @property
    def split_layers(self) -> List[SplitPrior]:
        return [layer for layer in self.layers if isinstance(layer, SplitPrior)]

    def _run(self, x, context, keep_splits: bool, record: bool, dequantized: bool = False):
        logdet_total = x.new_zeros(x.shape[0], dtype=x.dtype if x.is_floating_point()
                                   else torch.get_default_dtype())
        splits: List[torch.Tensor] = []
        per_layer: Dict[str, torch.Tensor] = {}
        for name, layer in zip(self.layer_names, self.layers):
            if dequantized and isinstance(layer, Dequantization):
                continue  # x already holds dequantized values (shift: log-det 0)
            if keep_splits and isinstance(layer, SplitPrior):
                x, logdet, factored = layer.split_forward(x, context)
                splits.append(factored)
            else:
                x, logdet = layer(x, context)
            if not logdet_is_zero(layer):
                logdet_total = logdet_total + logdet
            if record:
                per_layer[name] = logdet
        log_prob = self.base.log_prob(x) + logdet_total
        return x, log_prob, splits, per_layer

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None,
                return_layer_logdets: bool = False):
        """``(z, log_prob)``; with ``return_layer_logdets=True``: ``(z, log_prob, dict)``."""
        z, log_prob, _, per_layer = self._run(x, context, keep_splits=False,
                                              record=return_layer_logdets)
        if return_layer_logdets:
            self.last_layer_logdets = {name: float(value.detach().mean())
                                       for name, value in per_layer.items()}
            return z, log_prob, per_layer
        return z, log_prob

    def log_prob(self, x: torch.Tensor, context: Optional[torch.Tensor] = None, *,
                 dequantized: bool = False) -> torch.Tensor:
        """Per-sample log-density ``[B]`` (nats).  ``dequantized=True``: ``x`` already holds
        dequantized values ``y ∈ [0, num_levels)^D`` (e.g. from :meth:`sample_and_log_prob`), so
        the Dequantization layer is skipped and the result is the model's density of ``y``."""
        if dequantized:
            return self._run(x, context, keep_splits=False, record=False, dequantized=True)[1]
        return self.forward(x, context)[1]

    def encode(self, x: torch.Tensor, context: Optional[torch.Tensor] = None
               ) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        """``(z, log_prob, splits)``: final latent, per-sample log-density, and the tensors
        factored out by each SplitPrior (forward order)."""
        z, log_prob, splits, _ = self._run(x, context, keep_splits=True, record=False)
        return z, log_prob, splits

    def reverse(self, z: torch.Tensor, splits: Optional[Sequence[Optional[torch.Tensor]]] = None,
                temperature: float = 1.0, context: Optional[torch.Tensor] = None,
                requantize: bool = True) -> torch.Tensor:
        """Map a final latent back to data. ``splits[i]`` is used for the i-th SplitPrior
        (forward order) when given; missing ones are sampled from their priors at
        ``temperature``.  ``requantize=False`` stops before the Dequantization layer's floor:
        continuous values in ``[0, num_levels)^D``, differentiable."""
        num_splits = len(self.split_layers)
        if splits is None:
            splits = [None] * num_splits
        if len(splits) != num_splits:
            raise ValueError(f"expected {num_splits} split tensors, got {len(splits)}")
        split_index = num_splits
        layers = list(self.layers)  # (ModuleList has no fast __reversed__)
        i = len(layers) - 1
        while i >= 0:
            layer = layers[i]
            fused = fused_step_reverse(layers, i, z)
            if fused is not None:  # a whole step of flow in one kernel
                z, n = fused
                i -= n
                continue
            if isinstance(layer, SplitPrior):
                split_index -= 1
                z = layer.reverse(z, context, factored=splits[split_index],
                                  temperature=temperature)
            elif requantize or not isinstance(layer, Dequantization):
                z = layer.reverse(z, context)
            i -= 1
        return z

    @torch.no_grad()
    def sample(self, num_samples: int, temperature: float = 1.0,
               context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Draw ``num_samples`` data samples (for image models: pixel values in {0..255} as
        floats). ``temperature`` scales the std of the base and of every split prior."""
        z = self.base.sample(num_samples, temperature)
        return self.reverse(z, temperature=temperature, context=context)

    def sample_and_log_prob(self, num_samples: int, temperature: float = 1.0,
                            context: Optional[torch.Tensor] = None
                            ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Differentiable samples and their exact log-density under the model, ``(x, log_p)``
        with ``log_p`` of shape ``[num_samples]`` (nats) — what variational inference and
        reverse-KL training need.  Gradients reach every parameter through both (the base and
        split priors are sampled by reparameterization).

        For image models (with a Dequantization layer) the samples are *not* re-quantized:
        they are continuous dequantized pixel values ``y``, and ``log_p`` is the model's density
        of ``y`` (Lebesgue measure on pixel space; unit-volume bins, as in ``log_prob`` of data,
        whose expectation over the dequantization noise bounds the discrete likelihood), equal
        to ``log_prob(y, dequantized=True)``.  The samples lie in ``[0, num_levels)^D`` up to the
        logit preprocessing's margin (``alpha / (1 - 2 alpha)`` of the range on either side,
        where the model's density also has some mass); ``y.floor().clamp(0, num_levels - 1)``
        gives the pixel values :meth:`sample` returns.

        ``temperature`` scales the standard deviation of the base and split priors; ``log_p`` is
        always the model's (temperature 1) density at the samples, which is the density of the
        sampling distribution only at ``temperature=1``.  The density is evaluated by a second,
        data→latent pass over the samples (exact up to floating-point round trip).
        """
        z = self.base.sample(num_samples, temperature)
        x = self.reverse(z, temperature=temperature, context=context, requantize=False)
        return x, self.log_prob(x, context, dequantized=True)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``reverse(encode(x))`` using the exact split-off tensors. For image models the
        dequantization uses the bin midpoints (u = 0.5) and ``reverse`` re-quantizes, so the
        result equals ``x`` exactly unless the flow's round-trip error reaches half a level."""
        dequantizers = [m for m in self.layers if isinstance(m, Dequantization)]
        previous = [m.midpoint for m in dequantizers]
        for m in dequantizers:
            m.midpoint = True
        try:
            z, _, splits = self.encode(x, context)
        finally:
            for m, flag in zip(dequantizers, previous):
                m.midpoint = flag
        return self.reverse(z, splits, context=context)

    def bits_per_dim(self, log_prob: torch.Tensor) -> torch.Tensor:
        """:func:`bits_per_dim` with this model's ``num_dims``."""
        return bits_per_dim(log_prob, self.num_dims)
