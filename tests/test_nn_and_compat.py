"""InvConv2d / InvFlowUnit layers and the reference-compatible functions."""

import pytest
import torch

import inv_conv
import inv_conv_with_bp
from inv_conv import reference

from conftest import ORDERS, random_problem


@pytest.mark.parametrize("direction", ["inverse", "conv"])
@pytest.mark.parametrize("order", ORDERS)
def test_invconv2d_round_trip_and_zero_logdet(direction, order):
    layer = inv_conv.InvConv2d(5, kernel_size=(3, 2), order=order, direction=direction).double()
    with torch.no_grad():
        layer.weight.normal_(0, 0.2)
    x = torch.randn(3, 5, 6, 7, dtype=torch.float64)
    z, logdet = layer(x)
    assert logdet.shape == (3,) and torch.all(logdet == 0)
    torch.testing.assert_close(layer.reverse(z), x, rtol=1e-9, atol=1e-9)
    want = reference.inv_conv2d(x, layer.weight, order) if direction == "inverse" else reference.conv2d(x, layer.weight, order)
    torch.testing.assert_close(z, want.detach(), rtol=1e-9, atol=1e-9)


def test_invconv2d_logdet_equals_dense_log_abs_det():
    layer = inv_conv.InvConv2d(2, 3, "BL").double()
    with torch.no_grad():
        layer.weight.normal_(0, 0.5)
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: layer(t)[0], x).reshape(24, 24)
    torch.testing.assert_close(torch.linalg.slogdet(jac).logabsdet, layer(x)[1][0], atol=1e-9, rtol=0)


def test_dense_reference_layer_matches_fast_layer_and_gradients():
    fast = inv_conv.InvConv2d(3, 3, "TR").double()
    dense = inv_conv.InvConv2d(3, 3, "TR", dense_reference=True).double()
    dense.load_state_dict(fast.state_dict())
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    g = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    (fast(x)[0] * g).sum().backward()
    (dense(x)[0] * g).sum().backward()
    torch.testing.assert_close(fast.weight.grad, dense.weight.grad, rtol=1e-9, atol=1e-9)


def test_masked_weight_entries_get_zero_gradient_from_the_op():
    layer = inv_conv.InvConv2d(4, 3, "TL")
    layer(torch.randn(2, 4, 5, 5))[0].square().sum().backward()
    anchor_grad = layer.weight.grad[:, :, 2, 2]
    assert torch.all(torch.triu(anchor_grad) == 0)
    assert torch.any(torch.tril(anchor_grad, -1) != 0)


@pytest.mark.parametrize("direction", ["inverse", "conv"])
def test_inv_flow_unit(direction):
    unit = inv_conv.InvFlowUnit(3, 3, direction=direction).double()
    for layer in unit.layers:
        with torch.no_grad():
            layer.weight.normal_(0, 0.2)
    assert [layer.order for layer in unit.layers] == list(ORDERS)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    z, logdet = unit(x)
    torch.testing.assert_close(unit.reverse(z), x, rtol=1e-9, atol=1e-9)
    want = x
    for layer in unit.layers:
        fn = reference.inv_conv2d if direction == "inverse" else reference.conv2d
        want = fn(want, layer.weight, layer.order)
    torch.testing.assert_close(z, want.detach(), rtol=1e-9, atol=1e-9)
    assert torch.all(logdet == 0)


def test_layer_init_is_near_identity():
    layer = inv_conv.InvConv2d(8, 3)
    x = torch.randn(2, 8, 10, 10)
    z, _ = layer(x)
    assert (z - x).norm() / x.norm() < 0.2


@pytest.mark.parametrize("module", [inv_conv, inv_conv_with_bp])
def test_reference_compatible_functions(module):
    y, kernel = random_problem((2, 3, 5, 6, 3, 3))
    g = torch.randn_like(y)
    out = torch.empty_like(y)
    res = module.inverse(y, kernel, out)
    assert isinstance(res, list) and len(res) == 1 and res[0] is out
    x = reference.inv_conv2d(y, kernel, "TL")
    torch.testing.assert_close(out, x)
    out_f = torch.empty_like(y)
    module.forward(x, kernel, out_f)
    torch.testing.assert_close(out_f, y)
    # dy = A⁻ᵀ g and dw = ∂⟨g, A⁻¹y⟩/∂kernel, against autograd through the dense oracle.
    y_ref = y.clone().requires_grad_(True)
    k_ref = kernel.clone().requires_grad_(True)
    (reference.inv_conv2d(y_ref, k_ref, "TL") * g).sum().backward()
    out_dy = torch.empty_like(y)
    assert module.dy(g, kernel, None, out_dy)[0] is out_dy
    torch.testing.assert_close(out_dy, y_ref.grad)
    out_dw = torch.empty_like(kernel)
    assert module.dw(y, kernel, g, torch.empty(1), out_dw)[0] is out_dw
    torch.testing.assert_close(out_dw, k_ref.grad)


def test_reference_compatible_output_shape_checked():
    y, kernel = random_problem((1, 2, 3, 3, 3, 3))
    with pytest.raises(ValueError, match="output must have shape"):
        inv_conv_with_bp.dw(y, kernel, y, None, torch.empty_like(y))
