"""Whole-model tests for inv_flow: exact density against a dense Jacobian (including the
multi-scale SplitPrior terms), sampling, reconstruction, build_model validation, presets."""

from __future__ import annotations

import math

import pytest
import torch

import inv_flow
from inv_flow import FlowSequential, bits_per_dim, build_model, initialize_actnorm
from inv_flow.layers import ActNorm
from conftest import HAS_INV_CONV, needs_inv_conv, randomize_parameters
from flow_oracles import brute_force_log_prob
from inv_flow.models import MODEL_DEFAULTS, PRESETS, _resolve_config, _validate, get_preset

DTYPE = torch.float64


def inv_conv_param(kind):
    marks = () if kind == "conv1x1" else (needs_inv_conv,)
    return pytest.param(kind, marks=marks, id=kind)


def make_model(cfg, image_shape, batch):
    """A float64 model with ActNorm initialised on ``batch`` and then all parameters
    (couplings, priors, convs, base) moved off their identity initialisation."""
    model = build_model(cfg, image_shape).to(DTYPE)
    initialize_actnorm(model, batch.floor())  # the model takes raw (integer) pixel values
    randomize_parameters(model, 0.2)
    return model


def _dequantized(x_int, seed):
    torch.manual_seed(seed)
    return x_int + torch.rand_like(x_int)  # what Dequantization draws after the same seed


MODEL_CASES = [
    # (config, image shape)
    ({"model": "glow", "num_blocks": 2, "block_size": 2, "split_prior": True, "actnorm": True,
      "activation": "Spline", "spline_tail_bound": 3.0, "coupling_hidden": 8,
      "learn_base": True}, (1, 4, 4)),
    ({"model": "glow", "num_blocks": 2, "block_size": 1, "split_prior": True, "actnorm": True,
      "activation": "SLR", "coupling_hidden": 8, "preprocess": "center",
      "learn_base": True}, (2, 4, 4)),
    ({"model": "glow", "num_blocks": 1, "block_size": 2, "split_prior": False,
      "actnorm": False, "activation": "LLR", "coupling_hidden": 8}, (3, 2, 4)),
    ({"model": "cnn", "num_blocks": 2, "block_size": 2, "activation": "SLR", "actnorm": True,
      "learn_base": True}, (2, 4, 4)),
    ({"model": "cnn", "num_blocks": 1, "block_size": 2, "activation": "SELU",
      "actnorm": False}, (1, 3, 5)),
    ({"model": "fc", "num_layers": 3, "activation": "Spline", "spline_tail_bound": 3.0,
      "learn_base": True}, (1, 4, 4)),
    ({"model": "fc", "num_layers": 2, "activation": "LLR", "actnorm": False}, (2, 2, 3)),
]


MODEL_CASE_PARAMS = [
    pytest.param(case, kind.values[0], marks=kind.marks, id=f"{case}-{kind.id}")
    for case in range(len(MODEL_CASES))
    for kind in ([inv_conv_param("conv1x1")] if MODEL_CASES[case][0]["model"] == "fc"
                 else [inv_conv_param(k) for k in ("conv1x1", "unit", "single")])
]


@pytest.mark.parametrize("case, kind", MODEL_CASE_PARAMS)
def test_model_log_prob_matches_dense_jacobian(case, kind):
    cfg, shape = MODEL_CASES[case]
    cfg = {**cfg, "inv_conv": kind, "num_levels": 256}
    torch.manual_seed(1000 + case)
    x_int = torch.randint(0, 256, (2,) + shape).to(DTYPE)
    model = make_model(cfg, shape, _dequantized(x_int, 0))
    x_cont = _dequantized(x_int, 7)
    torch.manual_seed(7)
    z, log_prob = model(x_int)
    expected = brute_force_log_prob(model, x_cont)
    assert log_prob.shape == (2,) and torch.isfinite(log_prob).all()
    torch.testing.assert_close(log_prob, expected, rtol=1e-8, atol=1e-7)
    torch.testing.assert_close(model.reconstruct(x_int), x_int)


@needs_inv_conv
@pytest.mark.parametrize("direction", ["inverse", "conv"])
def test_direction_and_dense_reference_give_the_same_density_and_gradients(direction):
    shape = (1, 4, 4)
    cfg = {"model": "glow", "num_blocks": 2, "block_size": 1, "coupling_hidden": 4,
           "inv_conv": "unit", "direction": direction}
    torch.manual_seed(3)
    x_int = torch.randint(0, 256, (3,) + shape).to(DTYPE)
    fast = make_model({**cfg, "modified_grad": True}, shape, _dequantized(x_int, 0))
    dense = build_model({**cfg, "modified_grad": False}, shape).to(DTYPE)
    dense.load_state_dict(fast.state_dict())
    log_probs, grads = [], []
    for model in (fast, dense):
        torch.manual_seed(11)
        log_prob = model.log_prob(x_int)
        (-log_prob.mean()).backward()
        log_probs.append(log_prob.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(log_probs[0], log_probs[1])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-7, atol=1e-9)
    assert grads[0].abs().sum() > 0
    if direction == "conv":  # FInC direction also matches the brute-force density
        torch.testing.assert_close(log_probs[0], brute_force_log_prob(fast, _dequantized(x_int, 11)))


def test_log_prob_is_density_on_pixel_scale_and_bits_per_dim():
    """An untrained glow with identity-initialised layers: the density in [0, 256)^D must
    integrate the Gaussian base through scaling/logit — check the constant explicitly."""
    shape = (1, 4, 4)
    model = build_model({"model": "glow", "num_blocks": 1, "block_size": 1, "actnorm": False,
                         "inv_conv": "conv1x1", "split_prior": False, "preprocess": "center",
                         "coupling_hidden": 4}, shape).to(DTYPE)
    with torch.no_grad():  # make the 1x1 conv the identity -> the flow is x/256 - 0.5 then squeeze
        conv = model.layers[3].matrix
        conv.lower.zero_(); conv.upper.zero_(); conv.log_abs_diag.zero_()
        conv.permutation.copy_(torch.eye(4)); conv.sign_diag.fill_(1)
    x_int = torch.randint(0, 256, (5,) + shape).to(DTYPE)
    torch.manual_seed(5)
    log_prob = model.log_prob(x_int)
    y = _dequantized(x_int, 5) / 256 - 0.5
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(y).sum((1, 2, 3)) - 16 * math.log(256)
    torch.testing.assert_close(log_prob, expected)
    bpd = bits_per_dim(log_prob, 16)
    torch.testing.assert_close(bpd, -expected / (16 * math.log(2)))
    torch.testing.assert_close(model.bits_per_dim(log_prob), bpd)
    assert model.num_dims == 16


def test_layer_logdets_add_up_once():
    shape = (1, 8, 8)
    torch.manual_seed(0)
    x_int = torch.randint(0, 256, (4,) + shape).float()
    model = build_model({"model": "glow", "num_blocks": 2, "block_size": 2, "inv_conv": "conv1x1",
                         "coupling_hidden": 8, "activation": "SLR"}, shape)
    randomize_parameters(model, 0.2)
    torch.manual_seed(1)
    z, log_prob, per_layer = model(x_int, return_layer_logdets=True)
    assert list(per_layer) == model.layer_names
    assert all(v.shape == (4,) for v in per_layer.values())
    total = model.base.log_prob(z) + sum(per_layer.values())
    torch.testing.assert_close(log_prob, total)
    assert set(model.last_layer_logdets) == set(model.layer_names)
    assert all(isinstance(v, float) for v in model.last_layer_logdets.values())
    split_names = [n for n in model.layer_names if n.endswith("SplitPrior")]
    assert len(split_names) == 1


@pytest.mark.parametrize("kind", [inv_conv_param(k) for k in ("conv1x1", "unit")])
def test_sampling_shapes_temperature_and_reverse(kind):
    shape = (1, 8, 8)
    model = build_model({"model": "glow", "num_blocks": 2, "block_size": 2, "inv_conv": kind,
                         "coupling_hidden": 8, "split_prior": True}, shape)
    initialize_actnorm(model, torch.randint(0, 256, (16,) + shape).float())
    randomize_parameters(model, 0.05)
    samples = model.sample(6)
    assert samples.shape == (6,) + shape
    assert torch.equal(samples, samples.round()) and samples.min() >= 0 and samples.max() <= 255
    assert len(torch.unique(samples.reshape(6, -1), dim=0)) > 1
    cold = model.sample(4, temperature=0.0)  # base mean and prior means only: deterministic
    assert torch.equal(cold, cold[:1].expand_as(cold))
    assert model.base.shape == (8, 2, 2)  # 1x8x8 -> 4x4x4 -> split 2x4x4 -> 8x2x2
    z = model.base.sample(3)
    assert model.reverse(z).shape == (3,) + shape
    with pytest.raises(ValueError):
        model.reverse(z, splits=[])
    # encode returns the factored-out parts, with which reverse is exact
    x_int = torch.randint(0, 256, (3,) + shape).float()
    z, log_prob, splits = model.encode(x_int)
    assert [s.shape for s in splits] == [(3, 2, 4, 4)]
    torch.testing.assert_close(model.reverse(z, splits), x_int)


def test_fc_and_cnn_sample_and_reconstruct():
    for cfg, shape in (({"model": "fc", "num_layers": 2, "activation": "SELU"}, (1, 4, 4)),
                       ({"model": "cnn", "num_blocks": 2, "block_size": 1,
                         "inv_conv": "conv1x1", "activation": "LLR"}, (3, 4, 6))):
        model = build_model(cfg, shape).to(DTYPE)
        x_int = torch.randint(0, 256, (5,) + shape).to(DTYPE)
        torch.testing.assert_close(model.reconstruct(x_int), x_int)
        assert model.layers[0].midpoint is False  # reconstruct restores random dequantization
        assert model.sample(2).shape == (2,) + shape


def test_actnorm_initialisation_survives_reload():
    shape = (1, 4, 4)
    cfg = {"model": "glow", "num_blocks": 1, "block_size": 2, "inv_conv": "conv1x1",
           "coupling_hidden": 4}
    model = build_model(cfg, shape)
    x_int = torch.randint(0, 256, (8,) + shape).float()
    assert initialize_actnorm(model, x_int) == 2
    reloaded = build_model(cfg, shape)
    reloaded.load_state_dict(model.state_dict())
    assert all(bool(m.initialized) for m in reloaded.modules() if isinstance(m, ActNorm))
    other = torch.randint(0, 256, (8,) + shape).float()
    torch.manual_seed(2)
    expected = model.log_prob(other)
    torch.manual_seed(2)
    torch.testing.assert_close(reloaded.log_prob(other), expected)


def test_training_step_produces_finite_gradients_everywhere():
    shape = (1, 8, 8)
    model = build_model({**get_preset("digits"), "inv_conv": "conv1x1", "activation": "Spline"},
                        shape)
    x_int = torch.randint(0, 17, (8,) + shape).float()
    loss = bits_per_dim(model.log_prob(x_int), 64).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("cfg, shape", [
    ({"model": "glow", "num_blocks": 3}, (1, 28, 28)),      # 28 not divisible by 8
    ({"model": "glow", "num_blocks": 2}, (3, 6, 8)),         # 6 not divisible by 4
    ({"model": "glow", "num_blocks": 1}, (1, 5, 4)),
    ({"model": "cnn", "num_blocks": 3}, (1, 6, 6)),          # cnn squeezes num_blocks-1 times
    ({"model": "glow"}, (1, 8)),                             # not (C, H, W)
    ({"model": "glow"}, (0, 8, 8)),                          # no channels
    ({"model": "resnet"}, (1, 8, 8)),
    ({"activation": "ReLU"}, (1, 8, 8)),
    ({"inv_conv": "fft"}, (1, 8, 8)),
    ({"direction": "sideways"}, (1, 8, 8)),
    ({"num_blocks": 0}, (1, 8, 8)),
    ({"block_size": 2.5}, (1, 8, 8)),
    ({"kernel_size": 0}, (1, 8, 8)),
    ({"preprocess": "zscore"}, (1, 8, 8)),
])
def test_build_model_rejects_what_it_cannot_take(cfg, shape):
    with pytest.raises(ValueError):
        build_model(cfg, shape)


def test_build_model_defaults_and_unknown_keys():
    # missing keys take defaults; keys meant for the trainer are ignored
    cfg = _resolve_config({"lr": 1.0, "epochs": 3, "activation": None, "num_blocks": None})
    assert cfg["num_blocks"] == MODEL_DEFAULTS["num_blocks"] and cfg["activation"] is None
    model = build_model({"model": "cnn", "inv_conv": "conv1x1", "lr": 1e-3}, (1, 4, 4))
    assert isinstance(model, FlowSequential)
    assert [type(layer).__name__ for layer in model.layers[:3]] == [
        "Dequantization", "Normalization", "LogitTransform"]


def test_presets_are_consistent():
    expected_levels = {"mnist": (3, 32), "cifar10": (2, 16), "imagenet32": (2, 16),
                       "imagenet64": (2, 16), "celeba32": (3, 32), "celeba64": (3, 32),
                       "celeba128": (3, 32)}
    assert set(PRESETS) == set(expected_levels) | {"digits", "photo_crops"}
    for name, (blocks, steps) in expected_levels.items():
        preset = get_preset(name)
        assert (preset["num_blocks"], preset["block_size"]) == (blocks, steps), name
    assert get_preset("cifar10")["image_shape"] == (3, 32, 32)
    assert get_preset("imagenet64")["image_shape"] == (3, 64, 64)
    assert get_preset("celeba128")["image_shape"] == (3, 128, 128)
    mnist = get_preset("mnist")
    assert mnist["image_shape"] == (1, 32, 32) and mnist["pad_to"] == (32, 32)
    with pytest.raises(ValueError, match="divisible"):
        build_model(mnist, mnist["source_shape"])  # unpadded MNIST cannot take 3 squeezes
    with pytest.raises(ValueError):
        get_preset("svhn")
    get_preset("digits")["epochs"] = -1  # a copy: the preset itself is unchanged
    assert PRESETS["digits"]["epochs"] > 0


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds(name):
    preset = get_preset(name)
    shape = preset["image_shape"]
    _validate(_resolve_config(preset), shape)
    if not HAS_INV_CONV:
        preset["inv_conv"] = "conv1x1"
    if name != "digits":  # full-size big models are slow to construct; shrink depth/width only
        preset.update(block_size=1, coupling_hidden=4)
    model = build_model(preset, shape)
    blocks = preset["num_blocks"]
    channels, height, width = shape
    for _ in range(blocks - 1):
        channels, height, width = channels * 2, height // 2, width // 2  # squeeze x4, split /2
    assert model.base.shape == (channels * 4, height // 2, width // 2)
    assert model.num_dims == math.prod(shape)


def test_digits_preset_runs_forward_and_sample():
    preset = get_preset("digits")
    if not HAS_INV_CONV:
        preset["inv_conv"] = "conv1x1"
    model = build_model(preset, preset["image_shape"])
    levels = preset["num_levels"]
    x_int = torch.randint(0, levels, (16,) + tuple(preset["image_shape"])).float()
    initialize_actnorm(model, x_int)
    bpd = bits_per_dim(model.log_prob(x_int), 64)
    assert torch.isfinite(bpd).all() and (bpd > 0).all()
    samples = model.sample(4)
    assert samples.shape == (4, 1, 8, 8) and samples.max() <= levels - 1


def test_package_exports():
    for name in ("FlowSequential", "bits_per_dim", "build_model", "PRESETS",
                 "initialize_actnorm", "DiagonalGaussian", "get_preset"):
        assert hasattr(inv_flow, name)


def test_build_model_rejects_unknown_keys_with_a_did_you_mean():
    # A misspelt key used to be ignored silently (the model got the default instead).
    with pytest.raises(ValueError, match=r"unknown config key 'modle'\. Did you mean model\?"):
        build_model({"modle": "cnn"}, (1, 8, 8))
    with pytest.raises(ValueError, match="Did you mean num_blocks"):
        build_model({"num_block": 1}, (1, 8, 8))
    build_model({"model": "fc", "lr": 1e-3, "epochs": 3}, (1, 2, 2))  # trainer keys are fine


@pytest.mark.parametrize("kind", ["unit", "single"])
def test_mix_1x1_adds_a_channel_mixing_after_each_masked_step_and_stays_exact(kind):
    from inv_flow.layers import InvertibleConv1x1

    cfg, shape = MODEL_CASES[2]  # no SplitPrior, no spline: random weights stay well conditioned
    cfg = {**cfg, "inv_conv": kind, "num_levels": 256, "family": "inverse_flow", "mix_1x1": True}
    torch.manual_seed(5)
    x_int = torch.randint(0, 256, (2,) + shape).to(DTYPE)
    model = make_model(cfg, shape, _dequantized(x_int, 0))
    plain = build_model({**cfg, "mix_1x1": False}, shape)
    mixing = [m for m in model.modules() if isinstance(m, InvertibleConv1x1)]
    assert len(mixing) == cfg["num_blocks"] * cfg["block_size"]
    assert not [m for m in plain.modules() if isinstance(m, InvertibleConv1x1)]
    torch.manual_seed(7)
    _, log_prob = model(x_int)
    torch.testing.assert_close(log_prob, brute_force_log_prob(model, _dequantized(x_int, 7)),
                               rtol=1e-8, atol=1e-7)
    torch.testing.assert_close(model.reconstruct(x_int), x_int)


@needs_inv_conv
@pytest.mark.parametrize("family, extra", [("inverse_flow", {"masked_conv": "unit"}),
                                           ("inverse_flow", {"masked_conv": "single"}),
                                           ("finc_flow", {"finc_unit": "unit"})])
def test_masked_init_std_sets_the_spread_of_the_masked_kernels(family, extra):
    import inv_conv

    def kernels(std):
        torch.manual_seed(0)
        model = build_model({"model": "glow", "num_blocks": 1, "block_size": 2, "family": family,
                             "masked_init_std": std, **extra}, (4, 8, 8))
        found = [m.weight for m in model.modules() if isinstance(m, inv_conv.InvConv2d)]
        assert found
        return torch.cat([w.detach().flatten() for w in found])

    assert torch.count_nonzero(kernels(0.0)) == 0  # exactly the identity map
    for std in (0.01, 0.2):
        assert kernels(std).std().item() == pytest.approx(std, rel=0.1)
    with pytest.raises(ValueError, match="masked_init_std"):
        build_model({"model": "glow", "family": family, "masked_init_std": -0.1}, (4, 8, 8))


@needs_inv_conv
@pytest.mark.parametrize("case", [0, 3], ids=["glow", "cnn"])
def test_actnorm_position_after_puts_each_actnorm_behind_its_mixing_and_stays_exact(case):
    from inv_flow.layers import InvertibleConv1x1

    cfg, shape = MODEL_CASES[case]
    cfg = {**cfg, "num_levels": 256, "family": "inverse_flow", "mix_1x1": True}

    def kinds(position):
        model = build_model({**cfg, "actnorm_position": position}, shape)
        layers = [m for m in model.modules() if isinstance(m, (ActNorm, InvertibleConv1x1))]
        return ["norm" if isinstance(m, ActNorm) else "1x1" for m in layers]

    before, after = kinds("before"), kinds("after")
    steps = cfg["num_blocks"] * cfg["block_size"]
    assert before == ["norm", "1x1"] * steps and after == ["1x1", "norm"] * steps
    torch.manual_seed(5)
    x_int = torch.randint(0, 256, (2,) + shape).to(DTYPE)
    model = make_model({**cfg, "actnorm_position": "after"}, shape, _dequantized(x_int, 0))
    torch.manual_seed(7)
    _, log_prob = model(x_int)
    torch.testing.assert_close(log_prob, brute_force_log_prob(model, _dequantized(x_int, 7)),
                               rtol=1e-8, atol=1e-7)
    with pytest.raises(ValueError, match="actnorm_position"):
        build_model({**cfg, "actnorm_position": "middle"}, shape)
