"""Run folders: a new run never touches an earlier run's files; resume continues in place;
explicit paths (the original option names) keep working but never overwrite."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import digits_train_args
from inv_flow.cli import main
from inv_flow.config import ConfigError, resolve_config
from inv_flow.runs import claim_run_dir

pytest.importorskip("inv_conv")

TINY = {"name": "smoke", "epochs": 1, "block_size": 1, "coupling_hidden": 8, "progress": "false",
        "tensorboard": "false", "n_samples": 4, "max_eval_ex": 50, "device": "cpu"}


def train_args(**extra) -> list[str]:
    return digits_train_args({**TINY, **extra})


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_second_run_of_the_same_name_gets_its_own_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(train_args()) == 0
    first = tmp_path / "runs" / "smoke"
    assert {"best_checkpoint.tar", "last_checkpoint.tar", "config.json", "metrics.jsonl",
            "samples/samples_epoch0001.png"} <= set(snapshot(first))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing in the cwd itself
    before = snapshot(first)
    capsys.readouterr()

    assert main(train_args(lr="1e-2")) == 0
    out = capsys.readouterr().out
    second = tmp_path / "runs" / "smoke-2"
    assert snapshot(first) == before  # the earlier run is byte-for-byte untouched
    assert (second / "best_checkpoint.tar").is_file()
    assert Path(json.loads((second / "config.json").read_text())["output_dir"]) == second.resolve()
    # The paths are printed when the run starts and when it ends.
    assert out.count("runs/smoke-2/best_checkpoint.tar") >= 2, out


def test_resume_continues_in_its_own_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(train_args()) == 0
    run = tmp_path / "runs" / "smoke"
    lines = (run / "metrics.jsonl").read_text().count("\n")
    capsys.readouterr()
    assert main(["train", "--resume", str(run / "last_checkpoint.tar"), "--set", "epochs=2"]) == 0
    assert capsys.readouterr().out.count("run folder runs/smoke:") == 2  # at start and end
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["smoke"]
    assert (run / "metrics.jsonl").read_text().count("\n") > lines
    assert (run / "samples" / "samples_epoch0002.png").is_file()


def test_explicit_paths_work_but_never_overwrite(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    best = tmp_path / "mine.tar"
    # The original option name still puts the best checkpoint where it says.
    assert main(train_args(checkpoint_path=best)) == 0
    assert best.is_file() and not (tmp_path / "runs" / "smoke" / "best_checkpoint.tar").exists()
    saved = best.read_bytes()
    capsys.readouterr()
    # A second new run pointing at the same file stops before writing anything.
    assert main(train_args(checkpoint_path=best)) == 2
    error = capsys.readouterr().err
    assert "would overwrite" in error and "mine.tar" in error and "--resume" in error
    assert best.read_bytes() == saved
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["smoke"]


def test_claims_are_exclusive_and_move_inner_paths(tmp_path):
    config = resolve_config("digits", {"output_dir": str(tmp_path / "r"),
                                       "sample_dir": str(tmp_path / "r" / "pics")})
    (tmp_path / "r").mkdir()  # an existing but empty folder is free
    first = claim_run_dir(config)
    (Path(first["output_dir"]) / "metrics.jsonl").write_text("{}\n")
    second, third = claim_run_dir(config), claim_run_dir(config)  # nothing written in between
    dirs = [Path(c["output_dir"]) for c in (first, second, third)]
    assert [d.name for d in dirs] == ["r", "r-2", "r-3"] and all(d.is_dir() for d in dirs)
    assert Path(third["sample_dir"]) == dirs[2] / "pics"
    assert Path(third["checkpoint_path"]) == dirs[2] / "best_checkpoint.tar"


def test_outside_sample_dir_with_files_is_refused(tmp_path):
    pics = tmp_path / "pics"
    pics.mkdir()
    (pics / "samples_epoch0001.png").write_bytes(b"earlier")
    config = resolve_config("digits", {"output_dir": str(tmp_path / "r"), "sample_dir": str(pics)})
    with pytest.raises(ConfigError, match="sample_dir"):
        claim_run_dir(config)
    assert not (tmp_path / "r").exists()


def test_claim_folder_takes_a_sibling_of_a_folder_with_files(tmp_path):
    from inv_flow.runs import claim_folder

    earlier = tmp_path / "compare_digits"
    earlier.mkdir()
    (earlier / "compare.md").write_text("earlier results")
    assert claim_folder(earlier) == tmp_path / "compare_digits-2"
    assert (earlier / "compare.md").read_text() == "earlier results"
