"""CLI: option descriptions from the one table, fast --help without torch, a one-line error
without torch, --config files, LR schedules, TensorBoard sample grids, safetensors export."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import digits_train_args
from inv_flow.cli import main
from inv_flow.config import ConfigError, load_config_file, resolve_config
from inv_flow.options import DEFAULTS, OPTIONS

COMMANDS = ("train", "eval", "sample", "export", "plot", "compare", "options", "presets")


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


# --------------------------------------------------------------------------- options table
def test_options_prints_every_key_with_its_meaning_default_and_rule(capsys):
    assert main(["options"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for key, option in OPTIONS.items():
        line = next((row for row in lines if row.startswith(f"{key} = ")), None)
        assert line is not None, key
        text = line if option.help[:20] in line else lines[lines.index(line) + 1]
        assert repr(option.default) in line and option.help[:20] in text, key
        if option.choices:
            assert " | ".join(option.choices) in text, key
    assert "[optimisation]" in out and "[model]" in out


def test_one_table_for_trainer_and_model():
    models = pytest.importorskip("inv_flow.models")
    from inv_flow.layers.activations import ACTIVATIONS

    assert set(models.MODEL_DEFAULTS) < set(DEFAULTS)
    assert OPTIONS["activation"].choices == ("none", *ACTIVATIONS)
    # The same rule gives the same message from the config and from build_model.
    for key, value in (("kernel_size", 0), ("family", "nope"), ("logit_alpha", 0.5)):
        with pytest.raises(ConfigError) as from_config:
            resolve_config("digits", {key: value})
        with pytest.raises(ConfigError) as from_model:
            models.build_model({key: value}, (1, 8, 8))
        assert str(from_config.value) == str(from_model.value), key


def test_non_finite_numbers_are_rejected():
    for key in ("lr", "temperature", "grad_clip_norm"):
        for text in ("inf", "nan"):
            with pytest.raises(ConfigError, match=f"{key} must be a finite number; got {text}"):
                resolve_config("digits", {key: text})


# ---------------------------------------------------------------------------- fast --help
def test_help_of_every_command_is_fast_and_imports_no_torch(tmp_path):
    code = ("import sys, time, contextlib, io\n"
            "start = time.perf_counter()\n"
            "from inv_flow.cli import build_parser\n"
            f"for command in {COMMANDS!r}:\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "        build_parser().parse_args([command, '--help'])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "print(time.perf_counter() - start)")
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) < 1.0  # all eight --help texts, beyond Python's own start


def test_without_torch_every_command_says_which_extra_to_install(tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"
            "from inv_flow.cli import main\n"
            "sys.exit(main(sys.argv[1:]))")
    for args in (["train"], ["eval", "--checkpoint", "x.tar"]):
        result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                                text=True, cwd=tmp_path, timeout=120)
        assert result.returncode == 2 and result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "inv_conv[flow]" in result.stderr and "PyTorch is not installed" in result.stderr
    result = subprocess.run([sys.executable, "-c", code, "options"], capture_output=True,
                            text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0 and "lr_schedule" in result.stdout


# ---------------------------------------------------------------------------- config files
def test_config_files_json_and_yaml(tmp_path):
    values = {"lr": 0.005, "epochs": 3, "image_shape": [1, 8, 8], "actnorm": False}
    (tmp_path / "c.json").write_text(json.dumps(values))
    yaml = pytest.importorskip("yaml")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(values))
    for name in ("c.json", "c.yaml"):
        config = resolve_config("digits", load_config_file(tmp_path / name))
        assert (config["lr"], config["epochs"], config["image_shape"], config["actnorm"]) == \
            (0.005, 3, (1, 8, 8), False)
    (tmp_path / "bad.json").write_text("{lr: 1}")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config_file(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="one mapping"):
        load_config_file(tmp_path / "list.json")


def test_config_file_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "c.json").write_text(json.dumps({"lerning_rate": 1}))
    assert main(["train", "--config", str(tmp_path / "c.json")]) == 2
    error = capsys.readouterr().err
    assert "unknown config key 'lerning_rate'" in error and len(error.strip().splitlines()) == 1
    assert main(["train", "--config", str(tmp_path / "missing.json")]) == 2
    assert "cannot read config file" in capsys.readouterr().err


# ---------------------------------------------------------------------------- LR schedules
@pytest.mark.parametrize("schedule", ["constant", "cosine", "exponential"])
def test_lr_schedules_follow_their_closed_forms(schedule):
    import torch

    from inv_flow.schedules import build_scheduler

    lr, lr_min, gamma, per_epoch, epochs, warmup_epochs = 0.01, 1e-4, 0.5, 7, 4, 1.0
    config = {"lr_schedule": schedule, "lr_min": lr_min, "lr_gamma": gamma, "epochs": epochs,
              "warmup_epochs": warmup_epochs}
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = build_scheduler(optimizer, config, per_epoch)
    warmup, total = 7, epochs * per_epoch
    for step in range(total):
        if step < warmup:
            expected = lr * (step + 1) / warmup
        elif schedule == "constant":
            expected = lr
        elif schedule == "cosine":
            progress = (step - warmup) / (total - warmup)
            expected = lr_min + (lr - lr_min) * (1 + math.cos(math.pi * progress)) / 2
        else:
            expected = lr * gamma ** ((step - warmup) / per_epoch)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-9), step
        optimizer.step()
        scheduler.step()
    if schedule == "cosine":
        assert optimizer.param_groups[0]["lr"] == pytest.approx(lr_min)


# ------------------------------------------------------- one real run: TensorBoard, export
def tiny_args(tmp_path: Path, **extra) -> list[str]:
    settings = {"name": "feat", "output_dir": tmp_path / "run", "epochs": 1, "block_size": 1,
                "coupling_hidden": 8, "progress": "false", "n_samples": 9, "max_eval_ex": 60,
                "device": "cpu", "lr_schedule": "cosine", **extra}
    return digits_train_args(settings)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    pytest.importorskip("inv_conv")
    pytest.importorskip("tensorboard")
    tmp_path = tmp_path_factory.mktemp("features")
    assert main(tiny_args(tmp_path, tensorboard="true")) == 0
    return tmp_path / "run"


def test_sample_grids_reach_tensorboard(run_dir):
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert "samples" in events.Tags()["images"]
    image = events.Images("samples")[-1]
    with Image.open(run_dir / "samples" / "samples_epoch0001.png") as png:
        assert (image.width, image.height) == png.size
    assert "epoch/val_bpd" in events.Tags()["scalars"]


def test_export_round_trip(run_dir, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file

    best = run_dir / "best_checkpoint.tar"
    out = tmp_path / "model.safetensors"
    assert main(["export", "--checkpoint", str(best), "--out", str(out)]) == 0
    saved = torch.load(best, weights_only=False)
    weights = load_file(out)
    assert weights.keys() == saved["model"].keys()
    assert all(torch.equal(weights[k], saved["model"][k]) for k in weights)
    config = json.loads(out.with_suffix(".json").read_text())["config"]
    assert config["block_size"] == 1 and config["lr_schedule"] == "cosine"

    # eval and sample take the export wherever they take a checkpoint, with the same results.
    capsys.readouterr()
    results = []
    for source in (best, out):
        assert main(["eval", "--checkpoint", str(source)]) == 0
        results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert results[0] == results[1]
    grids = []
    for index, source in enumerate((best, out)):
        grid = tmp_path / f"grid{index}.png"
        assert main(["sample", "--checkpoint", str(source), "-n", "4", "--seed", "3",
                     "--out", str(grid)]) == 0
        grids.append(grid.read_bytes())
    assert grids[0] == grids[1]

    # In Python: the exported model gives the checkpoint model's densities.
    from inv_flow.export import load_model
    from inv_flow.models import build_model

    model = load_model(out)
    reference = build_model(saved["config"], saved["image_shape"])
    reference.load_state_dict(saved["model"])
    pixels = torch.randint(0, 256, (5, 1, 8, 8)).float()
    torch.manual_seed(0)
    expected = reference.eval().log_prob(pixels)
    torch.manual_seed(0)
    torch.testing.assert_close(model.log_prob(pixels), expected, rtol=0, atol=0)

    # Never replaces a file; a foreign safetensors file is a clear error.
    before = out.read_bytes()
    assert main(["export", "--checkpoint", str(best), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    assert main(["eval", "--checkpoint", str(tmp_path / "other.safetensors")]) == 2
    assert "not an inv_flow export" in capsys.readouterr().err


@pytest.mark.parametrize("warmup_epochs", [0.0, 1.5])
def test_scheduler_state_of_an_older_checkpoint_is_replayed(warmup_epochs):
    import torch

    from inv_flow.schedules import build_scheduler, restore_scheduler

    per_epoch, lr, steps = 4, 0.01, 5
    warmup = round(warmup_epochs * per_epoch)

    def factor(step):  # the warm-up rule checkpoints were written with before lr_schedule
        return 1.0 if warmup == 0 else min(1.0, (step + 1) / warmup)

    old_optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    old = torch.optim.lr_scheduler.LambdaLR(old_optimizer, factor)
    for _ in range(steps):
        old_optimizer.step()
        old.step()
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    config = {"warmup_epochs": warmup_epochs, "epochs": 3, "lr_schedule": "constant"}
    scheduler = build_scheduler(optimizer, config, per_epoch)
    restore_scheduler(scheduler, old.state_dict(), steps)
    for _ in range(3):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(old_optimizer.param_groups[0]["lr"])
        for opt, sched in ((optimizer, scheduler), (old_optimizer, old)):
            opt.step()
            sched.step()
