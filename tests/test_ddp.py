"""Distributed data-parallel training on the CPU (gloo, 127.0.0.1 only).

* A 1-process group gives bitwise the parameters of a plain run.
* A 2-process run of a few steps on digits ends with the same parameters as a 1-process run
  with the same global batch.  Tolerance: rtol=1e-5, atol=1e-6 (float32; the runs differ only in
  the order of floating-point reductions: DDP's gradient all-reduce, per-rank batches of half
  the size, ActNorm statistics summed over ranks).  The models use midpoint dequantization
  (``u = 0.5``) so that both runs see the same inputs: with random dequantization each rank draws
  its own noise, and runs agree in distribution only.
* Evaluation over a sharded split, all-reduced, equals the single-process value (rtol=1e-6,
  float64 sums of the same per-image float32 log-densities).
* Under torchrun (the experiment script): only rank 0 writes, resuming continues exactly.
* A crash in one rank ends the torchrun run with a clear message and a non-zero status within a
  bounded time (no hang).

Every wait is bounded (process join / subprocess timeouts, ``dist_timeout``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch

pytest.importorskip("inv_conv")

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from conftest import set_args  # noqa: E402
from inv_flow.config import resolve_config  # noqa: E402
from inv_flow.experiment import Experiment  # noqa: E402

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed with gloo")

REPO = Path(__file__).resolve().parents[1]
PARAM_RTOL, PARAM_ATOL = 1e-5, 1e-6
EVAL_RTOL = 1e-6
# 180 training images (val_fraction 0.9), global batch 60: 3 steps per epoch, 2 epochs.
# 1617 validation images: an odd count, so the evaluation shards differ in size.
SMALL_DIGITS = {"epochs": 2, "val_fraction": 0.9, "batch_size": 60, "block_size": 2,
                "coupling_hidden": 16, "progress": False, "tensorboard": False,
                "sample_epochs": 0, "device": "cpu", "warmup_epochs": 0.5, "lr": 3e-3}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env.pop("INV_FLOW_TEST_FAULT", None)
    env.update(extra)
    return env


def digits_config(tmp_path: Path, **overrides) -> dict:
    values = {**SMALL_DIGITS, "name": "ddp", "output_dir": str(tmp_path / "run"),
              "checkpoint_path": str(tmp_path / "best.tar"), **overrides}
    return resolve_config("digits", values)


def midpoint_digits_model(config: dict, image_shape: tuple):
    """The real digits model with deterministic (midpoint) dequantization."""
    from inv_flow.layers.dequantize import Dequantization
    from inv_flow.models import build_model

    model = build_model(config, image_shape)
    for module in model.modules():
        if isinstance(module, Dequantization):
            module.midpoint = True
    return model


def _spawned_training(rank: int, world_size: int, port: int, config: dict, result_path: str):
    """One rank of a spawned gloo run: train, evaluate (whole split and a capped one), save."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=60))
    try:
        experiment = Experiment(config, model_builder=midpoint_digits_model)
        experiment.train()
        metrics = experiment.evaluate("val")
        experiment.config["max_eval_ex"] = 101
        capped = experiment.evaluate("val")
        experiment.close()
        if rank == 0:
            torch.save({"model": experiment.model.state_dict(), "metrics": metrics,
                        "capped": capped, "steps": experiment.step}, result_path)
    finally:
        dist.destroy_process_group()


def run_spawned(world_size: int, config: dict, result_path: Path, timeout: float = 120.0):
    context = mp.start_processes(_spawned_training,
                                 args=(world_size, free_port(), config, str(result_path)),
                                 nprocs=world_size, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                raise TimeoutError(f"spawned DDP run did not finish within {timeout} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
    return torch.load(result_path, weights_only=False)


def test_two_processes_match_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config_2 = digits_config(tmp_path / "two")
    started = time.monotonic()
    two = run_spawned(2, config_2, tmp_path / "two.pt")
    spawned_seconds = time.monotonic() - started
    # A process group of one runs every collective too, and is a plain run bit for bit.
    one_rank = run_spawned(1, digits_config(tmp_path / "one_rank"), tmp_path / "one_rank.pt")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = Experiment(digits_config(tmp_path / "one"), model_builder=midpoint_digits_model)
        single.train()
        single_metrics = single.evaluate("val")
        single.config["max_eval_ex"] = 101
        single_capped = single.evaluate("val")
        single.close()

        # Evaluation: the 2-process reduction of the 2-process model == one process on it.
        reference = Experiment(digits_config(tmp_path / "ref"), model_builder=midpoint_digits_model)
        reference.model.load_state_dict(two["model"])
        ref_metrics = reference.evaluate("val")
        reference.config["max_eval_ex"] = 101
        ref_capped = reference.evaluate("val")
    finally:
        torch.set_num_threads(threads)

    assert two["steps"] == single.step == 6
    # Same parameters as the 1-process run with the same global batch.
    single_state = single.model.state_dict()
    for name, value in two["model"].items():
        torch.testing.assert_close(value, single_state[name], rtol=PARAM_RTOL, atol=PARAM_ATOL,
                                   msg=lambda m, name=name: f"{name}: {m}")
    for name, value in one_rank["model"].items():
        assert torch.equal(value, single_state[name]), name
    assert one_rank["metrics"] == single_metrics
    assert ref_metrics["val_examples"] == two["metrics"]["val_examples"] == 1617
    assert two["metrics"]["val_bpd"] == pytest.approx(ref_metrics["val_bpd"], rel=EVAL_RTOL)
    assert two["capped"]["val_examples"] == ref_capped["val_examples"] == 101
    assert two["capped"]["val_bpd"] == pytest.approx(ref_capped["val_bpd"], rel=EVAL_RTOL)
    # And the trained models agree on the metric too.
    assert two["metrics"]["val_bpd"] == pytest.approx(single_metrics["val_bpd"], rel=1e-5)
    assert two["capped"]["val_bpd"] == pytest.approx(single_capped["val_bpd"], rel=1e-5)

    # Only rank 0 wrote the metrics (2 epoch records, not 4).
    records = [json.loads(line) for line in
               (tmp_path / "two" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["event"] == "epoch"] == [1, 2]
    assert spawned_seconds < 120


# ------------------------------------------------------------------------------ torchrun
def torchrun(args: list[str], cwd: Path, timeout: float, nproc: int = 2, **env: str):
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               "--nnodes=1", "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args]
    started = time.monotonic()
    completed = subprocess.run(command, cwd=cwd, env=child_env(**env), capture_output=True,
                               text=True, timeout=timeout)
    return completed, time.monotonic() - started


def torchrun_settings(tmp_path: Path, **extra) -> list[str]:
    settings = {**SMALL_DIGITS, "name": "tr", "output_dir": tmp_path / "run", "max_eval_ex": 200,
                "checkpoint_path": tmp_path / "best.tar", "sample_epochs": 1, "n_samples": 4,
                "dist_timeout": 60, **extra}
    return set_args(settings)


def test_experiment_script_under_torchrun_writes_once_and_resumes_exactly(tmp_path):
    script = str(REPO / "experiments" / "inv_flow_mnist.py")
    # Uninterrupted 2 epochs.
    full, _ = torchrun([script, "--preset", "digits", *torchrun_settings(tmp_path / "full")],
                       cwd=tmp_path, timeout=90)
    assert full.returncode == 0, full.stdout + full.stderr
    # 1 epoch, then resume to 2.
    first, _ = torchrun([script, "--preset", "digits",
                         *torchrun_settings(tmp_path / "part", epochs=1)], cwd=tmp_path, timeout=90)
    assert first.returncode == 0, first.stdout + first.stderr
    last = tmp_path / "part" / "run" / "last_checkpoint.tar"
    payload = torch.load(last, weights_only=False)
    assert payload["world_size"] == 2 and len(payload["rng_ranks"]) == 2 and payload["epoch"] == 1
    resumed, _ = torchrun([script, "--resume", str(last), "--set", "epochs=2"], cwd=tmp_path,
                          timeout=90)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    # Only rank 0 printed the summary and wrote files: one record per epoch, one sample grid each.
    assert full.stdout.count("done:") == 1
    records = [json.loads(line) for line in
               (tmp_path / "full" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["event"] == "epoch"] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "full" / "run" / "samples").iterdir()) == [
        "samples_epoch0001.png", "samples_epoch0002.png"]
    assert "2 process(es) (gloo" in full.stdout

    # The resumed run ends exactly where the uninterrupted one did (same data order, same
    # per-rank random streams for the dequantization noise).
    a = torch.load(tmp_path / "full" / "run" / "last_checkpoint.tar", weights_only=False)
    b = torch.load(last, weights_only=False)
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"] == 6
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name


def test_crash_in_one_rank_ends_the_run_with_a_message(tmp_path):
    started = time.monotonic()
    completed, seconds = torchrun(
        ["-m", "inv_flow", "train", "--preset", "digits",
         *torchrun_settings(tmp_path, dist_timeout=30)],
        cwd=tmp_path, timeout=90, INV_FLOW_TEST_FAULT="1:2")
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0, output
    assert "rank 1 of 2 failed: RuntimeError: injected fault" in output
    assert "at step 2" in output
    # torchrun's own summary names the failed rank.
    assert "rank      : 1" in output or "rank: 1" in output, output
    assert seconds < 60, f"took {seconds:.0f} s: the surviving rank waited too long"
    assert time.monotonic() - started < 90


TEARDOWN_SCRIPT = """
import json, os, sys
from inv_flow.config import resolve_config
from inv_flow.experiment import Experiment

experiment = Experiment(resolve_config("digits", json.loads(sys.argv[1])))
experiment.train()
experiment.close()
me = os.getpid()
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")
         if int(t) != me]
print(f"rank {experiment.rank} threads after close: {sorted(n for n in names if 'gloo' in n)}")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")
def test_close_ends_the_process_group_before_exit(tmp_path):
    """After Experiment.close() under torchrun the gloo group is gone with its threads (I/O loop
    and workers), so nothing of it is left to tear down at interpreter exit, where a group kept
    alive (here once by torch.distributed.nn's default arguments and the DDP wrapper) aborted
    ranks now and then with `terminate called without an active exception`."""
    script = tmp_path / "teardown.py"
    script.write_text(TEARDOWN_SCRIPT)
    settings = {**SMALL_DIGITS, "epochs": 1, "name": "td", "output_dir": str(tmp_path / "run"),
                "checkpoint_path": str(tmp_path / "best.tar"), "max_eval_ex": 100,
                "dist_timeout": 60}
    completed, _ = torchrun([str(script), json.dumps(settings)], cwd=tmp_path, timeout=90)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    for rank in (0, 1):
        assert f"rank {rank} threads after close: []" in output, output
