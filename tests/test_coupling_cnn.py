"""The coupling CNN's no-grad path on CUDA (each conv + bias + ReLU as one cuDNN call), against
the same net in float64 and against the cases where it must not run."""

import copy
import warnings

import pytest
import torch
from torch import nn

from inv_flow.layers import coupling as coupling_module
from inv_flow.layers.coupling import AffineCoupling

pytestmark = pytest.mark.cuda


@pytest.fixture
def fused_calls(monkeypatch):
    """Counts calls of torch.cudnn_convolution_relu."""
    calls = []
    real = torch.cudnn_convolution_relu

    def counting(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(torch, "cudnn_convolution_relu", counting)
    return calls


@pytest.fixture
def no_tf32(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


def _float64_net(layer):
    """The oracle: a float64 copy of the layer's net (the layer itself stays as it is)."""
    return copy.deepcopy(layer.net).double()


def _coupling(c, hidden, kernel_size, seed):
    torch.manual_seed(seed)
    layer = AffineCoupling(c, hidden_channels=hidden, kernel_size=kernel_size)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(0.3 * torch.randn_like(p))
    return layer.cuda()


@pytest.mark.parametrize("shape", [(5, 12, 32, 32), (3, 7, 9, 13), (2, 2, 1, 17), (1, 24, 16, 8)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("channels_last", [True, False], ids=["nhwc", "nchw"])
def test_fused_net_matches_the_float64_net(shape, kernel_size, channels_last, fused_calls, no_tf32, monkeypatch):
    monkeypatch.setattr(coupling_module, "CHANNELS_LAST_ON_CUDA", channels_last)
    b, c, h, w = shape
    layer = _coupling(c, 48, kernel_size, seed=sum(shape) + kernel_size)
    y = torch.randn(b, c, h, w, device="cuda")
    with torch.no_grad():
        out = layer.net_output(y[:, :layer.num_conditioning])
        assert len(fused_calls) == 2, "the fused conv + ReLU did not run"
        assert torch.equal(out, layer.net_output(y[:, :layer.num_conditioning]))  # repeatable
        ref = _float64_net(layer)(y[:, :layer.num_conditioning].double())
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert ((out.double() - ref).abs().max() / ref.abs().max()).item() < 1e-5


def test_fused_net_reverse_round_trip_under_tf32(fused_calls):
    layer = _coupling(12, 64, 3, seed=1)
    y = torch.randn(4, 12, 16, 16, device="cuda")
    with torch.no_grad():
        back = layer.reverse(layer(y)[0])
    assert fused_calls
    assert ((back - y).abs().max() / y.abs().max()).item() < 1e-5


def _calls_for(layer, y, fused_calls):
    fused_calls.clear()
    layer.net_output(y[:, :layer.num_conditioning])
    return len(fused_calls)


def test_fused_net_only_where_it_applies(fused_calls, monkeypatch):
    layer = _coupling(6, 16, 3, seed=2)
    y = torch.randn(2, 6, 8, 8, device="cuda")
    with torch.no_grad():
        assert _calls_for(layer, y, fused_calls) == 2
    # gradients wanted: the plain net, and gradients reach its parameters
    fused_calls.clear()
    out = layer.net_output(y[:, :3])
    assert len(fused_calls) == 0
    out.square().sum().backward()
    assert layer.net[0].weight.grad is not None and layer.net[0].weight.grad.abs().sum() > 0
    with torch.no_grad():
        monkeypatch.setenv("INV_FLOW_FUSED_CNN", "0")
        assert _calls_for(layer, y, fused_calls) == 0
        monkeypatch.delenv("INV_FLOW_FUSED_CNN")
        monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
        assert _calls_for(layer, y, fused_calls) == 0
        monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
        layer64 = _coupling(6, 16, 3, seed=2).double()
        assert _calls_for(layer64, y.double(), fused_calls) == 0
        layer.net[1] = nn.LeakyReLU(0.1)  # a changed net: not the function the fused pairs compute
        assert _calls_for(layer, y, fused_calls) == 0
        layer.net[1] = nn.ReLU()
        assert _calls_for(layer, y, fused_calls) == 2


def test_fused_net_not_with_deterministic_algorithms(fused_calls):
    layer = _coupling(6, 16, 3, seed=3)
    y = torch.randn(2, 6, 8, 8, device="cuda")
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with torch.no_grad():
            assert _calls_for(layer, y, fused_calls) == 0
    finally:
        torch.use_deterministic_algorithms(old)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_fused_net_in_half_precision(dtype, fused_calls):
    layer = _coupling(12, 32, 3, seed=4)
    y = torch.randn(3, 12, 10, 14, device="cuda")
    with torch.no_grad():
        ref = _float64_net(layer)(y[:, :6].double())
        layer.to(dtype)
        out = layer.net_output(y[:, :6].to(dtype))
    assert len(fused_calls) == 2 and out.dtype == dtype
    assert ((out.double() - ref).abs().max() / ref.abs().max()).item() < 3e-2


def test_a_refused_fused_op_falls_back_to_the_plain_net_with_one_warning(monkeypatch):
    calls = []

    def refusing(*args):
        calls.append(1)
        raise RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED\nmore")

    monkeypatch.setattr(torch, "cudnn_convolution_relu", refusing)
    monkeypatch.setattr(coupling_module, "_fused_cnn_refused", False)
    layer = _coupling(6, 16, 3, seed=5)
    y = torch.randn(2, 6, 8, 8, device="cuda")
    with torch.no_grad():
        ref = layer.net(y[:, :3].contiguous(memory_format=torch.channels_last))
        with pytest.warns(RuntimeWarning, match="CUDNN_STATUS_NOT_SUPPORTED"):
            out = layer.net_output(y[:, :3])
        assert torch.equal(out, ref)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert torch.equal(layer.net_output(y[:, :3]), ref)  # no second try, no second warning
    assert len(calls) == 1
