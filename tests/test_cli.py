"""CLI and config: key validation and type parsing, then smoke runs of every subcommand on the
embedded digits (in-process through ``main([...])`` and once through ``python -m inv_flow``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import digits_train_args
from inv_flow.cli import main
from inv_flow.config import DEFAULTS, ConfigError, coerce_value, parse_overrides, resolve_config

TEST_PRESETS = {"p": {"image_shape": (1, 8, 8), "coupling_width": 7}}


# ------------------------------------------------------------------------------------ config
def test_unknown_key_lists_the_valid_keys():
    with pytest.raises(ConfigError) as error:
        resolve_config("p", {"learning_rate": "1e-3"}, presets=TEST_PRESETS)
    message = str(error.value)
    assert "unknown config key 'learning_rate'" in message
    for key in ("lr", "epochs", "batch_size", "dense_reference", "coupling_width"):
        assert key in message


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="unknown preset 'svhn'.*available presets: p"):
        resolve_config("svhn", {}, presets=TEST_PRESETS)


def test_values_are_parsed_with_the_type_of_the_default():
    config = resolve_config("p", {"lr": "3e-4", "epochs": "7", "actnorm": "false",
                                  "wandb": "Yes", "grad_clip_norm": "5", "image_shape": "1x8x8",
                                  "name": "run 1", "coupling_width": "9", "pad_to": ""},
                            presets=TEST_PRESETS)
    assert config["lr"] == 3e-4 and isinstance(config["lr"], float)
    assert config["epochs"] == 7 and isinstance(config["epochs"], int)
    assert config["actnorm"] is False and config["wandb"] is True
    assert config["grad_clip_norm"] == 5.0 and isinstance(config["grad_clip_norm"], float)
    assert config["image_shape"] == (1, 8, 8) and config["pad_to"] == ()
    assert config["coupling_width"] == 9  # typed by the preset that declares it
    assert config["checkpoint_path"] == "./runs/run 1/best_checkpoint.tar"  # inside the run
    assert config["sample_dir"] == "./runs/run 1/samples"


@pytest.mark.parametrize("key, text", [("epochs", "ten"), ("epochs", "2.5"), ("actnorm", "maybe"),
                                       ("lr", "fast"), ("image_shape", "3,a,3")])
def test_bad_values_are_config_errors(key, text):
    with pytest.raises(ConfigError, match=f"bad value for '{key}'"):
        resolve_config("p", {key: text}, presets=TEST_PRESETS)


def test_programmatic_values_are_type_checked():
    assert coerce_value("lr", 1, DEFAULTS["lr"]) == 1.0
    with pytest.raises(ConfigError):
        coerce_value("epochs", True, DEFAULTS["epochs"])
    with pytest.raises(ConfigError):
        coerce_value("name", 3, DEFAULTS["name"])
    with pytest.raises(ConfigError, match="must be positive"):
        resolve_config("p", {"batch_size": 0}, presets=TEST_PRESETS)


def test_set_syntax():
    assert parse_overrides(["lr=1e-3", "notes=a=b"]) == {"lr": "1e-3", "notes": "a=b"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["lr"])


def test_model_defaults_come_from_the_one_table():
    models = pytest.importorskip("inv_flow.models")
    from inv_flow.options import OPTIONS

    accepted = resolve_config("digits", {})
    for key, value in models.MODEL_DEFAULTS.items():
        assert key in accepted and key in DEFAULTS, f"model key {key!r} is not a config key"
        assert DEFAULTS[key] == value == OPTIONS[key].default, key
    for name in ("mnist", "cifar10", "imagenet32", "imagenet64", "celeba32", "celeba64",
                 "celeba128", "digits"):
        assert resolve_config(name, {})["dataset"] == name


# --------------------------------------------------------------------------------- smoke runs
def tiny_train_args(tmp_path: Path, epochs: int = 1) -> list[str]:
    """Digits with a model small enough for a seconds-long CLI run."""
    settings = {"name": "smoke", "output_dir": tmp_path / "run", "epochs": epochs,
                "checkpoint_path": tmp_path / "best.tar", "block_size": 1, "coupling_hidden": 8,
                "progress": "false", "tensorboard": "false", "n_samples": 16,
                "max_eval_ex": 100, "device": "cpu"}
    return digits_train_args(settings)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    pytest.importorskip("inv_conv")
    tmp_path = tmp_path_factory.mktemp("cli")
    assert main(tiny_train_args(tmp_path)) == 0
    return tmp_path


def test_train_writes_checkpoint_samples_and_metrics(trained_run, capsys):
    run = trained_run / "run"
    assert (trained_run / "best.tar").is_file() and (run / "last_checkpoint.tar").is_file()
    assert (run / "samples" / "samples_epoch0001.png").is_file()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epoch = [r for r in records if r["event"] == "epoch"][-1]
    assert epoch["epoch"] == 1 and 0 < epoch["val_bpd"] < 16
    config = json.loads((run / "config.json").read_text())
    assert config["block_size"] == 1 and config["dataset"] == "digits"


def test_eval_reports_bits_per_dim(trained_run, capsys):
    assert main(["eval", "--checkpoint", str(trained_run / "best.tar")]) == 0
    output = capsys.readouterr().out
    metrics = json.loads(output.strip().splitlines()[-1])
    assert metrics["val_examples"] == 100 and 0 < metrics["val_bpd"] < 16
    assert "bits/dim" in output


def test_sample_writes_png(trained_run):
    from PIL import Image

    out = trained_run / "grid.png"
    assert main(["sample", "--checkpoint", str(trained_run / "best.tar"), "-n", "9",
                 "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.size[0] > 3 * 8 and image.size[0] == image.size[1]


def test_plot_writes_png(trained_run, tmp_path):
    from PIL import Image

    out = tmp_path / "bpd.png"
    assert main(["plot", str(trained_run / "run" / "metrics.jsonl"), "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG"


def test_resume_extends_training(trained_run, tmp_path):
    last = trained_run / "run" / "last_checkpoint.tar"
    assert main(["train", "--resume", str(last), "--set", "epochs=2",
                 "--set", f"last_checkpoint_path={tmp_path / 'last.tar'}",
                 "--set", f"checkpoint_path={tmp_path / 'best.tar'}"]) == 0
    import torch

    assert torch.load(tmp_path / "last.tar", weights_only=False)["epoch"] == 2


def test_errors_exit_cleanly_before_training(tmp_path, capsys):
    assert main(["train", "--preset", "svhn"]) == 2
    assert "unknown preset 'svhn'" in capsys.readouterr().err
    assert main(["train", "--preset", "digits", "--set", "epoch=3"]) == 2
    error = capsys.readouterr().err
    assert "unknown config key 'epoch'" in error and "Valid keys:" in error
    assert main(["train", "--preset", "imagenet32", "--set", f"data_root={tmp_path}",
                 "--set", f"output_dir={tmp_path / 'run'}"]) == 2
    assert "dataset not found" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing written before the checks passed
    assert main(["eval", "--checkpoint", str(tmp_path / "nope.tar")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_python_dash_m_entry_point(tmp_path):
    pytest.importorskip("inv_conv")
    # The installed packages (regular or editable install), as a user would run it.
    args = [str(a) for a in tiny_train_args(tmp_path)] + ["--set", "sample_epochs=0"]
    result = subprocess.run([sys.executable, "-m", "inv_flow", *args], capture_output=True,
                            text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "val_bpd" in result.stdout and (tmp_path / "best.tar").is_file()


def test_wandb_is_optional_and_only_imported_when_asked(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    args = tiny_train_args(tmp_path) + ["--set", "wandb=true"]
    assert main(args) == 2
    assert "wandb is not installed" in capsys.readouterr().err
    assert not (tmp_path / "best.tar").exists()
