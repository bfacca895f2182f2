"""FlowSequential.sample_and_log_prob: differentiable continuous samples and their exact
log-density, checked against the dense-Jacobian oracle, log_prob of the same samples, sample()
and finite differences of the gradient."""

from __future__ import annotations

import pytest
import torch
from flow_oracles import brute_force_log_prob

from inv_flow import build_model, initialize_actnorm

pytest.importorskip("inv_conv")
DTYPE = torch.float64
SHAPE = (1, 4, 4)
CFG = {"model": "glow", "num_blocks": 2, "block_size": 1, "coupling_hidden": 6,
       "split_prior": True, "learn_base": True, "activation": "SLR", "inv_conv": "unit"}


def make_model(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(CFG, SHAPE).to(DTYPE)
    initialize_actnorm(model, torch.randint(0, 256, (8, *SHAPE)).to(DTYPE))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_log_density_is_exact_for_the_continuous_samples(temperature):
    model = make_model()
    torch.manual_seed(1)
    x, log_p = model.sample_and_log_prob(3, temperature=temperature)
    assert x.shape == (3, *SHAPE) and log_p.shape == (3,)
    assert not torch.equal(x, x.round())  # continuous: no re-quantization
    margin = 256 * 0.05 / 0.9  # the logit's domain: [0, 256) widened by alpha / (1 - 2 alpha)
    assert float(x.detach().min()) > -margin and float(x.detach().max()) < 256 + margin
    with torch.no_grad():
        torch.testing.assert_close(log_p, brute_force_log_prob(model, x.detach()),
                                   rtol=1e-8, atol=1e-7)
        torch.testing.assert_close(log_p, model.log_prob(x, dequantized=True))
    # The same draws, re-quantized, are what sample() gives.
    torch.manual_seed(1)
    assert torch.equal(model.sample(3, temperature=temperature), x.detach().floor().clamp(0, 255))


def test_gradients_match_finite_differences():
    model = make_model(2)
    params = dict(model.named_parameters())
    names = [n for n in params if "weight" in n][:3] + ["base.mean"]

    def loss() -> torch.Tensor:
        torch.manual_seed(5)  # the same noise on every call: a deterministic function of θ
        x, log_p = model.sample_and_log_prob(4)
        return (x / 256).square().sum() + log_p.sum() / 100

    model.zero_grad()
    loss().backward()
    for name in names:
        param = params[name]
        assert param.grad is not None, name
        direction = torch.randn_like(param)
        analytic = float((param.grad * direction).sum())
        eps = 1e-6
        with torch.no_grad():
            param.add_(eps * direction)
            up = float(loss())
            param.sub_(2 * eps * direction)
            down = float(loss())
            param.add_(eps * direction)
        assert analytic == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-7), name
