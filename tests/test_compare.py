"""Smoke test of ``inv-flow compare`` (python -m inv_flow.compare) with tiny budgets: every
baseline trains, the markdown/CSV tables, the JSON histories and the PNG plot are written."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from inv_flow import compare


def test_compare_smoke_writes_table_and_plot(tmp_path, capsys):
    out = tmp_path / "cmp"
    status = compare.main([
        "--preset", "digits", "--models", "inverse_flow,finc_flow,glow,snf", "--epochs", "2",
        "--set", "block_size=1", "--set", "coupling_hidden=4", "--set", "max_eval_ex=32",
        "--set", "batch_size=16", "--set", "device=cpu", "--max-steps-per-epoch", "2",
        "--repeats", "1", "--num-samples", "4", "--out-dir", str(out), "--quiet"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "| model |" in printed

    with open(out / "compare.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["model"] for r in rows] == ["inverse_flow", "finc_flow", "glow", "snf",
                                          "snf (sample_true_inv)"]
    assert [r["family"] for r in rows] == ["inverse_flow", "finc_flow", "glow", "snf", "snf"]
    for row in rows:
        assert row["status"] == "ok"
        assert int(row["epochs"]) == 2 and int(row["steps_per_epoch"]) == 2
        assert abs(float(row["params_vs_ref_pct"])) <= 20.0, row  # the parameter budget
        for key in ("val_bpd", "train_s_per_epoch", "density_ms_per_batch", "sample_ms"):
            value = float(row[key])
            assert math.isfinite(value) and value > 0, (key, row)
        assert row["test_bpd"] == "nan"  # digits has no test split
    assert rows[0]["params_vs_ref_pct"] == "0.0"
    assert len({r["coupling_hidden"] for r in rows[:4]}) > 1  # widths were matched

    table = (out / "compare.md").read_text(encoding="utf-8")
    for name in ("inverse_flow", "finc_flow", "glow", "snf (sample_true_inv)", "Ran ",
                 "compare_bpd.png"):
        assert name in table
    assert (out / "compare_bpd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    histories = json.loads((out / "compare.json").read_text(encoding="utf-8"))["histories"]
    assert set(histories) == {"inverse_flow", "finc_flow", "glow", "snf"}
    assert all([h["epoch"] for h in history] == [1, 2] for history in histories.values())


@pytest.mark.parametrize("argv, message", [
    (["--models", "inverse_flow,realnvp"], "unknown model"),
    (["--models", "glow,glow"], "twice"),
    (["--set", "family=snf"], "--models"),
    (["--set", "kernel_size=2", "--models", "snf"], "cannot be built"),
    (["--repeats", "0"], "--repeats"),
])
def test_compare_rejects_bad_usage(argv, message, capsys, tmp_path):
    assert compare.main(argv + ["--out-dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing trained, nothing written


def test_median_ms_and_budget_matching():
    calls = []
    assert compare.median_ms(lambda: calls.append(1), torch.device("cpu"), 3) >= 0
    assert len(calls) == 4  # one warm-up + three timed
    counts = {w: 100 * w for w in range(1, 200)}

    class Fake(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(n))

    width, params = compare.match_coupling_width(
        {"coupling_hidden": 8}, "glow", (1, 8, 8), target=1234,
        builder=lambda cfg, shape: Fake(counts[cfg["coupling_hidden"]]))
    assert (width, params) == (12, 1200)


def test_compare_is_an_inv_flow_subcommand(capsys, tmp_path):
    from inv_flow import cli

    assert cli.main(["compare", "--models", "inverse_flow,realnvp", "--out-dir", str(tmp_path)]) == 2
    assert "unknown model" in capsys.readouterr().err
