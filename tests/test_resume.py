"""Resuming with overrides and loading faulty checkpoints (Experiment level).

* A new ``lr`` given on resume is what the optimizer uses (not the saved one), keeping the
  warm-up's current factor; other keys that can change mid-run are applied; keys that cannot
  (architecture, data, seeds, batch size under DDP) are refused before anything is written.
* A checkpoint whose weights do not fit the model its config builds, one without training
  state given to resume, and one with a non-dict or invalid config are one-line
  :class:`CheckpointError` messages naming the file (eval/sample of a weights-only file work).
"""

from __future__ import annotations

import math

import pytest
import torch

from inv_flow.checkpoint import CheckpointError
from inv_flow.config import ConfigError
from inv_flow.experiment import Experiment

from test_experiment import make_experiment, random_splits, tiny_flow


def _trained(tmp_path, **settings):
    experiment = make_experiment(tmp_path, **{"epochs": 1, **settings})
    experiment.train()
    experiment.close()
    return experiment


def _resume(path, overrides=None, **kwargs):
    return Experiment.from_checkpoint(path, overrides, model_builder=tiny_flow,
                                      datasets=random_splits(), **kwargs)


def test_resume_applies_a_new_learning_rate(tmp_path):
    first = _trained(tmp_path, lr=1e-2)
    before = {k: v.clone() for k, v in first.model.state_dict().items()}
    resumed = _resume(first.last_checkpoint_path, {"lr": "1e-7", "epochs": 2})
    assert resumed.config["lr"] == 1e-7
    assert resumed.optimizer.param_groups[0]["lr"] == 1e-7  # warm-up (0.5 epoch) is over
    for part in [resumed.scheduler, *getattr(resumed.scheduler, "_schedulers", [])]:
        assert getattr(part, "base_lrs", [1e-7]) == [1e-7]
    resumed.train()
    assert resumed.optimizer.param_groups[0]["lr"] == 1e-7
    # Adam moves each weight by about lr per step: 4 steps of 1e-7, not of the saved 1e-2.
    change = max(float((resumed.model.state_dict()[k] - v).abs().max()) for k, v in before.items())
    assert 0 < change < 4 * 1e-7 * 10
    saved = torch.load(resumed.last_checkpoint_path, weights_only=False)
    assert saved["optimizer"]["param_groups"][0]["lr"] == 1e-7
    assert saved["config"]["lr"] == 1e-7


def test_new_learning_rate_keeps_the_warmup_factor(tmp_path):
    # 4 steps per epoch, warm-up over 3 epochs = 12 steps: after 4 steps the factor is 5/12.
    first = _trained(tmp_path, lr=1e-2, warmup_epochs=3.0)
    assert first.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 5 / 12)
    resumed = _resume(first.last_checkpoint_path, {"lr": 3e-3, "epochs": 2})
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(3e-3 * 5 / 12, rel=1e-12)
    resumed.train()
    # One epoch later: 8 steps, factor 9/12, computed by the scheduler from the new base.
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(3e-3 * 9 / 12, rel=1e-12)


def test_resume_applies_the_other_mid_run_settings(tmp_path):
    first = _trained(tmp_path)
    resumed = _resume(first.last_checkpoint_path,
                      {"epochs": 3, "grad_clip_norm": 0.5, "eval_epochs": 2, "log_interval": 1,
                       "warmup_epochs": 0.0, "sample_epochs": 0})
    resumed.train()
    epochs = [r["epoch"] for r in _epoch_records(resumed) if "val_bpd" in r]
    assert epochs == [1, 2, 3]  # first run evaluated epoch 1; then every 2nd and the last
    assert resumed.config["grad_clip_norm"] == 0.5 and resumed.step == 12


def _epoch_records(experiment):
    from inv_flow.logging_utils import read_metrics

    return [r for r in read_metrics(experiment.logger.metrics_path) if r["event"] == "epoch"]


@pytest.mark.parametrize("key, value", [("kernel_size", 5), ("block_size", 7), ("seed", 3),
                                        ("dataset", "mnist"), ("image_shape", "1,4,4"),
                                        ("val_fraction", 0.5), ("split_seed", 9),
                                        ("preprocess", "center")])
def test_resume_refuses_keys_that_cannot_change(tmp_path, key, value):
    first = _trained(tmp_path)
    metrics = first.logger.metrics_path.read_bytes()
    last = first.last_checkpoint_path.read_bytes()
    with pytest.raises(ConfigError, match=rf"^{key}=.* cannot change when resuming .*last_checkpoint"
                                          rf"\.tar, which was trained with {key}=") as error:
        _resume(first.last_checkpoint_path, {key: value, "epochs": 2})
    assert "\n" not in str(error.value)
    assert first.logger.metrics_path.read_bytes() == metrics
    assert first.last_checkpoint_path.read_bytes() == last
    # Evaluating (not resuming) with such a setting is not refused by these rules.
    if key in ("seed", "val_fraction"):
        _resume(first.last_checkpoint_path, {key: value}, training_state=False)


def test_batch_size_may_change_only_in_a_single_process(tmp_path, monkeypatch):
    first = _trained(tmp_path)
    resumed = _resume(first.last_checkpoint_path, {"batch_size": 8, "epochs": 2})
    assert resumed.local_batch_size == 8
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun, checked before joining a group
    with pytest.raises(ConfigError, match=r"batch_size=8 cannot change .* under torchrun"):
        _resume(first.last_checkpoint_path, {"batch_size": 8, "epochs": 2})


# ------------------------------------------------------------------------- faulty files
def _rewrite(path, edit):
    payload = torch.load(path, weights_only=False)
    edit(payload)
    torch.save(payload, path)


def wider_flow(config, image_shape):
    from inv_flow.distributions import DiagonalGaussian
    from inv_flow.flows import FlowSequential
    from inv_flow.layers import ActNorm, AffineCoupling, Dequantization, Normalization, Squeeze

    c, h, w = image_shape
    layers = [Dequantization(256), Normalization(scale=1 / 256, shift=-0.5), Squeeze(),
              ActNorm(4 * c), AffineCoupling(4 * c, hidden_channels=16)]
    return FlowSequential(layers, DiagonalGaussian((4 * c, h // 2, w // 2)), input_shape=image_shape)


@pytest.mark.parametrize("training_state", [True, False])
def test_weights_of_another_architecture_are_a_one_line_error(tmp_path, training_state):
    first = _trained(tmp_path)
    with pytest.raises(CheckpointError, match=r"last_checkpoint\.tar: its weights do not fit the "
                                              r"model .* of another shape") as error:
        Experiment.from_checkpoint(first.last_checkpoint_path, model_builder=wider_flow,
                                   datasets=random_splits(), training_state=training_state)
    assert "\n" not in str(error.value)


def test_weights_only_checkpoint_cannot_resume_but_evaluates(tmp_path):
    first = _trained(tmp_path)
    path = first.last_checkpoint_path

    def strip(payload):
        for key in ("optimizer", "scheduler", "rng"):
            del payload[key]

    _rewrite(path, strip)
    with pytest.raises(CheckpointError, match=r"holds model weights but no training state "
                                              r"\(optimizer, scheduler, rng missing\)"):
        _resume(path, {"epochs": 2})
    loaded = _resume(path, training_state=False)
    assert math.isfinite(loaded.evaluate("val")["val_bpd"])
    assert loaded.sample(2).shape == (2, 1, 8, 8)


@pytest.mark.parametrize("bad_config, message", [
    ("not a dict", r"its config is a str, not a dict"),
    ([("lr", 1e-3)], r"its config is a list, not a dict"),
    ({"lr": "fast"}, r"its saved config is not valid \(bad value for 'lr'"),
    ({"lr": math.nan}, r"its saved config is not valid \(lr must be a finite number; got nan"),
    ({"epochs": -1}, r"its saved config is not valid \(epochs must be positive"),
])
def test_invalid_saved_config_is_a_checkpoint_error(tmp_path, bad_config, message):
    first = _trained(tmp_path)
    path = first.last_checkpoint_path

    def edit(payload):
        if isinstance(bad_config, dict):
            payload["config"].update(bad_config)
        else:
            payload["config"] = bad_config

    _rewrite(path, edit)
    for training_state in (True, False):
        with pytest.raises(CheckpointError, match=message):
            _resume(path, training_state=training_state)


# ----------------------------------------------------------------- configs given to Experiment
@pytest.mark.parametrize("config, error, message", [
    ("digits", TypeError, r"config must be a dict from inv_flow.config.resolve_config; got str"),
    ({}, ConfigError, r"config lacks .* and \d+ more; build it with inv_flow.config.resolve_config"),
    ({"lr": 1e-3}, ConfigError, r"config lacks activation, actnorm, actnorm_position"),
])
def test_experiment_refuses_a_config_it_cannot_run(config, error, message):
    with pytest.raises(error, match=message):
        Experiment(config, model_builder=tiny_flow, datasets=random_splits())


def test_experiment_validates_values_set_after_resolving(tmp_path):
    from test_experiment import make_config

    config = make_config(tmp_path)
    config["lr"] = math.nan
    with pytest.raises(ConfigError, match=r"lr must be a finite number; got nan"):
        Experiment(config, model_builder=tiny_flow, datasets=random_splits())
