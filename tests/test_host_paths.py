"""The host-side shortcuts of inv_flow's layers: values derived from parameters reused between
no-grad calls (never stale, never under autograd, never saved), volume-preserving layers'
zero logdets left out of the sum, and the coupling's sampling direction. Each result is
compared with the plain formula computed afresh."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from inv_flow.distributions import DiagonalGaussian
from inv_flow.flows import FlowSequential
from inv_flow.layers import (ActNorm, AffineCoupling, Dequantization, Flatten, FlowLayer,
                             InvertibleConv1x1, Normalization, SplitPrior, Squeeze, UnSqueeze)
from inv_flow.layers.base import logdet_is_zero
from inv_flow.layers.derived import clear_derived_caches
from conftest import needs_inv_conv, randomize_parameters


def _actnorm(channels: int = 4, dtype=torch.float32) -> ActNorm:
    layer = ActNorm(channels).to(dtype)
    layer(torch.randn(16, channels, 3, 3, dtype=dtype) * 3 + 1)  # data-dependent init
    return randomize_parameters(layer)


def _reverse_oracle(layer: ActNorm, y: torch.Tensor) -> torch.Tensor:
    scale = torch.exp(-layer.log_scale.detach()).view(1, -1, 1, 1)
    return y * scale - layer.bias.detach().view(1, -1, 1, 1)


def _forward_oracle(layer: ActNorm, x: torch.Tensor):
    log_scale, bias = layer.log_scale.detach(), layer.bias.detach()
    y = (x + bias.view(1, -1, 1, 1)) * log_scale.exp().view(1, -1, 1, 1)
    return y, (x.shape[2] * x.shape[3] * log_scale.sum()).expand(x.shape[0])


def _assert_matches_oracles(layer: ActNorm) -> None:
    """No-grad forward and reverse, twice (the second call may reuse values), bitwise equal to
    the formulas on the current parameters."""
    dtype = layer.bias.dtype
    x = torch.randn(3, layer.num_channels, 4, 5, dtype=dtype)
    with torch.no_grad():
        for _ in range(2):
            assert torch.equal(layer.reverse(x), _reverse_oracle(layer, x))
            y, logdet = layer(x)
            y_ref, logdet_ref = _forward_oracle(layer, x)
            assert torch.equal(y, y_ref) and torch.equal(logdet, logdet_ref)


def _count_ops(fn, names=("aten::exp", "aten::neg")) -> int:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key in names)


def test_no_grad_calls_reuse_what_depends_on_parameters_only():
    layer = _actnorm()
    y = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        layer.reverse(y), layer(y)
        assert _count_ops(lambda: layer.reverse(y)) == 0
        assert _count_ops(lambda: layer(y), ("aten::exp", "aten::sum")) == 0
    # with gradients the formula is evaluated (and differentiated) every time
    assert _count_ops(lambda: layer.reverse(y)) == 2


def _adam(lr=0.1, **kw):
    def make(params):
        try:
            return torch.optim.Adam(params, lr=lr, **kw)
        except RuntimeError as err:  # fused on the CPU needs a recent torch
            pytest.skip(f"Adam({kw}): {err}")
    return make


OPTIMIZERS = {
    "adam": _adam(),
    "adam_foreach": _adam(foreach=True),
    # fused optimizers change the parameters without bumping their version counters
    "adam_fused": _adam(fused=True),
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
}


@pytest.mark.parametrize("make_optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_stored_values_follow_optimizer_steps(make_optimizer):
    layer = _actnorm()
    optimizer = make_optimizer(list(layer.parameters()))
    for _ in range(3):
        _assert_matches_oracles(layer)
        optimizer.zero_grad()
        y, logdet = layer(torch.randn(4, 4, 3, 3))
        (y.square().sum() + logdet.sum()).backward()
        optimizer.step()
    _assert_matches_oracles(layer)


def _set_log_scale_data(layer):
    layer.log_scale.data = layer.log_scale.detach() * 2 + 1


def _swap_data_twice(layer):
    # ``.data =`` keeps the version counter; the second storage may be allocated where the
    # first one was, unless something still holds it
    for _ in range(2):
        layer.log_scale.data = layer.log_scale.detach() + 1


def _replace_parameter(layer):
    layer.log_scale = nn.Parameter(layer.log_scale.detach() + 0.5)


def _load_other_state(layer):
    layer.load_state_dict(_actnorm().state_dict())


def _in_place(layer):
    with torch.no_grad():
        layer.bias.add_(1.0)
        layer.log_scale.mul_(-1.0)


def _reinitialise(layer):
    layer.initialize_from(torch.randn(8, layer.num_channels, 2, 2) * 5)


def _to_double(layer):
    layer.double()


def _round_trip_precision(layer):
    # new storage each way: the float one may land where the first float storage was
    layer.half()
    layer.float()


MUTATIONS = {f.__name__.lstrip("_"): f for f in (
    _set_log_scale_data, _swap_data_twice, _replace_parameter, _load_other_state, _in_place, _reinitialise,
    _to_double, _round_trip_precision)}


@pytest.mark.parametrize("mutate", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_stored_values_follow_parameter_changes(mutate):
    layer = _actnorm()
    _assert_matches_oracles(layer)
    mutate(layer)
    _assert_matches_oracles(layer)


def test_stored_values_are_not_used_under_autograd():
    layer = _actnorm(dtype=torch.float64)
    y = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    with torch.no_grad():
        layer.reverse(y), layer(y)
    out = layer.reverse(y)
    z, logdet = layer(y)
    (out.sum() + z.square().sum() + logdet.sum()).backward()
    grads = [p.grad.clone() for p in (layer.bias, layer.log_scale)]
    bias = layer.bias.detach().clone().requires_grad_()
    log_scale = layer.log_scale.detach().clone().requires_grad_()
    view = (1, -1, 1, 1)
    ref_out = y * torch.exp(-log_scale).view(view) - bias.view(view)
    ref_z = (y + bias.view(view)) * log_scale.exp().view(view)
    ref_logdet = (9 * log_scale.sum()).expand(2)
    (ref_out.sum() + ref_z.square().sum() + ref_logdet.sum()).backward()
    assert torch.equal(grads[0], bias.grad) and torch.equal(grads[1], log_scale.grad)


class _CountExp(TorchDispatchMode):
    calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.exp.default:
            type(self).calls += 1
        return func(*args, **(kwargs or {}))


def test_dispatch_modes_see_every_op():
    layer = _actnorm()
    y = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        layer.reverse(y)
        with _CountExp():
            layer.reverse(y)
    assert _CountExp.calls == 1


def test_inference_mode_gives_the_uncached_results():
    layer = _actnorm()
    y = torch.randn(2, 4, 3, 3)
    with torch.inference_mode():
        first = layer.reverse(y)  # stored as an inference tensor
    with torch.no_grad():
        assert torch.equal(layer.reverse(y), first)
    with torch.inference_mode():
        assert torch.equal(layer.reverse(y), first)


def test_autocast_gives_the_uncached_results(device):
    # on CUDA autocast computes exp in float32: a value stored outside it has another dtype
    dtype = torch.float16 if device == "cuda" else torch.bfloat16
    layer = _actnorm().to(device, dtype)
    y = torch.randn(2, 4, 3, 3, device=device, dtype=dtype)
    for _ in range(2):
        for autocast in (False, True, False):
            with torch.no_grad(), torch.autocast(device, dtype=dtype, enabled=autocast):
                plain = _reverse_oracle(layer, y)
                out = layer.reverse(y)
                assert out.dtype == plain.dtype and torch.equal(out, plain)


def test_stored_values_are_not_state_and_not_copied():
    layer = _actnorm()
    with torch.no_grad():
        layer.reverse(torch.randn(2, 4, 3, 3))
    assert set(layer.state_dict()) == {"bias", "log_scale", "initialized"}
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert not clone.__dict__.get("_derived_cache")
        with torch.no_grad():
            clone.log_scale.add_(1.0)  # the clone's own parameters, not the original's
        _assert_matches_oracles(clone)
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    assert not torch.load(buffer, weights_only=False).__dict__.get("_derived_cache")
    clear_derived_caches(layer)
    assert not layer.__dict__.get("_derived_cache")


@needs_inv_conv
@pytest.mark.parametrize("fused", [False, True])
def test_model_samples_after_training_steps_match_a_fresh_copy(fused):
    from inv_flow.models import build_model

    torch.manual_seed(0)
    cfg = {"model": "glow", "num_blocks": 2, "block_size": 2, "actnorm": True,
           "split_prior": True, "coupling_hidden": 8, "image_shape": (3, 8, 8)}
    model = build_model(cfg, (3, 8, 8))
    batch = torch.randint(0, 256, (4, 3, 8, 8)).float()
    optimizer = _adam(lr=0.01, fused=fused)(model.parameters())
    for step in range(3):
        optimizer.zero_grad()
        (-model(batch)[1].mean()).backward()
        optimizer.step()
        torch.manual_seed(step)
        samples = model.sample(2, temperature=0.8)
        assert samples.isfinite().all()
        fresh = copy.deepcopy(model)
        torch.manual_seed(step)
        assert torch.equal(samples, fresh.sample(2, temperature=0.8))
        with torch.no_grad():
            torch.manual_seed(step)
            log_prob = model(batch)[1]
            torch.manual_seed(step)
            assert torch.equal(log_prob, fresh(batch)[1])


def _actnorm_chain(device, dtype=torch.float32) -> FlowSequential:
    """ActNorms of several widths between squeezes (as in the flows), data-initialised."""
    layers = [ActNorm(3), ActNorm(3), Squeeze(), ActNorm(12), Squeeze(), ActNorm(48), ActNorm(48)]
    model = FlowSequential(layers, DiagonalGaussian((48, 2, 2))).to(device, dtype)
    model(torch.randn(5, 3, 8, 8, device=device, dtype=dtype) * 2 + 1)
    return randomize_parameters(model)


def _reverse_chain_oracle(model: FlowSequential, z: torch.Tensor) -> torch.Tensor:
    for layer in reversed(list(model.layers)):
        z = _reverse_oracle(layer, z) if isinstance(layer, ActNorm) else layer.reverse(z)
    return z


@pytest.fixture
def batched_on_cpu(monkeypatch):
    """The CUDA-only batched refresh of ActNorm scales, also on the CPU (foreach ops loop per
    tensor there: the same results, so its logic can be tested without a GPU)."""
    import inv_flow.layers.actnorm as actnorm

    monkeypatch.setattr(actnorm, "_fuses_launches", lambda t: True)


@pytest.mark.usefixtures("batched_on_cpu")
def test_reverse_refreshes_every_actnorm_with_one_foreach_exp():
    model = _actnorm_chain("cpu")
    z = torch.randn(2, 48, 2, 2)
    with torch.no_grad():
        model.reverse(z)
        for layer in model.layers:
            if isinstance(layer, ActNorm):
                layer.log_scale.mul_(0.5)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model.reverse(z)
    # ops called by the layers themselves (on the CPU, foreach ops run per-tensor ops inside)
    top = [e.name for e in prof.events()
           if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
    assert top.count("aten::_foreach_exp") == 1 and "aten::exp" not in top


@pytest.mark.parametrize("batched", [False, True], ids=["per_layer", "batched"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reverse_through_refreshed_actnorms_is_bitwise_the_formula(device, dtype, batched,
                                                                    monkeypatch):
    import inv_flow.layers.actnorm as actnorm

    monkeypatch.setattr(actnorm, "_fuses_launches", lambda t: batched)  # (on every device)
    model = _actnorm_chain(device, dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    z = torch.randn(3, 48, 2, 2, device=device, dtype=dtype)
    for _ in range(3):
        with torch.no_grad():
            for _ in range(2):  # refreshed, then reused
                assert torch.equal(model.reverse(z), _reverse_chain_oracle(model, z))
        optimizer.zero_grad()
        (-model(torch.randn(4, 3, 8, 8, device=device, dtype=dtype))[1].mean() / 192).backward()
        optimizer.step()
        assert model.reverse(z).isfinite().all()
    # with gradients nothing is stored or reused, and gradients reach the parameters
    x = model.reverse(z)
    assert x.requires_grad
    x.sum().backward()


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
