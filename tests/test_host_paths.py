"""The host-side shortcuts of inv_flow's layers: volume-preserving layers' zero logdets left
out of ``FlowSequential``'s sum (only for the classes that declare it), and the coupling's
split/unbind/rsub ops. Each result is compared with the plain formula."""

from __future__ import annotations

import pytest
import torch

from inv_flow.distributions import DiagonalGaussian
from inv_flow.flows import FlowSequential
from inv_flow.layers import (ActNorm, AffineCoupling, Dequantization, Flatten, FlowLayer,
                             InvertibleConv1x1, Normalization, SplitPrior, Squeeze, UnSqueeze)
from inv_flow.layers.base import logdet_is_zero
from conftest import needs_inv_conv, randomize_parameters


# ------------------------------------------------------------------------ zero logdets


class _ShiftedSqueeze(Squeeze):
    """Overrides forward with a non-zero logdet: must be summed."""

    def forward(self, x, context=None):
        y, logdet = super().forward(x, context)
        return y, logdet + 1.5


class _PlainSqueeze(Squeeze):
    pass


def test_logdet_is_zero_is_read_from_the_class_defining_forward():
    assert all(logdet_is_zero(layer) for layer in (Squeeze(), UnSqueeze(), Flatten((1, 2, 2)),
                                                   Dequantization(), _PlainSqueeze()))
    assert not any(logdet_is_zero(layer) for layer in (
        _ShiftedSqueeze(), ActNorm(2), Normalization(0.5), SplitPrior(4), AffineCoupling(4, 4),
        InvertibleConv1x1(4), FlowLayer()))


def test_log_prob_sums_every_non_zero_logdet_in_order():
    layers = [Normalization(0.5), _ShiftedSqueeze(), ActNorm(8), Squeeze(), _PlainSqueeze(),
              ActNorm(128)]
    model = FlowSequential(layers, DiagonalGaussian((128, 1, 1)))
    x = torch.randn(3, 2, 8, 8, dtype=torch.float32) + 1
    model(x)  # ActNorm init
    randomize_parameters(model)
    z, log_prob, per_layer = model(x, return_layer_logdets=True)
    total = torch.zeros(3)
    for logdet in per_layer.values():
        total = total + logdet
    assert torch.equal(log_prob, model.base.log_prob(z) + total)
    assert torch.equal(per_layer["01__ShiftedSqueeze"], torch.full((3,), 1.5))


class _DeclaredZero(Squeeze):
    """Declares a zero logdet but returns ones (a broken declaration, to observe the skip)."""

    logdet_always_zero = True

    def forward(self, x, context=None):
        y, logdet = super().forward(x, context)
        return y, logdet + 1.0


def test_log_prob_leaves_out_the_logdets_declared_zero():
    model = FlowSequential([_DeclaredZero(), _ShiftedSqueeze()], DiagonalGaussian((32, 2, 2)))
    x = torch.randn(3, 2, 8, 8)
    z, log_prob, per_layer = model(x, return_layer_logdets=True)
    assert torch.equal(per_layer["00__DeclaredZero"], torch.ones(3))  # still recorded
    assert torch.equal(log_prob, model.base.log_prob(z) + torch.zeros(3) + 1.5)


@needs_inv_conv
@pytest.mark.parametrize("family", ["inverse_flow", "finc_flow", "glow"])
def test_layers_marked_volume_preserving_return_zero_logdets(family):
    from inv_flow.models import build_model

    torch.manual_seed(0)
    cfg = {"model": "glow", "family": family, "num_blocks": 2, "block_size": 2,
           "coupling_hidden": 8}
    model = randomize_parameters(build_model(cfg, (3, 8, 8)), 0.1)
    _, _, per_layer = model(torch.randint(0, 256, (2, 3, 8, 8)).float(),
                            return_layer_logdets=True)
    marked = [name for name, layer in zip(model.layer_names, model.layers) if logdet_is_zero(layer)]
    assert len(marked) >= 3
    for name in marked:
        assert torch.equal(per_layer[name], torch.zeros(2)), name


# ------------------------------------------------------------------------ coupling


@pytest.mark.parametrize("channels", [2, 5, 6])
def test_coupling_matches_the_plain_formulas_bitwise(channels):
    layer = randomize_parameters(AffineCoupling(channels, hidden_channels=8))
    x = torch.randn(3, channels, 4, 5)
    na = channels // 2
    h = layer.net(x[:, :na])
    shift, raw = h[:, 0::2], h[:, 1::2]
    log_scale = torch.nn.functional.logsigmoid(raw + 2.0) - \
        torch.nn.functional.logsigmoid(torch.tensor(2.0, dtype=torch.float64)).item()
    y_ref = torch.cat([x[:, :na], (x[:, na:] + shift) * torch.exp(log_scale)], dim=1)
    x_ref = torch.cat([x[:, :na], x[:, na:] * torch.exp(-log_scale) - shift], dim=1)
    y, logdet = layer(x)
    assert torch.equal(y, y_ref)
    assert torch.equal(logdet, log_scale.reshape(3, -1).sum(1))
    assert torch.equal(layer.reverse(x), x_ref)
