"""Adapters that put this package's layers into normflows and zuko models.

Our layers follow one convention: ``layer(x) -> (z, logdet)`` maps data to latent (the density
direction) and ``layer.reverse(z)`` maps back (sampling).  The two libraries differ:

* **normflows**: a ``normflows.flows.Flow`` has ``forward(z) -> (x, log_det)`` in the *sampling*
  direction (latent → data) and ``inverse(x) -> (z, log_det)`` in the density direction, each
  ``log_det`` being log|det J| of the map it computes.  An ``InvConv2d`` put there directly has
  no ``inverse`` and, worse, ``sample()`` would run its density direction.  :func:`to_normflows`
  swaps the directions.
* **zuko**: a ``zuko.flows.Flow`` takes lazy transforms whose transform ``f`` maps data to
  latent (``log_prob(x) = log p_Z(f(x)) + log|det J_f(x)|``) and samples through ``f.inv``.
  :func:`to_zuko` wraps a layer as such a transform over events of shape (C, H, W).

``inv_conv`` layers (:class:`~inv_conv.InvConv2d`, :class:`~inv_conv.InvFlowUnit`) are volume
preserving (log|det| = 0 exactly), so no extra work is done for their log-determinants.  Any
other module with the same ``forward``/``reverse`` convention (e.g. the layers of ``inv_flow``)
works too; its sampling-direction log-determinant is then minus the density-direction one at
the sample, which costs one density pass.  normflows and zuko are imported only when used.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from .nn import InvConv2d, InvFlowUnit

__all__ = ["to_normflows", "to_zuko"]


def _volume_preserving(layer: nn.Module) -> bool:
    return isinstance(layer, (InvConv2d, InvFlowUnit))


def _check_layer(layer: nn.Module) -> None:
    if not isinstance(layer, nn.Module) or not callable(getattr(layer, "reverse", None)):
        raise TypeError("expected a flow layer: an nn.Module with forward(x) -> (z, logdet) and "
                        f"reverse(z), like inv_conv.InvConv2d; got {type(layer).__name__}")


def _density(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Data → latent with log|det| per sample ([B])."""
    z, logdet = layer(x)
    return z, logdet.reshape(x.shape[0])


def _sampling(layer: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent → data with log|det| of that map per sample ([B])."""
    x = layer.reverse(z)
    if _volume_preserving(layer):
        return x, x.new_zeros(x.shape[0])
    _, logdet = _density(layer, x)
    return x, -logdet


@functools.lru_cache(maxsize=None)
def _normflows_class() -> type:
    try:
        from normflows.flows import Flow  # noqa: PLC0415
    except ImportError:
        raise ImportError("to_normflows needs normflows: `pip install normflows`") from None

    class NormflowsAdapter(Flow):
        """A normflows ``Flow`` around one of our layers: ``forward`` samples (latent → data),
        ``inverse`` evaluates (data → latent); both return ``(output, log|det J|)``."""

        def __init__(self, layer: nn.Module):
            super().__init__()
            self.layer = layer

        def forward(self, z):
            return _sampling(self.layer, z)

        def inverse(self, z):
            return _density(self.layer, z)

    return NormflowsAdapter


def to_normflows(layer: nn.Module):
    """``layer`` as a ``normflows.flows.Flow`` (latent → data ``forward``, data → latent
    ``inverse``, log-determinants as normflows expects).  Parameters stay shared."""
    _check_layer(layer)
    return _normflows_class()(layer)


@functools.lru_cache(maxsize=None)
def _zuko_classes() -> tuple[type, type]:
    try:
        from torch.distributions import Transform, constraints  # noqa: PLC0415
        from zuko.lazy import LazyTransform  # noqa: PLC0415
    except ImportError:
        raise ImportError("to_zuko needs zuko: `pip install zuko`") from None

    class LayerTransform(Transform):
        """Data → latent through ``layer`` on events of shape (C, H, W); any batch shape."""

        domain = constraints.independent(constraints.real, 3)
        codomain = constraints.independent(constraints.real, 3)
        bijective = True

        def __init__(self, layer: nn.Module):
            super().__init__()
            self.layer = layer

        def _flat(self, fn, value):
            batch, event = value.shape[:-3], value.shape[-3:]
            if len(event) != 3:
                raise ValueError(f"expected events of shape (C, H, W); got a tensor of shape "
                                 f"{tuple(value.shape)}")
            out, logdet = fn(self.layer, value.reshape(-1, *event))
            return out.reshape(*batch, *out.shape[1:]), logdet.reshape(batch)

        def _call(self, x):
            return self._flat(_density, x)[0]

        def _inverse(self, z):
            return self._flat(_sampling, z)[0]

        def log_abs_det_jacobian(self, x, z):
            if _volume_preserving(self.layer):
                return x.new_zeros(x.shape[:-3])
            return self._flat(_density, x)[1]

        def call_and_ladj(self, x):  # zuko's log_prob: one pass for both
            return self._flat(_density, x)

    class ZukoAdapter(LazyTransform):
        """A zuko lazy transform around one of our layers (the context is ignored)."""

        def __init__(self, layer: nn.Module):
            super().__init__()
            self.layer = layer

        def forward(self, c=None):
            return LayerTransform(self.layer)

    return LayerTransform, ZukoAdapter


def to_zuko(layer: nn.Module):
    """``layer`` as a zuko lazy transform (data → latent, as ``zuko.flows.Flow`` expects):
    ``zuko.flows.Flow([to_zuko(layer), ...], base)``.  Parameters stay shared."""
    _check_layer(layer)
    return _zuko_classes()[1](layer)
