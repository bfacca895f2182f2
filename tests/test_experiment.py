"""Experiment: exact bits/dim, checkpoints (save/load, exact resume, atomic writes), NaN handling,
early errors, and the short-training-beats-a-Gaussian check on the real Inverse-Flow model."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from inv_flow import checkpoint as checkpoint_module
from inv_flow.config import ConfigError, resolve_config
from inv_flow.data import DataSplits, ImageTensorDataset
from inv_flow.experiment import Experiment, TrainingDiverged

# Presets for the small test models; the real ones come from inv_flow.models.
SHAPE = (1, 8, 8)
TEST_PRESETS = {"tiny": {"image_shape": SHAPE, "batch_size": 16, "epochs": 2, "lr": 1e-2}}


def tiny_flow(config: dict, image_shape: tuple) -> nn.Module:
    """A small but real multi-layer flow (no inv_conv): dequantize, centre, squeeze, ActNorm,
    affine coupling, Gaussian base — trains in milliseconds."""
    from inv_flow.distributions import DiagonalGaussian
    from inv_flow.flows import FlowSequential
    from inv_flow.layers import ActNorm, AffineCoupling, Dequantization, Normalization, Squeeze

    channels, height, width = image_shape
    if height % 2 or width % 2:
        raise ValueError(f"tiny_flow squeezes once, so H and W must be even, got {height}x{width}")
    layers = [Dequantization(256), Normalization(scale=1 / 256, shift=-0.5), Squeeze(),
              ActNorm(4 * channels), AffineCoupling(4 * channels, hidden_channels=8)]
    return FlowSequential(layers, DiagonalGaussian((4 * channels, height // 2, width // 2)),
                          input_shape=image_shape)


def random_splits(n_train=64, n_val=24, seed=0) -> DataSplits:
    generator = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (n_train + n_val, *SHAPE), generator=generator, dtype=torch.uint8)
    # Give the data some structure so training has something to learn.
    data[:, :, :4] //= 4
    return DataSplits(ImageTensorDataset(data[:n_train]), ImageTensorDataset(data[n_train:]),
                      None, SHAPE, "random")


def make_config(tmp_path: Path, **overrides) -> dict:
    values = {"name": "t", "output_dir": str(tmp_path / "run"),
              "checkpoint_path": str(tmp_path / "best.tar"), "progress": False,
              "tensorboard": False, "sample_epochs": 0, "n_samples": 4, "device": "cpu",
              "dataset": "digits", "warmup_epochs": 0.5}
    values.update(overrides)
    return resolve_config("tiny", values, presets=TEST_PRESETS)


def make_experiment(tmp_path: Path, datasets: DataSplits | None = None, **overrides) -> Experiment:
    return Experiment(make_config(tmp_path, **overrides), model_builder=tiny_flow,
                      datasets=datasets or random_splits())


# ------------------------------------------------------------------------------ bits per dim
class UniformDensity(nn.Module):
    """Uniform density on [0, 256)^D after uniform dequantization: log p = -D ln 256 per image,
    so the bits/dim of ANY 8-bit data is exactly 8."""

    def __init__(self, image_shape):
        super().__init__()
        self.num_dims = math.prod(image_shape)
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        y = x + torch.rand_like(x)  # dequantize inside the model, as the real models do
        assert float(y.min()) >= 0 and float(y.max()) < 256
        return y, torch.full((x.shape[0],), -self.num_dims * math.log(256.0)) + 0 * self.dummy


class GaussianDensity(nn.Module):
    """Per-pixel N(mean, std²) density of the dequantized pixels: an analytic reference."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean, self.std = mean, std
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        y = x + torch.rand_like(x)
        log_density = -0.5 * ((y - self.mean) / self.std) ** 2 - math.log(self.std) \
            - 0.5 * math.log(2 * math.pi)
        return y, log_density.flatten(1).sum(1) + 0 * self.dummy


def test_uniform_model_gives_exactly_8_bits_per_dim(tmp_path):
    # 37 validation images with batch 16 -> ragged last batch; max_eval_ex caps at 30.
    splits = random_splits(n_train=20, n_val=37)
    experiment = Experiment(make_config(tmp_path, batch_size=16), datasets=splits,
                            model_builder=lambda cfg, shape: UniformDensity(shape))
    metrics = experiment.evaluate("val")
    assert metrics["val_bpd"] == pytest.approx(8.0, abs=1e-6)  # float32 log_prob
    assert metrics["val_log_likelihood"] == pytest.approx(-64 * math.log(256.0), rel=1e-6)
    assert metrics["val_examples"] == 37
    experiment.config["max_eval_ex"] = 30
    assert experiment.evaluate("val")["val_examples"] == 30


def test_gaussian_model_bits_per_dim_matches_closed_form(tmp_path):
    """E_u[-log N(x + u; m, s)] = ½log(2πs²) + ((x-m)² + (x-m) + 1/3) / (2s²), averaged over the
    pixels of the whole split; a wrong ln2 / D / batch weighting would miss it."""
    splits = random_splits(n_train=16, n_val=300, seed=3)
    mean, std = 100.0, 60.0
    experiment = Experiment(make_config(tmp_path, batch_size=64), datasets=splits,
                            model_builder=lambda cfg, shape: GaussianDensity(mean, std))
    values = torch.stack([splits.val[i] for i in range(len(splits.val))]).double().numpy()
    offset = values - mean
    expected_nats = 0.5 * math.log(2 * math.pi * std**2) + \
        (offset**2 + offset + 1 / 3).mean() / (2 * std**2)
    expected_bpd = expected_nats / math.log(2)
    # Monte-Carlo noise of the dequantization over 19200 pixels is ~1e-4 bits.
    assert experiment.evaluate("val")["val_bpd"] == pytest.approx(expected_bpd, abs=2e-3)


# ---------------------------------------------------------------------------- checkpoints
def test_save_then_load_gives_identical_outputs(tmp_path):
    experiment = make_experiment(tmp_path, epochs=1)
    experiment.train()
    path = experiment.save(tmp_path / "saved.tar")
    loaded = Experiment.from_checkpoint(path, model_builder=tiny_flow, datasets=random_splits())
    batch = torch.stack([random_splits().val[i] for i in range(8)])
    for model in (experiment.model, loaded.model):
        model.eval()
    torch.manual_seed(5)
    expected = experiment.model(batch)[1]
    torch.manual_seed(5)
    actual = loaded.model(batch)[1]
    assert torch.equal(expected, actual)
    z = torch.randn(4, 4, 4, 4)
    assert torch.equal(experiment.model.reverse(z), loaded.model.reverse(z))
    assert loaded.epoch == 1 and loaded.step == experiment.step


def test_resume_continues_exactly(tmp_path):
    """2 epochs straight == 1 epoch, save, load into a fresh process state, 1 more epoch."""
    # The warm-up spans the resume point, so the scheduler state matters too.
    settings = {"epochs": 2, "sample_epochs": 1, "warmup_epochs": 1.5}
    straight = make_experiment(tmp_path / "a", **settings)
    straight.train()

    first = make_experiment(tmp_path / "b", **settings)
    first.train(until_epoch=1)
    last = first.last_checkpoint_path
    assert last.is_file()
    # Scramble every global RNG as a new process would have them.
    torch.manual_seed(12345)
    np.random.seed(999)
    import random
    random.seed(42)
    resumed = Experiment.from_checkpoint(last, model_builder=tiny_flow, datasets=random_splits())
    assert resumed.epoch == 1
    resumed.train()
    assert resumed.epoch == 2 and resumed.step == straight.step
    for (name, expected), actual in zip(straight.model.state_dict().items(),
                                        resumed.model.state_dict().values()):
        assert torch.equal(expected, actual), name
    assert straight.optimizer.param_groups[0]["lr"] == resumed.optimizer.param_groups[0]["lr"]


def test_best_checkpoint_keeps_best_validation_model(tmp_path):
    experiment = make_experiment(tmp_path, epochs=3)
    experiment.train()
    best = torch.load(experiment.best_checkpoint_path, weights_only=False)
    assert best["best_val_bpd"] == pytest.approx(experiment.best_val_bpd)
    records = [r for r in _records(experiment) if r["event"] == "epoch"]
    assert min(r["val_bpd"] for r in records) == pytest.approx(best["best_val_bpd"])


def _records(experiment):
    from inv_flow.logging_utils import read_metrics

    return read_metrics(Path(experiment.config["output_dir"]) / "metrics.jsonl")


def test_failing_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.tar"
    checkpoint_module.atomic_save({"value": 1}, path)
    before = path.read_bytes()

    def exploding_save(obj, handle, *args, **kwargs):
        handle.write(b"partial garbage")  # a write that dies halfway
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint_module.atomic_save({"value": 2}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.tar"]  # no temp file left behind


def test_atomic_save_replaces_only_after_fsync(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.tar"
    checkpoint_module.atomic_save({"value": 1}, path)
    calls = []
    real_replace = os.replace

    def recording_replace(source, destination):
        calls.append((Path(source).parent, Path(destination)))
        return real_replace(source, destination)

    monkeypatch.setattr(checkpoint_module.os, "replace", recording_replace)
    checkpoint_module.atomic_save({"value": 2}, path)
    assert calls == [(tmp_path, path)]  # temp file in the same directory, then one rename
    assert torch.load(path, weights_only=False) == {"value": 2}


def test_nan_loss_stops_training_and_keeps_checkpoints(tmp_path):
    experiment = make_experiment(tmp_path, epochs=3)
    experiment.train(until_epoch=1)
    best, last = experiment.best_checkpoint_path, experiment.last_checkpoint_path
    saved = {p: p.read_bytes() for p in (best, last)}
    parameters_before = [p.detach().clone() for p in experiment.model.parameters()]

    original_forward = experiment.model.forward

    def poisoned_forward(x, *args, **kwargs):
        z, log_prob = original_forward(x, *args, **kwargs)
        return z, log_prob * float("nan")

    experiment.model.forward = poisoned_forward
    with pytest.raises(TrainingDiverged, match="diverged at epoch 2.*loss is nan.*untouched"):
        experiment.train()
    assert {p: p.read_bytes() for p in (best, last)} == saved
    for before, after in zip(parameters_before, experiment.model.parameters()):
        assert torch.equal(before, after)  # the poisoned step was not applied


def test_infinite_gradient_stops_training(tmp_path):
    experiment = make_experiment(tmp_path, epochs=1)
    original_forward = experiment.model.forward

    def exploding_gradient(x, *args, **kwargs):
        z, log_prob = original_forward(x, *args, **kwargs)
        scale = torch.tensor(1e30, requires_grad=False)
        return z, log_prob + (experiment.model.base.mean.sum() * 0
                              + next(experiment.model.parameters()).sum() * scale * scale)

    experiment.model.forward = exploding_gradient
    with pytest.raises(TrainingDiverged):
        experiment.train()
    assert not experiment.last_checkpoint_path.exists()


def _host_syncs(fn) -> list[str]:
    """The synchronising CUDA calls `fn` makes (torch's sync debug mode warns at each)."""
    import warnings

    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return [str(w.message) for w in caught if "synchroniz" in str(w.message)]


@pytest.mark.cuda
def test_a_training_step_waits_for_the_device_once_per_check(tmp_path):
    """Outside DDP one finiteness check after backward covers the loss and the gradient; each
    input check (Dequantization's pixel values, LogitTransform's domain) is one wait; the
    Inverse-Flow model's layers and our CUDA ops add none."""
    from inv_flow.models import build_model

    experiment = make_experiment(tmp_path, device="cuda", compile="off")
    batch = torch.randint(0, 256, (16, *SHAPE), device="cuda").float()
    experiment.train_step(batch)  # ActNorm's data-dependent init
    # tiny_flow: Dequantization's input check, then the step's finiteness check.
    assert len(_host_syncs(lambda: experiment.train_step(batch))) == 2

    model = build_model({"family": "inverse_flow", "num_blocks": 2, "block_size": 2,
                         "coupling_hidden": 8}, (3, 16, 16)).cuda()
    images = torch.randint(0, 256, (4, 3, 16, 16), device="cuda").float()
    model(images)  # ActNorm's data-dependent init
    assert len(_host_syncs(lambda: model(images)[1].mean().backward())) == 2


# ------------------------------------------------------------------------- early failures
def test_model_that_cannot_take_the_image_fails_before_training(tmp_path):
    with pytest.raises(ConfigError, match="cannot be built for images of shape \\(1, 7, 7\\)"):
        Experiment(make_config(tmp_path, image_shape="1,7,7"), model_builder=tiny_flow,
                   datasets=DataSplits(None, None, None, (1, 7, 7), "odd"))


def test_real_model_rejects_bad_sizes_and_channels_before_loading_data(tmp_path):
    pytest.importorskip("inv_flow.models")
    # celeba32 at 30x30: 2 squeezes need multiples of 4 -> error before the (missing) data is read.
    config = resolve_config("celeba32", {"image_shape": "3,30,30", "data_root": str(tmp_path),
                                         "output_dir": str(tmp_path / "run")})
    with pytest.raises(ConfigError, match="cannot be built"):
        Experiment(config)
    config = resolve_config("digits", {"image_shape": "3,8,8"})
    with pytest.raises(ConfigError, match="channel"):
        Experiment(config)


def test_unknown_device_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="device"):
        make_experiment(tmp_path, device="tpu:0")


def test_plot_recon_and_timing_and_verbose(tmp_path):
    experiment = make_experiment(tmp_path, epochs=1, sample_epochs=1, plot_recon=True,
                                 log_timing=True, verbose=True, log_interval=1)
    record = experiment.train()
    sample_dir = Path(experiment.config["sample_dir"])
    assert (sample_dir / "samples_epoch0001.png").is_file()
    assert (sample_dir / "reconstruction_epoch0001.png").is_file()
    for key in ("time_per_batch_mean", "time_per_batch_std", "time_per_sample_mean",
                "time_per_sample_std"):
        assert record[key] >= 0
    steps = [r for r in _records(experiment) if r["event"] == "train_step"]
    assert steps and any(key.startswith("logdet/") for key in steps[0])


def test_warmup_is_linear_per_step(tmp_path):
    experiment = make_experiment(tmp_path, epochs=1, warmup_epochs=1.0, lr=0.01)
    steps = len(experiment.train_loader)
    lrs = []
    for _ in range(steps + 1):
        lrs.append(experiment.optimizer.param_groups[0]["lr"])
        experiment.optimizer.step()  # no gradients: a no-op that keeps the call order right
        experiment.scheduler.step()
    assert lrs[0] == pytest.approx(0.01 / steps)
    assert lrs[steps - 1] == pytest.approx(0.01)
    assert lrs[steps] == pytest.approx(0.01)
    assert all(b >= a for a, b in zip(lrs, lrs[1:]))


# ------------------------------------------------------ the real model on the real digits
def gaussian_baseline_bpd(train: np.ndarray, val: np.ndarray) -> float:
    """Independent per-pixel Gaussian fit on dequantized training pixels, scored exactly on
    dequantized validation pixels: E_u[-log N(x+u)] in closed form, in bits/dim."""
    dequantized_mean = train.mean(0) + 0.5
    dequantized_var = train.var(0) + 1 / 12  # Var(x + u) = Var(x) + 1/12
    offset = val - dequantized_mean
    expected_sq = offset**2 + offset + 1 / 3  # E_u[(offset + u)²], u ~ U[0, 1)
    nats = 0.5 * np.log(2 * np.pi * dequantized_var) + expected_sq / (2 * dequantized_var)
    return float(nats.mean() / np.log(2))


def test_short_training_beats_per_pixel_gaussian(tmp_path):
    pytest.importorskip("inv_conv")
    from inv_flow.data import load_datasets

    overrides = {"name": "beats", "output_dir": str(tmp_path / "run"),
                 "checkpoint_path": str(tmp_path / "best.tar"), "progress": False,
                 "tensorboard": False, "sample_epochs": 0, "device": "cpu",
                 # A shorter budget than the preset's (seconds on 2 cores): more, smaller steps.
                 "epochs": 4, "lr": 5e-3, "batch_size": 32}
    config = resolve_config("digits", overrides)
    experiment = Experiment(config)
    record = experiment.train()

    splits = load_datasets(config)
    as_array = lambda ds: torch.stack([ds[i] for i in range(len(ds))]).double().numpy()  # noqa: E731
    baseline = gaussian_baseline_bpd(as_array(splits.train), as_array(splits.val))
    assert 0 < record["val_bpd"] < baseline, (record["val_bpd"], baseline)


def test_extra_loss_is_added_once_per_step(tmp_path):
    """Families with extra training terms (snf) expose model.extra_loss(); the loop adds it."""
    calls = []

    def builder(config, shape):
        model = tiny_flow(config, shape)
        model.pull = nn.Parameter(torch.zeros(()))

        def extra_loss():
            calls.append(1)
            return (model.pull - 3.0) ** 2

        model.extra_loss = extra_loss
        return model

    experiment = Experiment(make_config(tmp_path, epochs=1), model_builder=builder,
                            datasets=random_splits())
    experiment.train()
    assert len(calls) == experiment.step > 0
    assert float(experiment.model.pull.detach()) > 0  # only the extra term moves it (towards 3)
