"""The report of ``inv-flow compare`` (:mod:`inv_flow.compare`): the seeds of each model merged
into one row (mean ± standard deviation and each seed's value), whether a difference exceeds the
spread, and the markdown / CSV / JSON tables and the plot with the spread shown as a band."""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
import platform
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Sequence

from inv_flow.writes import write_atomically, write_png_figure

if TYPE_CHECKING:
    import torch

CSV_FIELDS = ("model", "family", "params", "params_vs_ref_pct", "coupling_hidden", "seeds",
              "epochs", "steps_per_epoch", "val_bpd", "val_bpd_std", "val_bpd_seeds",
              "val_vs_best", "exceeds_spread", "best_val_bpd", "test_bpd", "test_bpd_std",
              "test_bpd_seeds", "train_bpd_last", "train_s_per_epoch", "density_ms_per_batch",
              "density_batch", "sample_ms", "num_samples", "sampling", "status")


# ---------------------------------------------------------------------------------- reporting
def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def environment(device: torch.device) -> Dict[str, Any]:
    """Where and when the comparison ran (for the report)."""
    import torch  # noqa: PLC0415 - lazy, see the module imports
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "host": platform.node(), "platform": platform.platform(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ------------------------------------------------------------------------------ over seeds
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of the finite values (std NaN for fewer than 2)."""
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else math.nan


def _median(values: Sequence[Any]) -> float:
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def aggregate_seeds(name: str, config: Mapping[str, Any], runs: Sequence[Mapping[str, Any]],
                    sampling: str, exact_sampling: str) -> List[Dict[str, Any]]:
    """One table row per model from its seeds' rows: mean, std and each seed's value of the
    bits/dim, medians of the timings (and SNF's exact-inverse sampling as a second row)."""
    seed_rows = [run["row"] for run in runs]
    failed = [f"seed {r['seed']}: {r['status']}" for r in seed_rows if r["status"] != "ok"]
    row: Dict[str, Any] = {
        "model": name, "family": config["family"], "params": seed_rows[0]["params"],
        "coupling_hidden": int(config["coupling_hidden"]),
        "seeds": " ".join(str(r["seed"]) for r in seed_rows),
        "epochs": min(r["epochs"] for r in seed_rows),
        "steps_per_epoch": seed_rows[0]["steps_per_epoch"], "status": "; ".join(failed) or "ok",
        "num_samples": seed_rows[0].get("num_samples"), "sampling": sampling}
    for key in ("val_bpd", "test_bpd", "best_val_bpd", "train_bpd_last"):
        values = [r[key] for r in seed_rows]
        row[key], row[key + "_std"] = _mean_std(values)
        shown = [_fmt(float(v), 4) for v in values]
        row[key + "_seeds"] = " ".join(shown) if set(shown) != {"—"} else "—"
    row["val_bpd_values"] = [r["val_bpd"] for r in seed_rows]
    for key in ("train_s_per_epoch", "density_ms_per_batch", "sample_ms"):
        row[key] = _median([r.get(key) for r in seed_rows])
    row["density_batch"] = seed_rows[0].get("density_batch")
    rows = [row]
    if any("exact_sample_ms" in r for r in seed_rows):
        rows.append({**row, "model": f"{name} (sample_true_inv)",
                     "sampling": exact_sampling,
                     "sample_ms": _median([r.get("exact_sample_ms") for r in seed_rows])})
    return rows


def mark_spread(rows: List[Dict[str, Any]]) -> None:
    """Each row's mean validation bits/dim minus the best model's, and whether that difference
    exceeds the spread: |difference| > 2 standard errors of the difference of two means,
    2·sqrt(s_a²/n_a + s_b²/n_b) (needs at least 2 seeds)."""
    def stats(row):
        values = [v for v in row["val_bpd_values"] if math.isfinite(v)]
        return row["val_bpd"], row["val_bpd_std"], len(values)

    candidates = [r for r in rows if math.isfinite(r["val_bpd"])]
    if not candidates:
        return
    best = min(candidates, key=lambda r: r["val_bpd"])
    best_mean, best_std, best_n = stats(best)
    for row in rows:
        mean, std, count = stats(row)
        row["val_vs_best"] = mean - best_mean
        if row is best or row["model"].startswith(best["model"] + " "):
            row["exceeds_spread"] = "best"
        elif not math.isfinite(mean):
            row["exceeds_spread"] = ""
        elif count < 2 or best_n < 2:
            row["exceeds_spread"] = "one seed: no spread"
        else:
            margin = 2.0 * math.sqrt(std ** 2 / count + best_std ** 2 / best_n)
            row["exceeds_spread"] = "yes" if abs(mean - best_mean) > margin else "no"


def _pm(row: Mapping[str, Any], key: str) -> str:
    mean, std = row.get(key, math.nan), row.get(key + "_std", math.nan)
    if isinstance(std, float) and math.isfinite(std):
        return f"{_fmt(mean)} ± {_fmt(std)}"
    return _fmt(mean)


def markdown_table(rows: Sequence[Mapping[str, Any]], budget_model: str) -> str:
    header = ("| model | params (vs " + budget_model + ") | val bits/dim (mean ± std) | val per seed "
              "| vs best val: Δ (exceeds spread?) | test bits/dim | test per seed | train s/epoch "
              "| density ms/batch | sample ms | sampling by |")
    lines = [header, "|" + "---|" * 11]
    for row in rows:
        params = f"{row['params']:,} ({row['params_vs_ref_pct']:+.1f}%)"
        status = "" if row["status"] == "ok" else f" — {row['status']}"
        verdict = row.get("exceeds_spread", "")
        delta = "best" if verdict == "best" else \
            f"{row.get('val_vs_best', math.nan):+.3f} ({verdict})" if verdict else "—"
        lines.append(
            f"| {row['model']}{status} | {params} | {_pm(row, 'val_bpd')} | "
            f"{row['val_bpd_seeds']} | {delta} | {_pm(row, 'test_bpd')} | {row['test_bpd_seeds']} | "
            f"{_fmt(row['train_s_per_epoch'], 2)} | {_fmt(row.get('density_ms_per_batch'), 2)} | "
            f"{_fmt(row.get('sample_ms'), 2)} | {row['sampling']} |")
    return "\n".join(lines)


def write_report(out_dir: Path, rows, histories, config, env, args, budget_model: str,
                 seed_histories=None, runs_done: tuple[int, int] | None = None,
                 restated: Mapping[str, Any] | None = None) -> Dict[str, Path]:
    """Write the four report files, each replaced atomically (a comparison stopped mid-write
    keeps the previous version). ``runs_done`` = (finished, planned) training runs: while they
    differ the report says it is partial. ``restated``: what compare.json keeps besides the
    tables so that a report can be rebuilt (each seed's run, the model configs, the options,
    and for a merged report the folders it pools)."""
    paths = {"csv": out_dir / "compare.csv", "md": out_dir / "compare.md",
             "json": out_dir / "compare.json", "png": out_dir / "compare_bpd.png"}
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row.get(key, "") for key in CSV_FIELDS})
    write_atomically(table.getvalue().encode("utf-8"), paths["csv"])
    done, planned = runs_done or (1, 1)
    partial = ([f"**Partial**: {done} of {planned} training runs finished so far (the "
                "comparison is still running, or was stopped); each row covers the seeds that "
                "finished.", ""] if done < planned else [])
    batch = next((row.get("density_batch") for row in rows if row.get("density_batch")), "?")
    gpu = f" ({env['gpu']})" if "gpu" in env else ""
    seeds = rows[0]["seeds"] if rows else ""
    parts = (restated or {}).get("parts") or []
    merged = ([f"Merged from {len(parts)} comparisons: " + "; ".join(
        f"`{part['folder']}` ({part.get('date_utc')}, {part.get('gpu') or part.get('device')})"
        for part in parts) + ". The line below is the first one's environment.", ""]
        if parts else [])
    text = [
        f"# inv-flow compare: {args.preset}",
        "",
        *partial,
        *merged,
        f"Ran {env['date_utc']} on {env['device']}{gpu}; CPU {env['cpu']} ({env['cpu_count']} "
        f"cores, torch threads {env['torch_threads']}); torch {env['torch']}, Python "
        f"{env['python']}, {env['platform']}.",
        "",
        f"Every model: preset `{args.preset}` ({config['model']}, num_blocks "
        f"{config['num_blocks']}, block_size {config['block_size']}, kernel_size "
        f"{config['kernel_size']}), seeds {seeds}, {config['epochs']} epochs, "
        f"batch size {config['batch_size']}, Adam lr {config['lr']}; parameter budget: "
        f"{'coupling width matched to ' + budget_model if args.budget == 'match' else 'preset width'}.",
        "",
        markdown_table(rows, budget_model),
        "",
        "Bits/dim: exact (SNF through the dense log-determinant), after the last epoch; mean ± "
        "sample standard deviation over the seeds, then each seed's value in seed order; test "
        "is — when the dataset has no test split. Δ: mean validation bits/dim minus the best "
        "model's; it exceeds the spread when |Δ| > 2·sqrt(s²/n + s_best²/n_best) (two standard "
        "errors of the difference of the means). Train s/epoch: median over epochs and seeds "
        "of the synchronised optimizer-step time. "
        f"Density: exact log-likelihood of a batch of {batch} (eval mode, no gradient). "
        f"Sample: {args.num_samples} samples. Timings are medians of {args.repeats} runs after "
        f"a warm-up ({'CUDA events' if env['device'].startswith('cuda') else 'perf_counter'}), "
        "median over seeds.",
        "",
        f"![validation bits/dim against epoch]({paths['png'].name})",
        "",
    ]
    write_atomically("\n".join(text).encode("utf-8"), paths["md"])
    document = {"environment": env, "complete": done >= planned, "runs_done": done,
                "runs_planned": planned, "rows": rows, "histories": histories,
                "seed_histories": seed_histories or {},
                "config": {k: v for k, v in config.items()
                           if isinstance(v, (int, float, str, bool))}, **(restated or {})}
    write_atomically(json.dumps(document, indent=1, default=str).encode("utf-8"), paths["json"])
    plot_histories(histories, paths["png"], title=f"{args.preset}: validation bits/dim")
    return paths


def mean_history(runs: Sequence[Sequence[Mapping[str, Any]]]) -> List[Dict[str, Any]]:
    """Per epoch (those every seed reached): mean and std of validation bits/dim over seeds."""
    merged = []
    for epoch_records in zip(*runs):
        vals = [h["val_bpd"] for h in epoch_records]
        mean, std = _mean_std(vals)
        merged.append({"epoch": epoch_records[0]["epoch"], "val_bpd": mean, "val_bpd_std": std,
                       "val_bpd_seeds": vals,
                       "train_bpd": _mean_std([h["train_bpd"] for h in epoch_records])[0],
                       "epoch_seconds": _median([h["epoch_seconds"] for h in epoch_records])})
    return merged


def plot_histories(histories: Mapping[str, Sequence[Mapping[str, Any]]], out: Path,
                   title: str) -> Path:
    """Validation bits/dim against epoch: one line per model (mean over seeds) and a band of
    ± one standard deviation where there are several seeds."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axis = plt.subplots(figsize=(6, 4))
    for name, history in histories.items():
        points = [h for h in history if math.isfinite(h["val_bpd"])]
        if not points:
            continue
        epochs = [h["epoch"] for h in points]
        means = [h["val_bpd"] for h in points]
        line, = axis.plot(epochs, means, marker="o", markersize=3, label=name)
        stds = [h.get("val_bpd_std", math.nan) for h in points]
        if all(math.isfinite(s) for s in stds):
            axis.fill_between(epochs, [m - s for m, s in zip(means, stds)],
                              [m + s for m, s in zip(means, stds)], color=line.get_color(),
                              alpha=0.2, linewidth=0)
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation bits / dim (mean ± std over seeds)")
    axis.grid(True, alpha=0.3)
    if axis.get_lines():
        axis.legend()
    axis.set_title(title)
    figure.tight_layout()
    try:
        write_png_figure(figure, out)
    finally:
        plt.close(figure)
    return out


