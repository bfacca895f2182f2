"""Model builders for ``inv_flow`` (the presets are in :mod:`inv_flow.presets`, the options
and their defaults in :mod:`inv_flow.options`).

Data convention for every model built here: the input is a float (or integer) tensor of raw
pixel values ``{0, ..., num_levels-1}`` (``num_levels`` = 256 for 8-bit images, 17 for the
raw digits), shape ``(B, C, H, W)``; anything else is a ValueError saying how to convert it.
The first layers dequantize (+U[0,1)), scale to [0, 1) and apply a logit (or centering), and
``log_prob`` is a density on ``[0, num_levels)^D``, so ``bits/dim = -log_prob / (D ln 2)``
(:func:`inv_flow.bits_per_dim`).
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .distributions import DiagonalGaussian
from .flows import FlowSequential
from .layers import (ActNorm, AffineCoupling, Dequantization, FInCFlowUnit, Flatten, FlowLayer,
                     InvConvLayer, InvertibleConv1x1, InvFlowUnitLayer, LogitTransform, LULinear,
                     Normalization, SelfNormConv2d, SplitPrior, Squeeze, build_activation)
from .layers.invconv import ORDERS
from .layers.snf import recon_loss_scale
from .options import DEFAULTS, MODEL_KEYS, check_options
from .presets import PRESETS, get_preset  # noqa: F401 - re-exported (inv_flow.models.PRESETS)

#: Defaults for every model key ``build_model`` reads (a missing key takes this value);
#: ``activation``: None and "none" both mean no activation.
MODEL_DEFAULTS: Dict[str, Any] = {key: DEFAULTS[key] for key in MODEL_KEYS}


def _resolve_config(cfg: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """MODEL_DEFAULTS completed by ``cfg``: rejects keys that are no config option (with the
    closest valid ones), parses and type-checks the model keys (one pass, shared with
    ``inv_flow.config``); earlier option names are rewritten first (``config.apply_aliases``)."""
    from .config import apply_aliases, coerce_value, unknown_key_error, valid_keys  # noqa: PLC0415

    cfg = apply_aliases(cfg or {})
    known = set(valid_keys(PRESETS))
    for key in cfg:
        if key not in known:
            raise unknown_key_error(key, sorted(known))
    merged = dict(MODEL_DEFAULTS)
    for key, value in cfg.items():
        if key in MODEL_DEFAULTS and value is not None:
            merged[key] = value
        elif key in MODEL_DEFAULTS:
            # None means "default" except for activation, where None means no activation
            merged[key] = None if key == "activation" else MODEL_DEFAULTS[key]
    for key in MODEL_KEYS:
        if merged[key] is not None:
            merged[key] = coerce_value(key, merged[key], MODEL_DEFAULTS[key])
    check_options(merged, MODEL_KEYS)
    return merged


def _validate(cfg: Dict[str, Any], image_shape: Sequence[int]) -> Tuple[int, int, int]:
    if len(tuple(image_shape)) != 3 or any(int(s) < 1 for s in image_shape):
        raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {image_shape!r}")
    channels, height, width = (int(s) for s in image_shape)
    # Ranges and choices of single keys were checked by _resolve_config (options table).
    _validate_family(cfg, channels, height, width)

    model, num_blocks = cfg["model"], int(cfg["num_blocks"])
    squeezes = num_blocks if model == "glow" else (num_blocks - 1 if model == "cnn" else 0)
    factor = 2 ** squeezes
    if height % factor or width % factor:
        raise ValueError(
            f"{model} with num_blocks={num_blocks} squeezes the image {squeezes} times, so H and W "
            f"must be divisible by {factor}; got {height}x{width}. Pad or crop the images "
            f"(e.g. MNIST 28x28 -> 32x32, preset key 'pad_to') or use fewer blocks.")
    return channels, height, width


def _preprocessing(cfg) -> List[FlowLayer]:
    levels = int(cfg["num_levels"])
    layers: List[FlowLayer] = [Dequantization(levels)]
    if cfg["preprocess"] == "logit":
        layers += [Normalization(scale=1.0 / levels), LogitTransform(float(cfg["logit_alpha"]))]
    else:
        layers += [Normalization(scale=1.0 / levels, shift=-0.5)]
    return layers


def _validate_family(cfg: Dict[str, Any], channels: int, height: int, width: int) -> None:
    family = cfg["family"]
    if cfg["model"] == "fc" and family != DEFAULTS["family"]:
        raise ValueError(f"family {family!r} selects the convolution of glow/cnn models; the fc "
                         f"model has none (leave family at {DEFAULTS['family']!r})")
    if family == "snf":
        if int(cfg["kernel_size"]) % 2 == 0:
            raise ValueError(f"family 'snf' needs an odd kernel_size ('same' padding), got "
                             f"{cfg['kernel_size']}")
        # Every SNF convolution sees C*H*W dims (squeeze and split never increase it).
        dims, limit = channels * height * width, int(cfg["snf_max_dense_dims"])
        if dims > limit:
            raise ValueError(
                f"family 'snf' evaluates its exact log-likelihood through the dense DxD matrix of "
                f"each convolution; these images have D = {dims} > snf_max_dense_dims = {limit}. "
                "Use smaller images or raise snf_max_dense_dims.")
        if float(cfg["recon_loss_weight"]) == 0 and float(cfg["recon_loss_lr"]) == 0:
            warnings.warn("family 'snf' with recon_loss_weight=0 and recon_loss_lr=0: the "
                          "approximate inverse R is never trained, so the self-normalized "
                          "gradient and sampling through R are wrong (Keller et al. use 1).",
                          stacklevel=3)


def mixing_kind(cfg: Mapping[str, Any]) -> str:
    """What the invertible convolution of a step is, for a resolved config: "inverse_unit",
    "inverse_single", "conv_unit", "conv_single" (``<InvConv2d direction>_<masked_conv>``),
    "finc_grouped", "conv1x1" or "snf"."""
    family = cfg["family"]
    if family == "glow":
        return "conv1x1"
    if family == "snf":
        return "snf"
    if family == "finc_flow" and cfg["finc_unit"] == "grouped":
        return "finc_grouped"
    direction = "inverse" if family == "inverse_flow" else "conv"
    return f"{direction}_{cfg['masked_conv']}"


def _mixing_layers(cfg, channels: int, step: int) -> List[FlowLayer]:
    """The invertible convolution(s) of one step of flow, by family (``mixing_kind``)."""
    kind = mixing_kind(cfg)
    if kind == "conv1x1":
        return [InvertibleConv1x1(channels, lu=True)]
    kernel_size = int(cfg["kernel_size"])
    if kind == "snf":
        return [SelfNormConv2d(channels, kernel_size,
                               self_normalized_grad=bool(cfg["self_normalized_grad"]),
                               sym_recon_grad=bool(cfg["sym_recon_grad"]),
                               sample_true_inv=bool(cfg["sample_true_inv"]),
                               recon_loss_weight=float(cfg["recon_loss_weight"]),
                               recon_loss_lr=float(cfg["recon_loss_lr"]),
                               max_dense_dims=int(cfg["snf_max_dense_dims"]))]
    dense_reference = bool(cfg["dense_reference"])
    if kind == "finc_grouped":
        # FInC Flow's unit leaves its four channel groups unmixed: Glow's 1x1 conv mixes them.
        return [FInCFlowUnit(channels, kernel_size, direction="conv",
                             dense_reference=dense_reference),
                InvertibleConv1x1(channels, lu=True)]
    direction, shape = kind.split("_")
    common = dict(kernel_size=kernel_size, direction=direction, dense_reference=dense_reference,
                  init_std=float(cfg["masked_init_std"]))
    if shape == "unit":
        layers: List[FlowLayer] = [InvFlowUnitLayer(channels, **common)]
    else:
        layers = [InvConvLayer(channels, order=ORDERS[step % len(ORDERS)], **common)]
    if cfg["mix_1x1"]:
        layers.append(InvertibleConv1x1(channels, lu=True))
    return layers


def _normalised_mixing(cfg, channels: int, step: int) -> List[FlowLayer]:
    """A step's invertible convolution(s) with its ActNorm (``actnorm``) before them, as in
    Glow, or after them (``actnorm_position``)."""
    mixing = _mixing_layers(cfg, channels, step)
    if not cfg["actnorm"]:
        return mixing
    if cfg["actnorm_position"] == "after":
        return [*mixing, ActNorm(channels)]
    return [ActNorm(channels), *mixing]


def _activation(cfg, channels: int) -> Optional[FlowLayer]:
    return build_activation(cfg["activation"], channels, spline_bins=int(cfg["spline_bins"]),
                            spline_tail_bound=float(cfg["spline_tail_bound"]),
                            slr_alpha=float(cfg["slr_alpha"]))


def _build_glow(cfg, channels, height, width):
    layers = _preprocessing(cfg)
    num_blocks, block_size = int(cfg["num_blocks"]), int(cfg["block_size"])
    for block in range(num_blocks):
        layers.append(Squeeze())
        channels, height, width = channels * 4, height // 2, width // 2
        for step in range(block_size):
            layers.extend(_normalised_mixing(cfg, channels, step))
            activation = _activation(cfg, channels)
            if activation is not None:
                layers.append(activation)
            layers.append(AffineCoupling(channels, hidden_channels=int(cfg["coupling_hidden"])))
        if cfg["split_prior"] and block < num_blocks - 1:
            layers.append(SplitPrior(channels))
            channels = channels // 2
    return layers, (channels, height, width)


def _build_cnn(cfg, channels, height, width):
    """Inverse-Flow's CNN model: blocks of (ActNorm?, invertible conv, activation) with a
    squeeze between blocks, no coupling (no activation after the very last conv)."""
    layers = _preprocessing(cfg)
    num_blocks, block_size = int(cfg["num_blocks"]), int(cfg["block_size"])
    for block in range(num_blocks):
        for step in range(block_size):
            layers.extend(_normalised_mixing(cfg, channels, step))
            last = block == num_blocks - 1 and step == block_size - 1
            activation = None if last else _activation(cfg, channels)
            if activation is not None:
                layers.append(activation)
        if block < num_blocks - 1:
            layers.append(Squeeze())
            channels, height, width = channels * 4, height // 2, width // 2
    return layers, (channels, height, width)


def _build_fc(cfg, channels, height, width):
    """Fully connected model on the flattened image: (ActNorm?, LU dense layer, activation)
    repeated ``num_layers`` times (no activation after the last)."""
    num_features = channels * height * width
    layers = _preprocessing(cfg) + [Flatten((channels, height, width))]
    num_layers = int(cfg["num_layers"])
    for index in range(num_layers):
        if cfg["actnorm"]:
            layers.append(ActNorm(num_features))
        layers.append(LULinear(num_features))
        activation = _activation(cfg, num_features) if index < num_layers - 1 else None
        if activation is not None:
            layers.append(activation)
    return layers, (num_features,)


class FlowModel(FlowSequential):
    """The :class:`FlowSequential` that :func:`build_model` returns, plus the training-loss
    terms some flow families need besides the negative log-likelihood.

    **Contract for training loops**: after each training-mode forward pass (``model.train()``,
    gradients enabled), add ``model.extra_loss()`` to the mean bits/dim loss before
    ``backward()``::

        _, log_prob = model(batch)
        loss = bits_per_dim(log_prob, D).mean() + model.extra_loss()

    It returns a 0-dim tensor in the units of that loss (bits/dim): 0 for every family except
    ``snf``, where it is ``Σ_layers λ_l e_l / (D ln 2)`` — the reconstruction losses that train
    the approximate inverses R (see :mod:`inv_flow.layers.snf`). It consumes what the last
    forward stored (a second call returns 0) and, with ``recon_loss_lr > 0``, takes one step of
    the adaptive weights, so call it exactly once per optimizer step. Evaluation needs nothing.
    """

    def extra_loss(self) -> torch.Tensor:
        terms = [loss for module in self.modules() if isinstance(module, SelfNormConv2d)
                 for loss in (module.pop_recon_loss(),) if loss is not None]
        if not terms:
            return self.base.mean.new_zeros(())
        return torch.stack(terms).sum() * recon_loss_scale(self.num_dims)


def build_model(cfg: Optional[Mapping[str, Any]], image_shape: Tuple[int, int, int]
                ) -> FlowModel:
    """Build a flow for images of shape ``image_shape = (C, H, W)`` from a config dict.

    Keys read (missing ones take :data:`MODEL_DEFAULTS`; the trainer's options are accepted
    and ignored; a key that is no option at all is an error with a did-you-mean): ``model``
    ("glow" | "cnn" | "fc"), ``num_blocks``, ``block_size``, ``num_layers`` (fc),
    ``actnorm``, ``split_prior`` (glow), ``activation``, ``kernel_size``, ``coupling_hidden``,
    ``dense_reference``, ``num_levels``, ``preprocess``, ``logit_alpha``, ``spline_bins``,
    ``spline_tail_bound``, ``slr_alpha``, ``learn_base``, and the keys of the invertible
    convolution ``family``, ``masked_conv``, ``finc_unit``, ``mix_1x1``,
    ``self_normalized_grad``, ``recon_loss_weight``, ``recon_loss_lr``, ``sym_recon_grad``,
    ``sample_true_inv``, ``snf_max_dense_dims``.  Earlier names (``modified_grad``,
    ``inv_conv``, ``direction``, ``family="auto"``: :data:`inv_flow.options.ALIASES`) are
    accepted.

    ``family`` swaps the invertible convolution of every step of flow in the same
    architecture: "inverse_flow" (default: inverse of a masked k×k conv in the density
    direction), "finc_flow" (the masked conv itself in the density direction; wavefront
    inverse to sample), "glow" (1×1 convs), "snf" (self-normalizing k×k conv with a learned
    inverse). Training an ``snf`` model needs :meth:`FlowModel.extra_loss` in the loss.

    Raises ``ValueError`` (before any training) for an unknown option or an image the model
    cannot take, e.g. H or W not divisible by ``2**num_blocks`` for glow.
    The input convention and the meaning of ``log_prob`` are described in the module docstring.
    """
    cfg = _resolve_config(cfg)
    channels, height, width = _validate(cfg, image_shape)
    builder = {"glow": _build_glow, "cnn": _build_cnn, "fc": _build_fc}[cfg["model"]]
    layers, latent_shape = builder(cfg, channels, height, width)
    masked = cfg["family"] in ("inverse_flow", "finc_flow")  # the layers dense_reference selects
    if cfg["dense_reference"] and cfg["model"] != "fc" and masked and \
            channels * height * width > 4096:
        warnings.warn("dense_reference=True uses inv_conv's dense reference implementation, "
                      f"which is meant for small images; this one has {channels * height * width} "
                      "dims and will be slow and memory hungry.", stacklevel=2)
    base = DiagonalGaussian(latent_shape, learnable=bool(cfg["learn_base"]))
    return FlowModel(layers, base, input_shape=(channels, height, width))
