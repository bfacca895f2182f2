"""Every fault of ``inv-flow`` is one line on stderr with exit status 2 (130 for Ctrl-C), and
nothing already on disk is lost: resume overrides, checkpoints that do not fit, a full disk or
an unwritable folder, bad values, a missing metrics file, Ctrl-C, torch missing."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from conftest import digits_train_args
from inv_flow.cli import main

pytest.importorskip("inv_conv")


def train_args(tmp_path: Path, epochs: int = 1, **extra) -> list[str]:
    settings = {"name": "f", "output_dir": tmp_path / "run", "epochs": epochs,
                "checkpoint_path": tmp_path / "best.tar", "block_size": 1, "coupling_hidden": 8,
                "progress": "false", "tensorboard": "false", "sample_epochs": 0,
                "max_eval_ex": 100, "device": "cpu", **extra}
    return digits_train_args(settings)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("faults")
    assert main(train_args(tmp_path)) == 0
    return tmp_path


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"inv-flow {command}: "), err
    assert "Traceback" not in err
    return err


def _copy(path: Path, to: Path) -> Path:
    to.write_bytes(path.read_bytes())
    return to


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- resume
def test_resume_applies_lr_given_with_set(run, tmp_path):
    last = _copy(run / "run" / "last_checkpoint.tar", tmp_path / "last.tar")
    assert main(["train", "--resume", str(last), "--set", "epochs=2", "--set", "lr=1e-9",
                 "--set", f"last_checkpoint_path={tmp_path / 'new_last.tar'}",
                 "--set", f"checkpoint_path={tmp_path / 'new_best.tar'}",
                 "--set", f"output_dir={tmp_path / 'run2'}"]) == 0
    saved = torch.load(tmp_path / "new_last.tar", weights_only=False)
    assert saved["epoch"] == 2 and saved["config"]["lr"] == 1e-9
    assert [g["lr"] for g in saved["optimizer"]["param_groups"]] == [1e-9]


@pytest.mark.parametrize("setting", ["block_size=3", "kernel_size=5", "seed=1", "dataset=mnist"])
def test_resume_refuses_what_cannot_change(run, capsys, setting):
    before = _files(run)
    last = run / "run" / "last_checkpoint.tar"
    assert main(["train", "--resume", str(last), "--set", "epochs=2", "--set", setting]) == 2
    err = _one_line_error(capsys, "train")
    assert f"{setting.split('=')[0]}=" in err and "cannot change when resuming" in err
    assert _files(run) == before


def test_resume_of_a_finished_run_says_how_to_extend_it(run, capsys):
    assert main(["train", "--resume", str(run / "run" / "last_checkpoint.tar")]) == 2
    assert "already completed 1 epoch(s)" in _one_line_error(capsys, "train")


# ------------------------------------------------------------------- checkpoint faults
def _edited(run: Path, tmp_path: Path, edit) -> Path:
    payload = torch.load(run / "best.tar", weights_only=False)
    edit(payload)
    path = tmp_path / "edited.tar"
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("command", ["eval", "sample", "train"])
def test_checkpoint_of_another_architecture(run, tmp_path, capsys, command):
    path = _edited(run, tmp_path, lambda p: p["config"].update(block_size=2))
    args = {"eval": ["eval", "--checkpoint", str(path)],
            "sample": ["sample", "--checkpoint", str(path), "--out", str(tmp_path / "s.png")],
            "train": ["train", "--resume", str(path), "--set", "epochs=3"]}[command]
    assert main(args) == 2
    err = _one_line_error(capsys, command)
    assert f"{path}: its weights do not fit the model its config builds" in err
    assert "missing" in err or "unexpected" in err


def test_weights_only_checkpoint(run, tmp_path, capsys):
    def strip(payload):
        for key in ("optimizer", "scheduler", "rng", "epoch", "step"):
            payload.pop(key)

    path = _edited(run, tmp_path, strip)
    assert main(["train", "--resume", str(path), "--set", "epochs=3"]) == 2
    assert "no training state" in _one_line_error(capsys, "train")
    assert main(["eval", "--checkpoint", str(path)]) == 0
    assert main(["sample", "--checkpoint", str(path), "-n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()


@pytest.mark.parametrize("config", ["a string", ["lr", 1e-3], None])
def test_non_dict_config(run, tmp_path, capsys, config):
    path = _edited(run, tmp_path, lambda p: p.update(config=config))
    assert main(["eval", "--checkpoint", str(path)]) == 2
    assert "not a dict" in _one_line_error(capsys, "eval")


# ------------------------------------------------------------------------- file system
FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    # Past this many bytes every write fails (EFBIG) as on a full disk; SIGXFSZ would kill.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from inv_flow.cli import main
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
def test_full_disk_while_training_keeps_the_checkpoints(run, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("best.tar", "run/last_checkpoint.tar", "run/metrics.jsonl"):
        (folder / name).parent.mkdir(exist_ok=True)
        _copy(run / name, folder / name)
    before = _files(folder)
    last = folder / "run" / "last_checkpoint.tar"
    # The checkpoints are far larger than this; the metrics lines fit.
    limit = max(len(before["run/metrics.jsonl"]) + 4096, 16384)
    assert len(before["best.tar"]) > limit
    args = ["train", "--resume", str(last), "--set", "epochs=3",
            "--set", f"output_dir={folder / 'run'}", "--set", f"last_checkpoint_path={last}",
            "--set", f"checkpoint_path={folder / 'best.tar'}"]
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(limit), *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "cannot write" in lines[0] and "File too large" in lines[0]
    assert str(folder / "best.tar") in lines[0] or str(last) in lines[0]
    after = _files(folder)
    for name in ("best.tar", "run/last_checkpoint.tar"):
        assert after[name] == before[name], f"{name} changed"
    assert not [p for p in folder.rglob("*.tmp")], "a temporary file was left behind"


@pytest.mark.parametrize("key", ["output_dir", "checkpoint_path"])
def test_unwritable_output_folder(tmp_path, capsys, key):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    target = blocker / ("run" if key == "output_dir" else "best.tar")
    assert main(train_args(tmp_path, **{key: target})) == 2
    err = _one_line_error(capsys, "train")
    assert f"cannot write {blocker}" in err
    assert blocker.read_text() == "not a folder"


# ------------------------------------------------------------------------ bad values
@pytest.mark.parametrize("setting, message", [
    ("lr=nan", "lr must be a finite number; got nan"), ("lr=inf", "lr must be a finite number"),
    ("lr=-inf", "lr must be a finite number"), ("grad_clip_norm=nan", "grad_clip_norm must be"),
    ("warmup_epochs=inf", "warmup_epochs must be"), ("temperature=nan", "temperature must be")])
def test_non_finite_values_are_refused(tmp_path, capsys, setting, message):
    assert main(train_args(tmp_path) + ["--set", setting]) == 2
    assert message in _one_line_error(capsys, "train")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option", [["--temperature", "nan"], ["--temperature", "-1"],
                                    ["--temperature", "0"], ["-n", "0"], ["-n", "100000000"]])
def test_sample_refuses_bad_values(run, tmp_path, capsys, option):
    out = tmp_path / "s.png"
    assert main(["sample", "--checkpoint", str(run / "best.tar"), "--out", str(out), *option]) == 2
    _one_line_error(capsys, "sample")
    assert not out.exists()


def test_eval_of_a_split_the_dataset_lacks(run, capsys):
    assert main(["eval", "--checkpoint", str(run / "best.tar"), "--split", "test"]) == 2
    assert "the digits dataset has no 'test' split" in _one_line_error(capsys, "eval")


@pytest.mark.parametrize("content", [None, b"\x80\x81 not text", b"1\n[2]\n", b""])
def test_plot_of_a_missing_or_foreign_file(tmp_path, capsys, content):
    metrics = tmp_path / "metrics.jsonl"
    if content is not None:
        metrics.write_bytes(content)
    assert main(["plot", str(metrics), "--out", str(tmp_path / "p.png")]) == 2
    err = _one_line_error(capsys, "plot")
    assert str(metrics) in err
    assert not (tmp_path / "p.png").exists()


# ---------------------------------------------------------------------------- Ctrl-C
@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_ctrl_c_names_the_last_checkpoint_and_the_resume_command(tmp_path):
    args = [str(a) for a in train_args(tmp_path, epochs=10_000)]
    process = subprocess.Popen([sys.executable, "-m", "inv_flow", *args], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = tmp_path / "run" / "last_checkpoint.tar"
    deadline = time.monotonic() + 240
    while not last.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert last.exists(), "no checkpoint written"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("inv-flow train: training interrupted in epoch ")
    assert f"the last checkpoint is {last}" in lines[0]
    command = shlex.split(lines[0].split("continue with: ")[1])
    assert command[:3] == ["inv-flow", "train", "--resume"] and Path(command[3]) == last.resolve()
    saved = torch.load(last, weights_only=False)  # complete, loadable
    assert saved["epoch"] >= 1 and not list(tmp_path.rglob("*.tmp"))
    # The printed command continues the run (here for one more epoch).
    assert main([*command[1:], "--set", f"epochs={saved['epoch'] + 1}"]) == 0
    assert torch.load(last, weights_only=False)["epoch"] == saved["epoch"] + 1


# ---------------------------------------------------------------------- torch missing
def test_cli_without_torch_says_which_extra_to_install():
    script = textwrap.dedent("""
        import sys

        class NoTorch:  # `import torch` fails as on a machine without it
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ModuleNotFoundError("No module named 'torch'", name="torch")

        sys.meta_path.insert(0, NoTorch())
        from inv_flow.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    for args in (["train", "--preset", "digits"], ["sample", "--checkpoint", "x.tar", "--out", "g.png"]):
        done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert "PyTorch is not installed" in done.stderr and "pip install 'inv_conv[flow]'" in done.stderr
    # Help needs no torch: it is printed, not refused.
    done = subprocess.run([sys.executable, "-c", script, "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "train" in done.stdout and done.stderr == ""
