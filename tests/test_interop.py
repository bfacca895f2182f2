"""inv_conv.interop against the real normflows and zuko: log_prob, sampling direction, gradients
and round trips, checked against our own layer (whose ops are checked against the dense oracle
elsewhere) and, for the density, against inv_conv.reference in float64."""

from __future__ import annotations

import math

import pytest
import torch

import inv_conv
from inv_conv import reference
from inv_conv.interop import to_normflows, to_zuko

normflows = pytest.importorskip("normflows")
zuko = pytest.importorskip("zuko")

DTYPE = torch.float64
SHAPE = (3, 5, 4)  # C, H, W (non-square)


def make_layer(kind: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if kind == "unit":
        layer = inv_conv.InvFlowUnit(SHAPE[0], kernel_size=3)
    else:
        layer = inv_conv.InvConv2d(SHAPE[0], kernel_size=(2, 3), order=kind)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(0.2 * torch.randn_like(p))
    return layer.to(DTYPE)


def oracle_latent(layer, x):
    """Data → latent with the dense float64 reference (no inv_conv op involved)."""
    convs = layer.layers if isinstance(layer, inv_conv.InvFlowUnit) else [layer]
    for conv in convs:
        x = reference.inv_conv2d(x, conv.weight, conv.order)
    return x


def standard_normal_log_prob(z):
    return (-0.5 * z.square() - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


KINDS = ["TL", "BR", "unit"]


# ----------------------------------------------------------------------------------- normflows
def normflows_model(layer):
    base = normflows.distributions.DiagGaussian(SHAPE, trainable=False).to(DTYPE)
    return normflows.NormalizingFlow(q0=base, flows=[to_normflows(layer)])


@pytest.mark.parametrize("kind", KINDS)
def test_normflows_log_prob_and_gradients(kind):
    layer = make_layer(kind, 1)
    model = normflows_model(layer)
    assert isinstance(model.flows[0], normflows.flows.Flow)
    x = torch.randn(4, *SHAPE, dtype=DTYPE)
    log_prob = model.log_prob(x)
    torch.testing.assert_close(log_prob, standard_normal_log_prob(oracle_latent(layer, x)))
    # normflows' own training loss gives the gradients our layer gives directly.
    model.forward_kld(x).backward()
    ours = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    z, logdet = layer(x)
    (-(standard_normal_log_prob(z) + logdet).mean()).backward()
    for a, b in zip(ours, layer.parameters()):
        torch.testing.assert_close(a, b.grad)


@pytest.mark.parametrize("kind", KINDS)
def test_normflows_samples_in_the_sampling_direction(kind):
    layer = make_layer(kind, 2)
    model = normflows_model(layer)
    torch.manual_seed(7)
    samples, log_q = model.sample(5)
    torch.manual_seed(7)
    z = torch.randn(5, *SHAPE, dtype=DTYPE)  # what DiagGaussian draws (mean 0, std 1)
    torch.testing.assert_close(samples, layer.reverse(z))
    torch.testing.assert_close(oracle_latent(layer, samples), z)  # really latent -> data
    torch.testing.assert_close(log_q, model.log_prob(samples))
    adapter = model.flows[0]
    x, log_det = adapter(z)
    back, log_det_back = adapter.inverse(x)
    torch.testing.assert_close(back, z)
    assert torch.equal(log_det, torch.zeros(5, dtype=DTYPE)) and torch.equal(log_det_back, log_det)


def test_normflows_adapter_of_a_layer_with_a_log_determinant():
    from inv_flow.layers import ActNorm

    layer = ActNorm(SHAPE[0]).to(DTYPE)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(0.3 * torch.randn_like(p))
    layer.initialized.fill_(1)  # parameters set by hand: no data-dependent init
    adapter = to_normflows(layer)
    z = torch.randn(3, *SHAPE, dtype=DTYPE)
    x, log_det = adapter(z)
    back, log_det_back = adapter.inverse(x)
    torch.testing.assert_close(back, z)
    torch.testing.assert_close(log_det, -log_det_back)
    # log|det| of the sampling map from autograd (the map is elementwise: the diagonal).
    jac = torch.autograd.functional.jacobian(lambda t: adapter(t)[0].sum(0), z[:1])
    dense = jac.reshape(z[0].numel(), -1)
    torch.testing.assert_close(log_det[0], torch.linalg.slogdet(dense)[1])


def test_adapters_reject_what_is_not_a_flow_layer():
    with pytest.raises(TypeError, match="expected a flow layer.*got Linear"):
        to_normflows(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="expected a flow layer"):
        to_zuko("TL")


# ----------------------------------------------------------------------------------------- zuko
def zuko_flow(layer):
    base = zuko.lazy.UnconditionalDistribution(
        zuko.distributions.DiagNormal, torch.zeros(SHAPE, dtype=DTYPE),
        torch.ones(SHAPE, dtype=DTYPE), buffer=True)
    return zuko.lazy.Flow([to_zuko(layer)], base)


@pytest.mark.parametrize("kind", KINDS)
def test_zuko_log_prob_gradients_and_round_trip(kind):
    layer = make_layer(kind, 3)
    flow = zuko_flow(layer)
    x = torch.randn(2, 3, *SHAPE, dtype=DTYPE)  # a batch shape of two dimensions
    log_prob = flow().log_prob(x)
    assert log_prob.shape == (2, 3)
    expected = standard_normal_log_prob(oracle_latent(layer, x.reshape(6, *SHAPE))).reshape(2, 3)
    torch.testing.assert_close(log_prob, expected)
    log_prob.sum().backward()
    ours = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    z, logdet = layer(x.reshape(6, *SHAPE))
    (standard_normal_log_prob(z) + logdet).sum().backward()
    for a, b in zip(ours, layer.parameters()):
        torch.testing.assert_close(a, b.grad)
    transform = flow.transform()
    torch.testing.assert_close(transform.inv(transform(x)), x)


@pytest.mark.parametrize("kind", KINDS)
def test_zuko_samples_in_the_sampling_direction(kind):
    layer = make_layer(kind, 4)
    distribution = zuko_flow(layer)()
    torch.manual_seed(11)
    samples = distribution.rsample((5,))
    torch.manual_seed(11)
    z = torch.randn(5, *SHAPE, dtype=DTYPE)
    torch.testing.assert_close(samples, layer.reverse(z))
    # rsample_and_log_prob: differentiable samples with their exact log-density; a
    # reverse-KL-style loss gets the gradients of our layer's own sampling direction.
    torch.manual_seed(12)
    samples, log_prob = distribution.rsample_and_log_prob((5,))
    torch.testing.assert_close(log_prob, distribution.log_prob(samples))
    (samples.square().sum() + log_prob.sum()).backward()
    ours = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    torch.manual_seed(12)
    z = torch.randn(5, *SHAPE, dtype=DTYPE)
    x = layer.reverse(z)
    (x.square().sum() + standard_normal_log_prob(z).sum()).backward()
    for a, b in zip(ours, layer.parameters()):
        torch.testing.assert_close(a, b.grad)
