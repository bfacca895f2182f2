"""Earlier option and class names (``inv_flow.options.ALIASES``, the renamed layers): an old
name builds exactly the model its new name builds, and a checkpoint or export whose saved
config uses the old names still loads, with today's names in the config it gives back."""

from __future__ import annotations

import json

import pytest
import torch

from inv_flow import compare
from inv_flow.checkpoint import atomic_save, load_checkpoint
from inv_flow.config import (ConfigError, apply_aliases, describe_options, load_config_file,
                             parse_overrides, resolve_config)
from inv_flow.experiment import Experiment
from inv_flow.models import build_model

from test_experiment import random_splits

pytest.importorskip("inv_conv")

SHAPE = (1, 8, 8)
SMALL = {"model": "glow", "num_blocks": 1, "block_size": 2, "coupling_hidden": 4,
         "num_levels": 256}


def _describe(model):
    """Every module's type, repr settings and the two switches the aliases set."""
    return [(type(m).__name__, m.extra_repr(), getattr(m, "dense_reference", None),
             getattr(m, "self_normalized_grad", None)) for m in model.modules()]


def _build(cfg):
    torch.manual_seed(0)
    return build_model({**SMALL, **cfg}, SHAPE)


@pytest.mark.parametrize("old, new", [
    ({"modified_grad": False}, {"dense_reference": True}),
    ({"modified_grad": "false", "family": "snf"}, {"self_normalized_grad": False, "family": "snf"}),
    ({"modified_grad": True}, {}),
    ({"inv_conv": "single"}, {"masked_conv": "single"}),
    ({"inv_conv": "conv1x1"}, {"family": "glow"}),
    ({"direction": "conv"}, {"family": "finc_flow", "finc_unit": "unit"}),
    ({"direction": "conv", "inv_conv": "single", "finc_unit": "grouped"},
     {"family": "finc_flow", "finc_unit": "unit", "masked_conv": "single"}),
    ({"family": "auto", "direction": "inverse"}, {"family": "inverse_flow"}),
    ({"family": "auto"}, {}),
    # next to a family, direction and inv_conv=conv1x1 were ignored, and are
    ({"family": "glow", "direction": "conv"}, {"family": "glow"}),
    ({"family": "snf", "inv_conv": "conv1x1"}, {"family": "snf"}),
    ({"family": "finc_flow", "direction": "inverse"}, {"family": "finc_flow"}),
    # an earlier name overrides the new one it stands for (a script adding it to a config)
    ({"dense_reference": False, "modified_grad": False}, {"dense_reference": True}),
])
def test_an_earlier_name_builds_the_model_of_its_new_name(old, new):
    old_model, new_model = _build(old), _build(new)
    assert _describe(old_model) == _describe(new_model)
    old_state, new_state = old_model.state_dict(), new_model.state_dict()
    assert list(old_state) == list(new_state)
    for key, value in old_state.items():
        assert torch.equal(value, new_state[key]), key


def test_the_aliases_reach_the_layers():
    def flags(cfg):
        found = [(m.dense_reference if hasattr(m, "dense_reference") else None,
                  getattr(m, "self_normalized_grad", None)) for m in _build(cfg).modules()]
        return {value for value in found if value != (None, None)}

    assert flags({"modified_grad": False}) == {(True, None)}
    assert flags({"modified_grad": True}) == {(False, None)}
    assert flags({"modified_grad": False, "family": "snf"}) == {(None, False)}


def test_fc_ignores_the_earlier_convolution_keys_and_refuses_a_family():
    assert _describe(_build({"model": "fc", "inv_conv": "conv1x1", "direction": "conv"})) == \
        _describe(_build({"model": "fc"}))
    with pytest.raises(ValueError, match="fc"):
        _build({"model": "fc", "family": "glow"})


@pytest.mark.parametrize("cfg, message", [
    ({"inv_conv": "fft"}, "inv_conv must be one of unit, single, conv1x1"),
    ({"direction": "sideways"}, "direction must be one of inverse, conv"),
    ({"modified_grad": "maybe"}, "modified_grad"),
    ({"family": "inverse_flow", "inv_conv": "conv1x1"}, "family='glow'"),
    ({"family": "finc_flow", "inv_conv": "conv1x1"}, "masked convolutions"),
])
def test_bad_values_of_earlier_names_are_config_errors(cfg, message):
    with pytest.raises(ConfigError, match=message):
        build_model({**SMALL, **cfg}, SHAPE)
    with pytest.raises(ConfigError, match=message):
        resolve_config("digits", cfg)


def test_resolved_configs_hold_only_todays_names():
    config = resolve_config("digits", parse_overrides(["modified_grad=false", "inv_conv=single",
                                                       "direction=conv"]))
    assert not {"modified_grad", "inv_conv", "direction"} & set(config)
    assert (config["family"], config["finc_unit"], config["masked_conv"]) == \
        ("finc_flow", "unit", "single")
    assert config["dense_reference"] is True and config["self_normalized_grad"] is False
    assert apply_aliases(config) == config  # nothing left to rewrite


def test_a_later_mapping_wins_over_an_alias_in_an_earlier_one(tmp_path):
    # --config says modified_grad=false, --set says dense_reference=false: --set wins.
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"modified_grad": False, "inv_conv": "single"}), encoding="utf-8")
    overrides = {**load_config_file(path), **parse_overrides(["dense_reference=false"])}
    config = resolve_config("digits", overrides)
    assert config["dense_reference"] is False and config["self_normalized_grad"] is False
    assert config["masked_conv"] == "single"


def test_inv_flow_options_lists_the_earlier_names():
    text = describe_options()
    for name in ("modified_grad", "inv_conv", "direction", "family=auto"):
        assert f"\n{name} " in text


@pytest.mark.parametrize("alias", ["direction=conv", "inv_conv=conv1x1"])
def test_compare_refuses_an_alias_that_changes_the_models(alias):
    args = compare.build_parser().parse_args(["--set", alias])
    with pytest.raises(ConfigError, match="--models"):
        compare.base_config(args)
    args = compare.build_parser().parse_args(["--set", "inv_conv=single"])
    assert compare.base_config(args)["masked_conv"] == "single"


# ------------------------------------------------------------- saved runs of earlier versions
#: today's keys -> what an earlier version wrote into the saved config for the same model
SAVED = [
    ({"family": "finc_flow", "finc_unit": "unit", "masked_conv": "single",
      "dense_reference": True, "self_normalized_grad": False},
     {"family": "auto", "finc_unit": "grouped", "inv_conv": "single", "direction": "conv",
      "modified_grad": False}),
    ({"family": "snf", "self_normalized_grad": False, "dense_reference": True},
     {"family": "snf", "inv_conv": "unit", "direction": "inverse", "modified_grad": False}),
    ({"family": "glow"},
     {"family": "auto", "inv_conv": "conv1x1", "direction": "inverse", "modified_grad": True}),
]


def _old_checkpoint(tmp_path, new, old):
    config = resolve_config("digits", {
        **SMALL, **new, "name": "old", "output_dir": str(tmp_path / "run"), "progress": False,
        "tensorboard": False, "sample_epochs": 0, "device": "cpu", "batch_size": 16})
    experiment = Experiment(config, datasets=random_splits())
    path = tmp_path / "old.tar"
    payload = experiment.state()
    saved = {key: value for key, value in payload["config"].items()
             if key not in ("dense_reference", "self_normalized_grad", "masked_conv")}
    payload["config"] = {**saved, **old}
    atomic_save(payload, path)
    experiment.close()
    return path, config, payload["model"]


@pytest.mark.parametrize("new, old", SAVED)
def test_a_checkpoint_with_earlier_names_resumes(tmp_path, new, old):
    path, config, weights = _old_checkpoint(tmp_path, new, old)
    resumed = Experiment.from_checkpoint(path, {"epochs": 3}, datasets=random_splits())
    try:
        for key in ("family", "finc_unit", "masked_conv", "dense_reference",
                    "self_normalized_grad"):
            assert resumed.config[key] == config[key], key
        assert not {"modified_grad", "inv_conv", "direction"} & set(resumed.config)
        for key, value in resumed.model.state_dict().items():
            assert torch.equal(value, weights[key]), key
    finally:
        resumed.close()
    # the old name may change on resume like its new names
    flipped = Experiment.from_checkpoint(path, {"modified_grad": not config["self_normalized_grad"]},
                                         datasets=random_splits())
    try:
        assert flipped.config["self_normalized_grad"] is not config["self_normalized_grad"]
    finally:
        flipped.close()


def test_an_export_of_an_old_checkpoint_loads_and_uses_todays_names(tmp_path):
    pytest.importorskip("safetensors")
    from inv_flow.export import export_checkpoint, load_export, load_model

    new, old = SAVED[0]
    path, config, weights = _old_checkpoint(tmp_path, new, old)
    assert load_checkpoint(path)["config"]["inv_conv"] == "single"
    out, _ = export_checkpoint(path, tmp_path / "model.safetensors")
    exported = load_export(out)["config"]
    assert exported["family"] == "finc_flow" and "direction" not in exported
    model = load_model(out)
    assert [type(m).__name__ for m in model.modules()] == \
        [type(m).__name__ for m in build_model(config, SHAPE).modules()]
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key


# ----------------------------------------------------------------------- renamed Python names
def test_renamed_layer_classes_still_import_with_a_warning():
    import inv_flow.layers as layers

    for old, new in (("InvFlowUnit", layers.InvFlowUnitLayer), ("InvConv", layers.InvConvLayer)):
        with pytest.warns(DeprecationWarning, match=new.__name__):
            assert getattr(layers, old) is new
        assert old not in layers.__all__
    with pytest.raises(AttributeError):
        layers.InvFlowUnitz  # noqa: B018


def test_snf_layer_accepts_modified_grad_with_a_warning():
    from inv_flow.layers import SelfNormConv2d

    with pytest.warns(DeprecationWarning, match="self_normalized_grad"):
        layer = SelfNormConv2d(2, modified_grad=False)
    assert layer.self_normalized_grad is False
    assert SelfNormConv2d(2).self_normalized_grad is True
