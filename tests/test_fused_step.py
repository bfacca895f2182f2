"""The sampling direction of a whole step of flow in one kernel (``conv2d_chain_fused``:
AffineCoupling, Inverse-Flow unit and ActNorm reverses), against the layers' own reverses."""

import pytest
import torch

from inv_conv import ops
from inv_flow import build_model
from inv_flow.layers import coupling as coupling_module
from inv_flow.layers.actnorm import ActNorm
from inv_flow.layers.coupling import AffineCoupling
from inv_flow.layers.invconv import InvFlowUnitLayer, fused_step_reverse

ORDERS4 = ["BR", "BL", "TR", "TL"]


def _step(c, device, dtype, hidden=16):
    """ActNorm, unit and coupling with random parameters (nothing at its identity init)."""
    torch.manual_seed(c)
    layers = [ActNorm(c), InvFlowUnitLayer(c, init_std=0.1), AffineCoupling(c, hidden_channels=hidden)]
    with torch.no_grad():
        for p in (p for layer in layers for p in layer.parameters()):
            p.copy_(0.3 * torch.randn_like(p))
    layers[0].initialized.fill_(1)
    return [layer.to(device, dtype) for layer in layers]


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(100, 12, 32, 32), (100, 24, 16, 16), (7, 5, 9, 11), (3, 24, 8, 8), (2, 2, 3, 17)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("with_actnorm", [True, False], ids=["actnorm", "no-actnorm"])
@pytest.mark.parametrize("channels_last", [True, False], ids=["h-nhwc", "h-nchw"])
def test_fused_step_matches_the_layers_reverses(shape, dtype, with_actnorm, channels_last, monkeypatch):
    monkeypatch.setattr(coupling_module, "CHANNELS_LAST_ON_CUDA", channels_last)
    b, c, h, w = shape
    actnorm, unit, coupling = _step(c, "cuda", dtype)
    layers = [actnorm, unit, coupling] if with_actnorm else [unit, coupling]
    y = torch.randn(b, c, h, w, device="cuda", dtype=dtype)
    with torch.no_grad():
        ref = unit.reverse(coupling.reverse(y))
        if with_actnorm:
            ref = actnorm.reverse(ref)
        fused = fused_step_reverse(layers, len(layers) - 1, y)
        assert fused is not None, "the fused kernel did not run"
        out, n = fused
        assert n == len(layers)
        assert torch.equal(out, fused_step_reverse(layers, len(layers) - 1, y)[0])  # repeatable
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert _rel(out, ref) < tol


@pytest.mark.cuda
def test_model_reverse_with_the_fused_steps_is_bitwise_the_layer_by_layer_one(monkeypatch):
    cfg = {"family": "inverse_flow", "num_blocks": 2, "block_size": 3, "coupling_hidden": 32}
    torch.manual_seed(0)
    model = build_model(cfg, (3, 16, 16)).cuda()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    for m in model.modules():
        if isinstance(m, ActNorm):
            m.initialized.fill_(1)
    x = torch.randint(0, 256, (8, 3, 16, 16), device="cuda").float()
    with torch.no_grad():
        z, _, splits = model.encode(x)
        fused = model.reverse(z, splits, requantize=False)
        monkeypatch.setenv("INV_FLOW_FUSED_SAMPLING", "0")
        plain = model.reverse(z, splits, requantize=False)
        plain_reconstruction = model.reconstruct(x)
    assert torch.equal(fused, plain)
    monkeypatch.delenv("INV_FLOW_FUSED_SAMPLING")
    assert torch.equal(model.reconstruct(x), plain_reconstruction)


def test_conv2d_chain_fused_is_none_where_it_does_not_apply(device):
    actnorm, unit, coupling = _step(6, device, torch.float32)
    y = torch.randn(2, 6, 5, 7, device=device)
    chain = unit.conv._chain()
    terms = coupling.reverse_terms(y)
    ends = dict(coupling=terms, actnorm=(actnorm.log_scale, actnorm.bias))
    if device == "cpu":
        assert ops.conv2d_chain_fused(y, *chain, **ends) is None
    assert ops.conv2d_chain_fused(y, *chain, **ends) is None  # the parameters want gradients
    with torch.no_grad():
        assert ops.conv2d_chain_fused(y.half(), *[[w.half() for w in chain[0]], chain[1]]) is None
        out = ops.conv2d_chain_fused(y, *chain, coupling=coupling.reverse_terms(y),
                                     actnorm=(actnorm.log_scale, actnorm.bias))
        assert (out is None) == (device == "cpu")


def test_conv2d_chain_fused_bad_arguments():
    x = torch.randn(2, 4, 5, 5)
    ws = [torch.randn(4, 4, 3, 3) for _ in range(4)]
    h = torch.randn(2, 4, 5, 5)
    with pytest.raises(ValueError, match="weights and orders"):
        ops.conv2d_chain_fused(x, ws, ORDERS4[:3])
    with pytest.raises(ValueError, match="at most 4 layers"):
        ops.conv2d_chain_fused(x, ws + ws[:1], ORDERS4 + ["TL"])
    with pytest.raises(ValueError, match=r"coupling\[0\] \(h\) must have shape"):
        ops.conv2d_chain_fused(x, ws, ORDERS4, coupling=(torch.randn(2, 3, 5, 5), 2.0, -0.1))
    with pytest.raises(ValueError, match=r"coupling\[0\] \(h\) must have shape"):
        ops.conv2d_chain_fused(x, ws, ORDERS4, coupling=(torch.randn(2, 8, 5, 5), 2.0, -0.1))
    with pytest.raises(ValueError, match=r"coupling\[0\] \(h\) must have shape"):
        ops.conv2d_chain_fused(x, ws, ORDERS4, coupling=(torch.randn(2, 4, 5, 6), 2.0, -0.1))
    with pytest.raises(TypeError, match=r"coupling\[0\] \(h\)"):
        ops.conv2d_chain_fused(x, ws, ORDERS4, coupling=(h.double(), 2.0, -0.1))
    with pytest.raises(ValueError, match=r"actnorm\[1\] \(bias\) must have shape \(4,\)"):
        ops.conv2d_chain_fused(x, ws, ORDERS4, actnorm=(torch.zeros(4), torch.zeros(5)))
    with pytest.raises(TypeError, match=r"actnorm\[0\] \(log_scale\)"):
        ops.conv2d_chain_fused(x, ws, ORDERS4, actnorm=([0.0] * 4, torch.zeros(4)))
    with pytest.raises(ValueError, match="kernel|weight|channel"):
        ops.conv2d_chain_fused(x, [torch.randn(3, 3, 3, 3)], ["TL"])


def test_chains_with_mixed_kernel_sizes(device):
    """The chain kernels read every weight with the first one's kernel size: a chain of mixed
    sizes runs layer by layer (conv2d_chain) or is refused (conv2d_chain_fused)."""
    torch.manual_seed(4)
    x = torch.randn(2, 4, 6, 5, device=device)
    ws = [0.1 * torch.randn(4, 4, k, k, device=device) for k in (3, 5, 3)]
    orders = ORDERS4[:3]
    with torch.no_grad():
        ref = x
        for w, order in zip(ws, orders):
            ref = ops.conv2d(ref, w, order)
        assert torch.equal(ops.conv2d_chain(x, ws, orders), ref)
        with pytest.raises(ValueError, match="weights must all have one shape"):
            ops.conv2d_chain_fused(x, ws, orders)
