"""Baseline flow families of inv_flow (FInC Flow, Glow, Self-Normalizing Flow): the SNF
gradient against its definition with dense matrices, every family's log-likelihood against a
brute-force Jacobian, and the family switch of build_model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from inv_conv import reference
from inv_flow import bits_per_dim, build_model, initialize_actnorm
from inv_flow.layers import FInCFlowUnit, InvertibleConv1x1, InvFlowUnitLayer, SelfNormConv2d
from inv_flow.layers.snf import conv_dense_matrix
from flow_oracles import brute_force_log_prob
from inv_flow.models import FlowModel, mixing_kind, _resolve_config

DTYPE = torch.float64
jacobian = torch.autograd.functional.jacobian


# ------------------------------------------------------------------------ dense definitions
def dense_of(fn, shape):
    """Dense matrix (D, D) of a linear map on (C, H, W) inputs, by autograd (create_graph so
    the result stays differentiable in the map's parameters)."""
    x0 = torch.zeros((1,) + tuple(shape), dtype=DTYPE)
    d = x0.numel()
    return jacobian(lambda x: fn(x).reshape(-1), x0, create_graph=True).reshape(d, d)


def kernel_gradient(dense_gradient, dense_fn, param):
    """Chain rule from a gradient w.r.t. the dense matrix to the kernel ``param``:
    ∂/∂param ⟨sg(G), dense(param)⟩_F (the adjoint of param ↦ dense matrix applied to G)."""
    inner = (dense_gradient.detach() * dense_fn()).sum()
    return torch.autograd.grad(inner, param)[0]


def make_snf(channels, height, width, **kwargs):
    torch.manual_seed(hash((channels, height, width)) % 1000)
    layer = SelfNormConv2d(channels, 3, **kwargs).to(DTYPE)
    with torch.no_grad():  # off the identity, and R far from W's inverse
        layer.weight.add_(0.3 * torch.randn_like(layer.weight))
        layer.inverse_weight.add_(0.3 * torch.randn_like(layer.inverse_weight))
    return layer


@pytest.mark.parametrize("shape", [(2, 3, 4), (1, 2, 2), (3, 3, 3)])
def test_snf_logdet_surrogate_gradient_is_r_transpose(shape):
    """∂(training-time logdet)/∂W equals the definition: the dense gradient Rᵀ (R's dense
    matrix, transposed) mapped to the kernel through the chain rule — and its value is 0."""
    c, h, w = shape
    layer = make_snf(c, h, w).train()
    x = torch.randn((2,) + shape, dtype=DTYPE)
    _, logdet = layer(x)
    assert torch.equal(logdet.detach(), torch.zeros(2, dtype=DTYPE))
    (grad_w,) = torch.autograd.grad(logdet[0], layer.weight)

    r_dense = dense_of(layer.approx_inverse, shape)  # x̂ = r_dense @ z
    expected = kernel_gradient(r_dense.T, lambda: dense_of(layer.conv, shape), layer.weight)
    torch.testing.assert_close(grad_w, expected, rtol=1e-10, atol=1e-12)
    # ... and it is not the exact gradient W⁻ᵀ (R is far from the inverse here)
    w_dense = dense_of(layer.conv, shape)
    exact = kernel_gradient(torch.linalg.inv(w_dense).T, lambda: dense_of(layer.conv, shape),
                            layer.weight)
    assert (grad_w - exact).abs().max() > 1e-2


def test_snf_exact_gradient_and_eval_logdet_are_dense_slogdet():
    shape = (2, 3, 3)
    layer = make_snf(*shape, self_normalized_grad=False).train()
    x = torch.randn((3,) + shape, dtype=DTYPE)
    _, logdet = layer(x)
    w_dense = dense_of(layer.conv, shape)
    expected_value = torch.linalg.slogdet(w_dense)[1]
    torch.testing.assert_close(logdet, expected_value.expand(3).detach())
    (grad_w,) = torch.autograd.grad(logdet[0], layer.weight)
    expected = kernel_gradient(torch.linalg.inv(w_dense).T, lambda: dense_of(layer.conv, shape),
                               layer.weight)
    torch.testing.assert_close(grad_w, expected, rtol=1e-9, atol=1e-11)
    layer.eval()
    torch.testing.assert_close(layer(x)[1].detach(), expected_value.expand(3).detach())


@pytest.mark.parametrize("sym", [False, True])
def test_snf_training_step_matches_its_definition(sym):
    """One SGD step of  mean_b[-log N(z_b; 0, I) - logdet_b] + λ e  on a single SNF layer,
    against the definition with dense matrices (x_b inputs, z_b = W x_b, x̂_b = R z_b):

        ∂/∂W = M*( mean_b z_b x_bᵀ − Rᵀ  [+ 2λ mean_b (W x̂_b − z_b) x̂_bᵀ  if sym] )
        ∂/∂R = M_R*( 2λ mean_b (x̂_b − x_b) z_bᵀ )
    """
    shape, lam, lr = (2, 3, 3), 0.75, 0.05  # λ exact in float32 (the buffer starts float32)
    layer = make_snf(*shape, sym_recon_grad=sym, recon_loss_weight=lam).train()
    x = torch.randn((4,) + shape, dtype=DTYPE)
    before = [p.detach().clone() for p in (layer.weight, layer.inverse_weight)]

    z, logdet = layer(x)
    nll = (0.5 * z.square().flatten(1).sum(1) + 0.5 * z[0].numel() * math.log(2 * math.pi)
           - logdet).mean()
    recon = layer.pop_recon_loss()
    assert layer.pop_recon_loss() is None  # consumed
    (nll + recon).backward()

    w_dense = dense_of(layer.conv, shape).detach()
    r_dense = dense_of(layer.approx_inverse, shape).detach()
    xs, zs = x.reshape(4, -1), (x.reshape(4, -1) @ w_dense.T)
    x_hat = zs @ r_dense.T
    grad_w_dense = zs.T @ xs / 4 - r_dense.T
    if sym:
        grad_w_dense = grad_w_dense + 2 * lam * ((x_hat @ w_dense.T - zs).T @ x_hat) / 4
    grad_r_dense = 2 * lam * ((x_hat - xs).T @ zs) / 4
    expected_w = kernel_gradient(grad_w_dense, lambda: dense_of(layer.conv, shape), layer.weight)
    expected_r = kernel_gradient(grad_r_dense, lambda: dense_of(layer.approx_inverse, shape),
                                 layer.inverse_weight)
    torch.testing.assert_close(layer.weight.grad, expected_w, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(layer.inverse_weight.grad, expected_r, rtol=1e-9, atol=1e-11)

    torch.optim.SGD(layer.parameters(), lr=lr).step()
    torch.testing.assert_close(layer.weight.detach(), before[0] - lr * expected_w)
    torch.testing.assert_close(layer.inverse_weight.detach(), before[1] - lr * expected_r)


def test_snf_recon_training_drives_r_towards_the_inverse_and_adaptive_weight_grows():
    torch.manual_seed(0)
    layer = SelfNormConv2d(2, 3, recon_loss_weight=1.0, recon_loss_lr=0.5).to(DTYPE).train()
    with torch.no_grad():
        layer.weight.add_(0.1 * torch.randn_like(layer.weight))
    layer.weight.requires_grad_(False)
    optimizer = torch.optim.Adam([layer.inverse_weight], lr=2e-2)
    x = torch.randn(16, 2, 4, 4, dtype=DTYPE)

    def error():
        with torch.no_grad():
            return float((layer.approx_inverse(layer.conv(x)) - x).square().mean())

    start, weights = error(), []
    for _ in range(100):
        optimizer.zero_grad()
        layer(x)
        layer.pop_recon_loss().backward()
        optimizer.step()
        weights.append(float(layer.recon_weight))
    assert error() < start / 5  # R learns W's inverse (as far as a 3x3 kernel can)
    assert weights[0] > 1.0 and all(b > a for a, b in zip(weights, weights[1:]))


def test_snf_reverse_paths_and_size_limit():
    layer = make_snf(2, 3, 3).eval()
    z = torch.randn(3, 2, 3, 3, dtype=DTYPE)
    torch.testing.assert_close(layer.reverse(z), F.conv_transpose2d(z, layer.inverse_weight,
                                                                    padding=1))
    layer.sample_true_inv = True
    torch.testing.assert_close(layer.conv(layer.reverse(z)), z)
    small = SelfNormConv2d(2, 3, max_dense_dims=17)
    with pytest.raises(ValueError, match="dense"):
        small.eval()(torch.randn(1, 2, 3, 3))
    small.train()(torch.randn(1, 2, 3, 3))  # the training surrogate needs no dense matrix
    with pytest.raises(ValueError, match="odd"):
        SelfNormConv2d(2, 2)
    with pytest.raises(ValueError, match="snf_max_dense_dims"):
        build_model({"family": "snf", "num_blocks": 1}, (3, 64, 64))


def test_conv_dense_matrix_matches_autograd():
    weight = torch.randn(3, 3, 3, 3, dtype=DTYPE)
    expected = dense_of(lambda x: F.conv2d(x, weight, padding=1), (3, 2, 4)).detach()
    torch.testing.assert_close(conv_dense_matrix(weight, 2, 4), expected)


# -------------------------------------------------------------------- whole-model densities
FAMILY_CASES = [
    ({"family": "inverse_flow"}, InvFlowUnitLayer),
    ({"family": "finc_flow", "finc_unit": "grouped"}, FInCFlowUnit),
    ({"family": "finc_flow", "finc_unit": "unit"}, InvFlowUnitLayer),
    ({"family": "glow"}, InvertibleConv1x1),
    ({"family": "snf"}, SelfNormConv2d),
    ({"family": "snf", "self_normalized_grad": False, "sample_true_inv": True}, SelfNormConv2d),
]


@pytest.mark.parametrize("family_cfg, conv_type", FAMILY_CASES,
                         ids=["-".join(str(v) for v in c.values()) for c, _ in FAMILY_CASES])
def test_family_log_likelihood_matches_brute_force(family_cfg, conv_type):
    shape = (2, 4, 4)
    cfg = {"model": "glow", "num_blocks": 2, "block_size": 1, "coupling_hidden": 4,
           "activation": "SLR", "learn_base": True, "num_levels": 256, **family_cfg}
    torch.manual_seed(5)
    x_int = torch.randint(0, 256, (2,) + shape).to(DTYPE)
    model = build_model(cfg, shape).to(DTYPE)
    assert isinstance(model, FlowModel)
    assert any(isinstance(m, conv_type) for m in model.layers)
    initialize_actnorm(model, x_int)  # raw pixels: the model dequantizes them itself
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model.eval()
    torch.manual_seed(9)
    _, log_prob = model(x_int)
    torch.manual_seed(9)
    x_cont = x_int + torch.rand_like(x_int)
    torch.testing.assert_close(log_prob, brute_force_log_prob(model, x_cont), rtol=1e-8, atol=1e-7)
    if family_cfg["family"] != "snf" or family_cfg.get("sample_true_inv"):
        torch.testing.assert_close(model.reconstruct(x_int), x_int)  # exact inverse
    assert model.sample(3).shape == (3,) + shape


def test_finc_grouped_unit_is_four_masked_convolutions():
    unit = FInCFlowUnit(6, kernel_size=3).to(DTYPE)
    assert unit.sizes == [2, 2, 1, 1]
    x = torch.randn(2, 6, 5, 4, dtype=DTYPE)
    y, logdet = unit(x)
    parts = torch.split(x, unit.sizes, dim=1)
    expected = torch.cat([reference.conv2d(part, conv.weight, order)
                          for part, conv, order in zip(parts, unit.convs, ("TL", "TR", "BL", "BR"))],
                         dim=1)
    torch.testing.assert_close(y, expected)
    assert torch.equal(logdet, torch.zeros(2, dtype=DTYPE))
    torch.testing.assert_close(unit.reverse(y), x)


def test_extra_loss_contract():
    shape = (1, 4, 4)
    cfg = {"family": "snf", "num_blocks": 2, "block_size": 2, "coupling_hidden": 4,
           "recon_loss_weight": 2.0}
    model = build_model(cfg, shape)
    x_int = torch.randint(0, 256, (4,) + shape).float()
    initialize_actnorm(model, x_int)
    assert float(model.extra_loss()) == 0.0  # nothing stored by the eval-mode init forward
    model.train()
    _, log_prob = model(x_int)
    layers = [m for m in model.modules() if isinstance(m, SelfNormConv2d)]
    assert len(layers) == 4
    expected = sum(2.0 * m._last_recon.detach() for m in layers) / (16 * math.log(2))
    extra = model.extra_loss()
    assert extra.dim() == 0 and extra.requires_grad
    torch.testing.assert_close(extra.detach(), expected)
    assert float(model.extra_loss()) == 0.0  # consumed
    (bits_per_dim(log_prob, 16).mean() + extra).backward()
    assert all(m.inverse_weight.grad is not None and m.inverse_weight.grad.abs().sum() > 0
               for m in layers)
    with torch.no_grad():
        model(x_int)  # no gradients: nothing stored
    assert float(model.extra_loss()) == 0.0
    other = build_model({"family": "glow", "num_blocks": 1, "coupling_hidden": 4}, shape)
    other(x_int)
    assert float(other.extra_loss()) == 0.0


def test_family_selection_and_validation():
    resolved = _resolve_config
    assert mixing_kind(resolved({})) == "inverse_unit"  # default: unchanged behaviour
    assert mixing_kind(resolved({"direction": "conv"})) == "conv_unit"
    assert mixing_kind(resolved({"inv_conv": "conv1x1"})) == "conv1x1"
    assert mixing_kind(resolved({"family": "finc_flow"})) == "finc_grouped"
    assert mixing_kind(resolved({"family": "finc_flow", "inv_conv": "single",
                                 "finc_unit": "unit"})) == "conv_single"
    assert mixing_kind(resolved({"family": "inverse_flow", "direction": "conv"})) == "inverse_unit"
    assert mixing_kind(resolved({"family": "glow"})) == "conv1x1"
    assert mixing_kind(resolved({"family": "snf"})) == "snf"
    for bad in ({"family": "realnvp"}, {"family": "finc_flow", "finc_unit": "halves"},
                {"family": "snf", "kernel_size": 2}, {"family": "inverse_flow",
                                                      "inv_conv": "conv1x1"},
                {"family": "snf", "model": "fc"}, {"family": "snf", "recon_loss_lr": -1.0}):
        with pytest.raises(ValueError):
            build_model(bad, (1, 8, 8))
    with pytest.warns(UserWarning, match="never trained"):
        build_model({"family": "snf", "recon_loss_weight": 0.0, "num_blocks": 1}, (1, 4, 4))
    grouped = build_model({"family": "finc_flow", "num_blocks": 1, "block_size": 1,
                           "coupling_hidden": 4}, (1, 4, 4))
    names = [type(m).__name__ for m in grouped.layers]
    assert names[names.index("FInCFlowUnit") + 1] == "InvertibleConv1x1"
    assert all(c.direction == "conv" for c in grouped.layers[names.index("FInCFlowUnit")].convs)
