"""Smoke test of ``inv-flow compare`` (python -m inv_flow.compare) with tiny budgets: every
baseline trains, the markdown/CSV tables, the JSON histories and the PNG plot are written."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
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
    (["--seeds", "1,x"], "--seeds"),
    (["--seeds", "1,1"], "--seeds"),
    (["--seed", "3", "--seeds", "1,2"], "not both"),
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


TINY = ["--preset", "digits", "--epochs", "2", "--set", "block_size=1", "--set", "coupling_hidden=4",
        "--set", "max_eval_ex=32", "--set", "batch_size=16", "--set", "device=cpu",
        "--max-steps-per-epoch", "2", "--repeats", "1", "--num-samples", "4", "--quiet"]


def _csv_rows(folder):
    with open(folder / "compare.csv", newline="", encoding="utf-8") as handle:
        return {row["model"]: row for row in csv.DictReader(handle)}


def test_compare_seeds_report_mean_std_each_seed_and_spread(tmp_path):
    out = tmp_path / "seeds"
    assert compare.main(TINY + ["--models", "inverse_flow,glow", "--seeds", "3,5",
                                "--out-dir", str(out)]) == 0
    rows = _csv_rows(out)
    report = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    for name in ("inverse_flow", "glow"):
        row = rows[name]
        assert row["seeds"] == "3 5"
        per_seed = report["seed_histories"][name]
        assert set(per_seed) == {"3", "5"}
        finals = np.array([per_seed[s][-1]["val_bpd"] for s in ("3", "5")])
        assert finals[0] != finals[1]  # the seeds really differ
        assert float(row["val_bpd"]) == pytest.approx(finals.mean(), rel=1e-12)
        assert float(row["val_bpd_std"]) == pytest.approx(finals.std(ddof=1), rel=1e-9)
        assert row["val_bpd_seeds"] == " ".join(f"{v:.4f}" for v in finals)
        merged = report["histories"][name]
        assert [h["epoch"] for h in merged] == [1, 2]
        assert all(math.isfinite(h["val_bpd_std"]) for h in merged)
    best = min(rows.values(), key=lambda r: float(r["val_bpd"]))
    other = next(r for r in rows.values() if r is not best)
    assert best["exceeds_spread"] == "best" and float(best["val_vs_best"]) == 0.0
    assert other["exceeds_spread"] in ("yes", "no")
    assert float(other["val_vs_best"]) == pytest.approx(
        float(other["val_bpd"]) - float(best["val_bpd"]))
    table = (out / "compare.md").read_text(encoding="utf-8")
    assert " ± " in table and "exceeds spread" in table
    assert (out / "compare_bpd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Each seed's value is exactly what a one-seed comparison with that seed gives.
    single = tmp_path / "single"
    assert compare.main(TINY + ["--models", "inverse_flow,glow", "--seed", "5",
                                "--out-dir", str(single)]) == 0
    alone = _csv_rows(single)["glow"]
    assert float(alone["val_bpd"]) == report["seed_histories"]["glow"]["5"][-1]["val_bpd"]
    assert alone["seeds"] == "5" and alone["val_bpd_std"] == "nan"


def _row(model, values):
    mean, std = float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return {"model": model, "val_bpd": mean, "val_bpd_std": std, "val_bpd_values": list(values)}


def test_mark_spread_uses_two_standard_errors_of_the_difference():
    rows = [_row("a", [5.0, 5.1, 5.2]), _row("b", [5.3, 5.4, 5.5]), _row("c", [5.1, 5.25, 5.4]),
            _row("d", [5.6]), _row("a (sample_true_inv)", [5.0, 5.1, 5.2])]
    compare.mark_spread(rows)
    verdict = {r["model"]: r["exceeds_spread"] for r in rows}
    # b - a = 0.3 > 2*sqrt(0.01/3 + 0.01/3) = 0.163; c - a = 0.15 < 2*sqrt(0.0225/3 + 0.01/3) = 0.208
    assert verdict == {"a": "best", "b": "yes", "c": "no", "d": "one seed: no spread",
                       "a (sample_true_inv)": "best"}
    assert rows[1]["val_vs_best"] == pytest.approx(0.3)


def test_a_comparison_cut_short_keeps_the_runs_that_finished(tmp_path, monkeypatch):
    """The report is rewritten after every run: stopping the comparison (Ctrl-C here) during the
    third run leaves the first two, marked partial, and no temporary files."""
    real = compare.train_and_measure
    calls = []

    def stop_at_the_third(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(compare, "train_and_measure", stop_at_the_third)
    out = tmp_path / "cmp"
    with pytest.raises(KeyboardInterrupt):
        compare.main([
            "--preset", "digits", "--models", "inverse_flow,glow", "--seeds", "1,2",
            "--epochs", "1", "--set", "block_size=1", "--set", "coupling_hidden=4",
            "--set", "max_eval_ex=32", "--set", "batch_size=16", "--set", "device=cpu",
            "--max-steps-per-epoch", "2", "--repeats", "1", "--num-samples", "4",
            "--out-dir", str(out), "--quiet"])
    report = json.loads((out / "compare.json").read_text())
    assert (report["complete"], report["runs_done"], report["runs_planned"]) == (False, 2, 4)
    assert [row["model"] for row in report["rows"]] == ["inverse_flow"]
    assert report["rows"][0]["seeds"] == "1 2"
    assert "**Partial**: 2 of 4 training runs" in (out / "compare.md").read_text()
    assert (out / "compare_bpd.png").stat().st_size > 0
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_merge_pools_seeds_run_apart_into_the_report_of_one_run(tmp_path, capsys):
    """Seeds run in separate comparisons (one device call each) and merged give the same
    bits/dim rows as one comparison over all the seeds; what cannot be pooled is refused."""
    models = ["--models", "inverse_flow,glow"]
    parts = [tmp_path / "seed3", tmp_path / "seed5"]
    for seed, folder in zip((3, 5), parts):
        assert compare.main(TINY + models + ["--seed", str(seed), "--out-dir", str(folder)]) == 0
    together = tmp_path / "together"
    assert compare.main(TINY + models + ["--seeds", "3,5", "--out-dir", str(together)]) == 0
    merged = tmp_path / "merged"
    assert compare.main(["--merge", str(parts[1]), str(parts[0]), "--out-dir", str(merged)]) == 0

    expected, got = _csv_rows(together), _csv_rows(merged)
    assert list(got) == list(expected)
    for name, row in expected.items():
        for key in ("seeds", "params", "coupling_hidden", "epochs", "val_bpd", "val_bpd_std",
                    "val_bpd_seeds", "val_vs_best", "exceeds_spread", "test_bpd"):
            assert got[name][key] == row[key], (name, key)
    report = json.loads((merged / "compare.json").read_text(encoding="utf-8"))
    assert report["complete"] and report["runs_done"] == report["runs_planned"] == 4
    assert [part["folder"] for part in report["parts"]] == [str(parts[1]), str(parts[0])]
    assert "Merged from 2 comparisons" in (merged / "compare.md").read_text(encoding="utf-8")
    assert (merged / "compare_bpd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A second merge into the same folder (through the inv-flow CLI this time) does not
    # overwrite the first one: it goes to the next free folder.
    from inv_flow import cli

    before = (merged / "compare.json").read_bytes()
    assert cli.main(["compare", "--merge", str(parts[0]), str(parts[1]),
                     "--out-dir", str(merged)]) == 0
    assert (merged / "compare.json").read_bytes() == before
    again = json.loads((tmp_path / "merged-2" / "compare.json").read_text(encoding="utf-8"))
    assert [row["val_bpd"] for row in again["rows"]] == [row["val_bpd"] for row in report["rows"]]

    other_epochs = tmp_path / "other_epochs"
    assert compare.main([*TINY, *models, "--seed", "7", "--epochs", "1",
                         "--out-dir", str(other_epochs)]) == 0
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    document = json.loads((parts[1] / "compare.json").read_text(encoding="utf-8"))
    del document["options"]
    (truncated / "compare.json").write_text(json.dumps(document), encoding="utf-8")
    capsys.readouterr()
    for argv, message in [
            ([str(parts[0])], "at least two"),
            ([str(parts[0]), str(parts[0])], "seed 3 is in more than one folder"),
            ([str(parts[0]), str(other_epochs)], "differs from"),
            ([str(parts[0]), str(tmp_path / "missing")], "cannot read"),
            ([str(parts[0]), str(truncated)], "has no per-seed runs"),
            ([str(parts[0]), str(parts[1]), "--epochs", "3", "--set", "lr=1"],
             "takes only --out-dir; remove --epochs, --set"),
    ]:
        assert compare.main(["--merge", *argv, "--out-dir", str(tmp_path / "bad")]) == 2
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1, error
