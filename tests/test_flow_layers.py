"""Exactness tests for every inv_flow flow layer: inverse and log-determinant against a
dense Jacobian, in float64, on fresh random inputs and random parameters."""

from __future__ import annotations


import pytest
import torch

from inv_flow.layers import (ActNorm, AffineCoupling, Dequantization, Flatten, InvConvLayer,
                             InvFlowUnitLayer, InvertibleConv1x1, InvertibleSELU, LearnableLeakyReLU,
                             LogitTransform, LULinear, LUMatrix, Normalization, SmoothLeakyReLU,
                             SplineActivation, SplitPrior, Squeeze, UnSqueeze, build_activation,
                             initialize_actnorm)
from inv_flow.layers.squeeze import squeeze2x2
from conftest import needs_inv_conv, randomize_parameters

DTYPE = torch.float64


def per_sample_logabsdet(fn, x: torch.Tensor) -> torch.Tensor:
    """log|det J| of ``fn`` for each sample, from the dense Jacobian. Also checks that samples
    do not interact (off-diagonal batch blocks are zero) and that J is square."""
    batch = x.shape[0]
    jac = torch.autograd.functional.jacobian(lambda inp: fn(inp).reshape(batch, -1), x)
    d_out = jac.shape[1]
    jac = jac.reshape(batch, d_out, batch, -1)
    assert jac.shape[3] == d_out, "the map must be dimension-preserving"
    logdets = []
    for b in range(batch):
        for other in range(batch):
            if other != b:
                assert torch.count_nonzero(jac[b, :, other, :]) == 0, "samples interact"
        sign, logabsdet = torch.linalg.slogdet(jac[b, :, b, :])
        assert sign != 0, "Jacobian is singular"
        logdets.append(logabsdet)
    return torch.stack(logdets)


def _spline():
    layer = SplineActivation(3, num_bins=5, tail_bound=2.5)
    with torch.no_grad():  # strongly non-identity spline
        for p in layer.parameters():
            p.copy_(torch.randn_like(p))
    return layer


def _actnorm_image():
    layer = ActNorm(3)
    layer.initialize_from(torch.randn(8, 3, 4, 4) * 2 + 1)
    return randomize_parameters(layer)


def _actnorm_flat():
    layer = ActNorm(5)
    layer.initialize_from(torch.randn(8, 5))
    return randomize_parameters(layer)


# name -> (layer factory, input factory); inputs are float64, batch of 2
LAYER_CASES = {
    "normalization": (lambda: Normalization(scale=float(torch.rand(()) + 0.1), shift=0.7),
                      lambda: torch.randn(2, 2, 3, 3)),
    "logit": (lambda: LogitTransform(alpha=0.05), lambda: torch.rand(2, 2, 3, 3)),
    "squeeze": (Squeeze, lambda: torch.randn(2, 2, 4, 4)),
    "unsqueeze": (UnSqueeze, lambda: torch.randn(2, 8, 2, 2)),
    "flatten": (lambda: Flatten((2, 3, 3)), lambda: torch.randn(2, 2, 3, 3)),
    "actnorm_image": (_actnorm_image, lambda: torch.randn(2, 3, 4, 4)),
    "actnorm_flat": (_actnorm_flat, lambda: torch.randn(2, 5)),
    "coupling_even": (lambda: randomize_parameters(AffineCoupling(4, hidden_channels=8)),
                      lambda: torch.randn(2, 4, 4, 4)),
    "coupling_odd": (lambda: randomize_parameters(AffineCoupling(3, hidden_channels=6)),
                     lambda: torch.randn(2, 3, 3, 3)),
    "conv1x1_lu": (lambda: randomize_parameters(InvertibleConv1x1(3, lu=True)),
                   lambda: torch.randn(2, 3, 4, 4)),
    "conv1x1_dense": (lambda: randomize_parameters(InvertibleConv1x1(3, lu=False)),
                      lambda: torch.randn(2, 3, 4, 4)),
    "lu_linear": (lambda: randomize_parameters(LULinear(6)), lambda: torch.randn(2, 6)),
    "smooth_leaky_relu": (lambda: SmoothLeakyReLU(alpha=float(0.1 + 0.8 * torch.rand(()))),
                          lambda: 3 * torch.randn(2, 2, 3, 3)),
    "learnable_leaky_relu": (lambda: randomize_parameters(LearnableLeakyReLU(2), 1.0),
                             lambda: torch.randn(2, 2, 3, 3)),
    "selu": (InvertibleSELU, lambda: 2 * torch.randn(2, 2, 3, 3)),
    "spline": (_spline, lambda: 2 * torch.randn(2, 3, 3, 3)),  # some values in the tails
}

INV_CONV_CASES = {
    **{f"invconv_{order}_{direction}": (
        lambda order=order, direction=direction: randomize_parameters(
            InvConvLayer(3, kernel_size=3, order=order, direction=direction)),
        lambda: torch.randn(2, 3, 4, 4))
       for order in ("TL", "TR", "BL", "BR") for direction in ("inverse", "conv")},
    "invconv_k2": (lambda: randomize_parameters(InvConvLayer(2, kernel_size=2, order="BR")),
                   lambda: torch.randn(2, 2, 4, 3)),
    "invflowunit_inverse": (lambda: randomize_parameters(InvFlowUnitLayer(2, kernel_size=3)),
                            lambda: torch.randn(2, 2, 4, 4)),
    "invflowunit_conv": (lambda: randomize_parameters(InvFlowUnitLayer(2, direction="conv")),
                         lambda: torch.randn(2, 2, 4, 4)),
    "invflowunit_dense_reference": (
        lambda: randomize_parameters(InvFlowUnitLayer(2, dense_reference=True)),
        lambda: torch.randn(2, 2, 3, 4)),
}


def _check_layer(make_layer, make_input):
    layer = make_layer().to(DTYPE)
    x = make_input().to(DTYPE)
    y, logdet = layer(x)
    assert logdet.shape == (x.shape[0],)
    assert torch.isfinite(y).all() and torch.isfinite(logdet).all()
    x_back = layer.reverse(y)
    torch.testing.assert_close(x_back, x, rtol=1e-9, atol=1e-9)
    expected = per_sample_logabsdet(lambda inp: layer(inp)[0], x)
    torch.testing.assert_close(logdet, expected, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", sorted(LAYER_CASES))
def test_layer_inverse_and_logdet(name):
    _check_layer(*LAYER_CASES[name])


@needs_inv_conv
@pytest.mark.parametrize("name", sorted(INV_CONV_CASES))
def test_inv_conv_layer_inverse_and_logdet(name):
    _check_layer(*INV_CONV_CASES[name])


def test_inv_conv_layers_reject_bad_options():
    with pytest.raises(ValueError):
        InvConvLayer(3, order="XY")
    with pytest.raises(ValueError):
        InvFlowUnitLayer(3, direction="sideways")
    with pytest.raises(ValueError):
        InvConvLayer(3, kernel_size=0)


def test_dequantization_round_trip_and_range():
    layer = Dequantization(256)
    x = torch.randint(0, 256, (4, 3, 5, 5)).to(DTYPE)
    y, logdet = layer(x)
    assert torch.equal(logdet, torch.zeros(4, dtype=DTYPE))
    noise = y - x
    assert (noise >= 0).all() and (noise < 1).all() and noise.std() > 0.1
    assert torch.equal(layer.reverse(y), x)
    # samples outside the data range are clamped to valid pixel values
    assert torch.equal(layer.reverse(torch.tensor([-3.0, 255.5, 999.0])),
                       torch.tensor([0.0, 255.0, 255.0]))


def test_dequantization_midpoint_mode():
    layer = Dequantization(17)
    layer.midpoint = True
    x = torch.randint(0, 17, (3, 1, 4, 4)).float()
    y, _ = layer(x)
    assert torch.equal(y, x + 0.5)
    # re-quantization tolerates round-trip errors below half a level
    assert torch.equal(layer.reverse(y + 0.49 * (2 * torch.rand_like(y) - 1)), x)


def test_dequantization_rejects_unit_scaled_and_non_integer_input():
    # ToTensor()-scaled images: a plausible but wrong bits/dim before; now an error with the fix.
    with pytest.raises(ValueError, match=r"scaled to \[0, 1\].*\(x \* 255\)\.round\(\)"):
        Dequantization()(torch.randint(0, 256, (2, 1, 4, 4)) / 255.0)
    with pytest.raises(ValueError, match="non-integer values in \\[3, 7.5\\]"):
        Dequantization()(torch.tensor([[3.0, 7.5]]))
    with pytest.raises(ValueError, match="raw pixel values 0..16 .*got values in \\[0, 17\\]"):
        Dequantization(17)(torch.tensor([[0.0, 17.0]]))
    with pytest.warns(UserWarning, match="only 0s and 1s"):
        Dequantization()(torch.randint(0, 2, (2, 1, 4, 4)).float())
    unchecked = Dequantization(check_input=False)
    unchecked(torch.rand(2, 1, 4, 4))  # the check can be turned off


def test_build_model_rejects_pixels_scaled_to_unit_interval():
    from inv_flow.models import build_model

    model = build_model({"model": "fc", "num_layers": 1}, (1, 2, 2))
    pixels = torch.randint(0, 256, (3, 1, 2, 2)).float()
    model(pixels)  # raw pixels are fine
    with pytest.raises(ValueError, match="ToTensor"):
        model(pixels / 255)


def test_logit_transform_checks_its_input_range():
    # A hand-built Dequantization -> Logit without the scaling step gave NaN silently.
    flow = [Dequantization(256), LogitTransform(0.05)]
    x, _ = flow[0](torch.randint(0, 256, (2, 1, 3, 3)).float())
    with pytest.raises(ValueError, match=r"LogitTransform expects inputs in \[0, 1\].*Normalization"):
        flow[1](x)
    y, logdet = flow[1](x / 256)
    assert torch.isfinite(y).all() and torch.isfinite(logdet).all()


def test_split_prior_density_and_reverse():
    split = randomize_parameters(SplitPrior(4)).to(DTYPE)
    x = torch.randn(3, 4, 3, 3, dtype=DTYPE)
    kept, log_density, factored = split.split_forward(x)
    assert kept.shape == (3, 2, 3, 3) and factored.shape == (3, 2, 3, 3)
    torch.testing.assert_close(torch.cat([kept, factored], 1), x, rtol=0, atol=0)
    mean, log_std = split.prior_params(kept)
    assert mean.abs().max() > 0  # random parameters: a genuinely conditional prior
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(factored).sum((1, 2, 3))
    torch.testing.assert_close(log_density, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(split(x)[1], expected)
    torch.testing.assert_close(split.reverse(kept, factored=factored), x)
    # without the factored part, reverse samples it: temperature 0 gives the prior mean
    torch.testing.assert_close(split.reverse(kept, temperature=0.0), torch.cat([kept, mean], 1))
    sampled = split.reverse(kept)
    assert sampled.shape == x.shape and not torch.allclose(sampled[:, 2:], mean)


def test_split_prior_starts_standard_normal():
    split = SplitPrior(6).to(DTYPE)
    x = torch.randn(2, 6, 2, 2, dtype=DTYPE)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(x[:, 3:]).sum((1, 2, 3))
    torch.testing.assert_close(split(x)[1], expected)


def test_actnorm_data_dependent_init_normalizes_batch():
    layer = ActNorm(4).to(DTYPE)
    x = torch.randn(16, 4, 5, 5, dtype=DTYPE) * torch.tensor([0.5, 2.0, 3.0, 10.0], dtype=DTYPE
                                                            ).view(1, 4, 1, 1) + 7.0
    assert not bool(layer.initialized)
    y, _ = layer(x)
    assert bool(layer.initialized)
    per_channel = y.transpose(0, 1).reshape(4, -1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(4, dtype=DTYPE), atol=1e-9, rtol=0)
    torch.testing.assert_close(per_channel.std(1, unbiased=False), torch.ones(4, dtype=DTYPE),
                               atol=1e-5, rtol=0)
    # a second batch does not re-initialise
    bias = layer.bias.detach().clone()
    layer(torch.randn(16, 4, 5, 5, dtype=DTYPE))
    assert torch.equal(layer.bias.detach(), bias)


def test_actnorm_initialized_flag_survives_state_dict():
    layer = ActNorm(3)
    layer(torch.randn(8, 3, 2, 2) * 4)
    fresh = ActNorm(3)
    fresh.load_state_dict(layer.state_dict())
    assert bool(fresh.initialized)
    x = torch.randn(8, 3, 2, 2)
    torch.testing.assert_close(fresh(x)[0], layer(x)[0])
    # loading an uninitialised state makes the next forward initialise again
    layer.load_state_dict(ActNorm(3).state_dict())
    assert not bool(layer.initialized)
    y, _ = layer(x * 3 + 5)
    assert bool(layer.initialized)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)


def test_initialize_actnorm_on_a_model():
    first, second = ActNorm(2), ActNorm(2)

    class Chain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.second = first, second

        def forward(self, x):
            y, _ = self.first(x)
            return self.second(y * 3.0 + 1.0)

    chain = Chain()
    x = torch.randn(32, 2, 3, 3) * 5 - 2
    assert initialize_actnorm(chain, x) == 2
    assert bool(first.initialized) and bool(second.initialized)
    assert initialize_actnorm(chain, x) == 0  # already done
    out, _ = chain(x)
    torch.testing.assert_close(out.mean((0, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    assert chain.training  # mode restored


def test_coupling_starts_as_identity():
    layer = AffineCoupling(6, hidden_channels=16).to(DTYPE)
    x = torch.randn(3, 6, 4, 4, dtype=DTYPE)
    y, logdet = layer(x)
    torch.testing.assert_close(y, x, rtol=0, atol=0)
    torch.testing.assert_close(logdet, torch.zeros(3, dtype=DTYPE), rtol=0, atol=1e-15)


def test_coupling_rejects_single_channel():
    with pytest.raises(ValueError):
        AffineCoupling(1)


def test_spline_starts_as_identity():
    layer = SplineActivation(2, num_bins=7, tail_bound=3.0).to(DTYPE)
    x = 4 * torch.randn(2, 2, 5, 5, dtype=DTYPE)
    y, logdet = layer(x)
    # parameters are created in float32, so "identity" holds to float32 rounding of them
    torch.testing.assert_close(y, x, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(logdet, torch.zeros(2, dtype=DTYPE), rtol=0, atol=1e-5)


def test_spline_on_flat_input_uses_per_feature_parameters():
    layer = SplineActivation(4, num_bins=4, tail_bound=2.0).to(DTYPE)
    with torch.no_grad():
        layer.unnormalized_widths[1].copy_(torch.randn(4))
        layer.unnormalized_heights[1].copy_(torch.randn(4))
    x = torch.randn(3, 4, dtype=DTYPE).clamp(-1.9, 1.9)
    y, _ = layer(x)
    torch.testing.assert_close(y[:, [0, 2, 3]], x[:, [0, 2, 3]])  # untouched features: identity
    assert not torch.allclose(y[:, 1], x[:, 1])
    torch.testing.assert_close(layer.reverse(y), x)


def test_smooth_leaky_relu_inverse_at_extremes():
    layer = SmoothLeakyReLU(alpha=0.05)
    x = torch.tensor([-1e6, -1e3, -10.0, -1e-8, 0.0, 1e-8, 10.0, 1e3, 1e6], dtype=DTYPE)
    y, _ = layer(x)
    torch.testing.assert_close(layer.reverse(y), x, rtol=1e-12, atol=1e-12)
    x32 = x.float()
    torch.testing.assert_close(layer.reverse(layer(x32)[0]), x32, rtol=1e-5, atol=1e-5)


def test_selu_reverse_outside_range_is_finite():
    layer = InvertibleSELU()
    y = torch.tensor([-100.0, -layer.scale * layer.alpha, -1.0, 0.0, 2.0])
    assert torch.isfinite(layer.reverse(y)).all()


def test_lu_matrix_is_consistent():
    matrix = randomize_parameters(LUMatrix(5)).to(DTYPE)
    weight = matrix.weight()
    torch.testing.assert_close(matrix.logabsdet(), torch.linalg.slogdet(weight)[1])
    torch.testing.assert_close(matrix.inverse_weight() @ weight, torch.eye(5, dtype=DTYPE))


def test_squeeze_channel_layout():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y = squeeze2x2(x)
    # channel 2*i + j holds offset (i, j) of each 2x2 block
    assert torch.equal(y[0, :, 0, 0], torch.tensor([0.0, 1.0, 4.0, 5.0]))
    assert torch.equal(y[0, 3], torch.tensor([[5.0, 7.0], [13.0, 15.0]]))
    with pytest.raises(ValueError):
        squeeze2x2(torch.zeros(1, 1, 3, 4))


def test_build_activation():
    assert build_activation(None, 3) is None and build_activation("none", 3) is None
    assert isinstance(build_activation("SLR", 3), SmoothLeakyReLU)
    assert isinstance(build_activation("LLR", 3), LearnableLeakyReLU)
    assert isinstance(build_activation("Spline", 3), SplineActivation)
    assert isinstance(build_activation("SELU", 3), InvertibleSELU)
    with pytest.raises(ValueError):
        build_activation("ReLU", 3)


@pytest.mark.parametrize("make_layer", [
    lambda: randomize_parameters(AffineCoupling(4, hidden_channels=8)),
    _spline,
    lambda: randomize_parameters(LearnableLeakyReLU(3), 1.0),
    _actnorm_image,
])
def test_parameters_receive_gradients(make_layer):
    layer = make_layer()
    x = 2 * torch.randn(4, layer_channels(layer), 4, 4)
    y, logdet = layer(x)
    (y.square().sum() - logdet.sum()).backward()
    grads = [p.grad for p in layer.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def layer_channels(layer) -> int:
    return getattr(layer, "num_channels", 3)


def test_the_layers_orders_are_inv_convs():
    """inv_flow restates the orders to keep the extension's import lazy; they must not drift."""
    import inv_conv
    from inv_flow.layers import invconv

    assert invconv.ORDERS == inv_conv.ORDERS
