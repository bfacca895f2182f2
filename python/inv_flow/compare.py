"""``inv-flow compare``: train Inverse-Flow and its baselines side by side and tabulate
likelihood, size and speed — the paper's central claim, checkable on your data and hardware.

    python -m inv_flow.compare --preset digits --models inverse_flow,finc_flow,glow,snf --epochs 5

Every model is the preset's glow-like architecture with a different invertible convolution in
each step of flow (``family``, see :func:`inv_flow.models.build_model`):

=====================  ==========================================================================
``inverse_flow``       inverse of a masked k×k conv in the density direction; sampling = convolutions
``finc_flow``          FInC Flow's unit (4 channel groups, one order each, + 1×1 mixing), masked
                       conv in the density direction; sampling = wavefront inverses
``finc_flow_unit``     Inverse-Flow's own unit run the FInC way (conv to train, inverse to sample)
``glow``               Glow's 1×1 convolutions (LU)
``snf``                Self-Normalizing Flow: k×k conv + learned inverse R, self-normalized gradient;
                       sampling through R (approximate); a second row times the exact inverse
=====================  ==========================================================================

All models see the same data, seed (initialisation stream and data order), epochs, optimiser
and learning-rate schedule. ``--budget match`` (default) picks each model's coupling width so
that its parameter count is as close as possible to the first model's (reported with the
deviation). After training: validation (and test, when the dataset has one) bits/dim — exact
for every model, SNF through its dense log-determinant — then timings: training seconds per
epoch (median over epochs), the density direction (exact log-likelihood of one batch, eval
mode, no gradient) and drawing ``--num-samples`` samples, each the median of ``--repeats``
runs after a warm-up (CUDA events on a GPU, ``time.perf_counter`` on the CPU).

Writes ``compare.md``, ``compare.csv``, ``compare.json`` (per-epoch histories) and
``compare_bpd.png`` (validation bits/dim against epoch) to ``--out-dir``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence

if TYPE_CHECKING:
    import torch
# torch is imported inside the functions that use it, so `inv-flow compare --help` stays fast.

#: Model name → the config keys that make it (applied on top of the preset and --set).
MODEL_SPECS: Dict[str, Dict[str, Any]] = {
    "inverse_flow": {"family": "inverse_flow"},
    "finc_flow": {"family": "finc_flow", "finc_unit": "grouped"},
    "finc_flow_unit": {"family": "finc_flow", "finc_unit": "unit"},
    "glow": {"family": "glow"},
    "snf": {"family": "snf"},
}

#: How each model draws samples (the paper's point: what sampling has to invert).
SAMPLING_METHOD = {
    "inverse_flow": "masked convolutions",
    "finc_flow": "wavefront inverses (+1×1 inverse)",
    "finc_flow_unit": "wavefront inverses",
    "glow": "1×1 inverses",
    "snf": "learned approx. inverse R (convolutions)",
    "snf_true_inv": "exact inverse (dense solve)",
}

DEFAULT_MODELS = "inverse_flow,finc_flow,glow,snf"
CSV_FIELDS = ("model", "family", "params", "params_vs_ref_pct", "coupling_hidden", "epochs",
              "steps_per_epoch", "val_bpd", "best_val_bpd", "test_bpd", "train_loss_last",
              "train_s_per_epoch", "density_ms_per_batch", "density_batch", "sample_ms",
              "num_samples", "sampling", "status")


# --------------------------------------------------------------------------------- arguments
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``compare`` options to ``parser`` (a subcommand parser of ``inv-flow``)."""
    parser.add_argument("--preset", default="digits", help="dataset/model preset (default digits)")
    parser.add_argument("--models", default=DEFAULT_MODELS,
                        help=f"comma-separated, from {', '.join(MODEL_SPECS)} "
                             f"(default {DEFAULT_MODELS}); the first is the parameter reference")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs for every model (default: the preset's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="config override applied to every model "
                        "(repeatable), e.g. --set batch_size=128 --set coupling_hidden=64")
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1")
    parser.add_argument("--seed", type=int, default=None, help="seed for every model (default: config)")
    parser.add_argument("--budget", choices=("match", "off"), default="match",
                        help="match: choose each model's coupling width to match the first "
                             "model's parameter count; off: the preset's width for all")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (median); default 5")
    parser.add_argument("--num-samples", dest="num_samples", type=int, default=100,
                        help="samples per timed sampling call (default 100)")
    parser.add_argument("--max-steps-per-epoch", dest="max_steps", type=int, default=0,
                        help="cap on optimizer steps per epoch (0 = the whole training set)")
    parser.add_argument("--out-dir", dest="out_dir", default=None,
                        help="where to write the table and plot (default runs/compare_<preset>)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch and inv_conv's rayon pool (0 = their "
                             "defaults); 1 gives steadier CPU timings on a busy machine")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inv-flow compare",
        description="Train Inverse-Flow, FInC Flow, Glow and SNF with the same data, seed, "
                    "parameter budget and epochs; tabulate bits/dim, parameters and timings.")
    return add_arguments(parser)


# ------------------------------------------------------------------------------ configuration
def parse_models(text: str) -> List[str]:
    from inv_flow.config import ConfigError  # noqa: PLC0415

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODEL_SPECS]
    if unknown or not names:
        raise ConfigError(f"unknown model(s) {unknown or text!r} for --models; choose from "
                          f"{', '.join(MODEL_SPECS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--models lists a model twice: {text!r}")
    return names


def base_config(args: argparse.Namespace) -> Dict[str, Any]:
    """The resolved config shared by every model (preset, then --set, --epochs, --seed ...)."""
    from inv_flow.config import ConfigError, parse_overrides, resolve_config  # noqa: PLC0415

    overrides: Dict[str, Any] = dict(parse_overrides(args.overrides))
    family_keys = {key for spec in MODEL_SPECS.values() for key in spec}
    clashing = sorted(family_keys & set(overrides))
    if clashing:
        raise ConfigError(f"--set {', '.join(clashing)} would change what the models are; "
                          "choose models with --models instead")
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.device is not None:
        overrides["device"] = args.device
    overrides.setdefault("name", f"compare_{args.preset}")
    for key in ("repeats", "num_samples"):
        if getattr(args, key) < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be >= 1")
    if args.max_steps < 0:
        raise ConfigError("--max-steps-per-epoch must be >= 0")
    config = resolve_config(args.preset, overrides)
    if "recon_loss_weight" not in overrides and not config.get("recon_loss_weight"):
        # SNF's approximate inverse must be trained: Keller et al.'s weight 1 unless set.
        config["recon_loss_weight"] = 1.0
    return config


def model_config(base: Mapping[str, Any], name: str, coupling_hidden: Optional[int] = None
                 ) -> Dict[str, Any]:
    config = dict(base)
    config.update(MODEL_SPECS[name])
    if coupling_hidden is not None:
        config["coupling_hidden"] = int(coupling_hidden)
    return config


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _quiet_build(config, image_shape):
    import warnings  # noqa: PLC0415

    from inv_flow.models import build_model  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model(config, image_shape)


def match_coupling_width(base: Mapping[str, Any], name: str, image_shape, target: int,
                         builder: Callable = _quiet_build) -> tuple[int, int]:
    """The coupling width whose parameter count is closest to ``target`` (counts grow with
    the width, so a bisection), and that count."""
    cache: Dict[int, int] = {}

    def params(width: int) -> int:
        if width not in cache:
            cache[width] = count_parameters(builder(model_config(base, name, width), image_shape))
        return cache[width]

    low, high = 1, max(2, int(base["coupling_hidden"]))
    while params(high) < target and high < 64 * int(base["coupling_hidden"]):
        high *= 2
    while high - low > 1:
        middle = (low + high) // 2
        if params(middle) < target:
            low = middle
        else:
            high = middle
    best = min((low, high), key=lambda w: (abs(params(w) - target), w))
    return best, params(best)


# ------------------------------------------------------------------------------------ timing
def median_ms(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn()`` in ms over ``repeats`` runs after one warm-up run:
    CUDA events on a GPU, ``time.perf_counter`` on the CPU."""
    import torch  # noqa: PLC0415 - lazy, see the module imports
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            started = time.perf_counter()
            fn()
            times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def _sync(device: torch.device) -> None:
    import torch  # noqa: PLC0415 - lazy, see the module imports
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- train / evaluate
def evaluate_bpd(model, dataset, config, device, num_dims: int) -> float:
    """Exact bits/dim of ``dataset`` (eval mode; capped at ``max_eval_ex`` examples)."""
    import torch  # noqa: PLC0415 - lazy, see the module imports
    from inv_flow.data import make_loader  # noqa: PLC0415
    from inv_flow.flows import bits_per_dim  # noqa: PLC0415

    limit = int(config["max_eval_ex"]) or len(dataset)
    loader = make_loader(dataset, int(config["batch_size"]), shuffle=False,
                         seed=int(config["seed"]), num_workers=int(config["num_workers"]))
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for batch in loader:
                if count >= limit:
                    break
                batch = batch[: limit - count].to(device)
                _, log_prob = model(batch)
                total += float(log_prob.double().sum())
                count += batch.shape[0]
    finally:
        model.train(was_training)
    return float(bits_per_dim(total / max(count, 1), num_dims))


def train_and_measure(name: str, config: Mapping[str, Any], datasets, device: torch.device,
                      args: argparse.Namespace, log: Callable[[str], None]) -> Dict[str, Any]:
    """Train one model with ``config`` and measure it; returns the table row and history."""
    import torch  # noqa: PLC0415 - lazy, see the module imports
    from inv_flow.checkpoint import seed_everything  # noqa: PLC0415
    from inv_flow.data import make_loader, set_loader_epoch  # noqa: PLC0415
    from inv_flow.flows import bits_per_dim  # noqa: PLC0415
    from inv_flow.layers import SelfNormConv2d, initialize_actnorm  # noqa: PLC0415

    seed = int(config["seed"])
    seed_everything(seed)
    image_shape = tuple(int(s) for s in datasets.image_shape)
    num_dims = math.prod(image_shape)
    model = _quiet_build(dict(config), image_shape).to(device)
    batch_size = int(config["batch_size"])
    loader = make_loader(datasets.train, batch_size, shuffle=True, seed=seed,
                         num_workers=int(config["num_workers"]),
                         drop_last=len(datasets.train) > batch_size)
    steps_per_epoch = len(loader) if not args.max_steps else min(len(loader), args.max_steps)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(config["lr"]))
    warmup_steps = max(1, round(float(config["warmup_epochs"]) * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, (lambda step: min(1.0, (step + 1) / warmup_steps))
        if float(config["warmup_epochs"]) > 0 else (lambda step: 1.0))
    max_norm = float(config["grad_clip_norm"]) or math.inf

    set_loader_epoch(loader, 0)
    initialize_actnorm(model, next(iter(loader)).to(device))
    history: List[Dict[str, Any]] = []
    status, epoch_times, best_val = "ok", [], math.inf
    for epoch in range(int(config["epochs"])):
        model.train()
        set_loader_epoch(loader, epoch)
        _sync(device)
        started = time.perf_counter()
        losses = []
        for step, batch in enumerate(loader):
            if step >= steps_per_epoch:
                break
            batch = batch.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            _, log_prob = model(batch)
            loss = bits_per_dim(log_prob, num_dims).mean() + model.extra_loss()
            if not torch.isfinite(loss):
                status = f"diverged in epoch {epoch + 1} (loss {float(loss)})"
                break
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            optimizer.step()
            scheduler.step()
            losses.append(loss.detach())
        _sync(device)
        epoch_times.append(time.perf_counter() - started)
        if status != "ok":
            break
        torch.manual_seed(seed + 1)  # the same dequantization noise for every model's evaluation
        val_bpd = evaluate_bpd(model, datasets.val, config, device, num_dims)
        best_val = min(best_val, val_bpd)
        train_loss = float(torch.stack(losses).mean()) if losses else math.nan
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_bpd": val_bpd,
                        "epoch_seconds": epoch_times[-1]})
        log(f"  {name} epoch {epoch + 1}: train loss {train_loss:.4f}, val {val_bpd:.4f} bits/dim, "
            f"{epoch_times[-1]:.1f} s")

    row: Dict[str, Any] = {"model": name, "family": config["family"],
                           "params": count_parameters(model),
                           "coupling_hidden": int(config["coupling_hidden"]),
                           "epochs": len(history), "steps_per_epoch": steps_per_epoch,
                           "status": status, "num_samples": args.num_samples,
                           "sampling": SAMPLING_METHOD[name]}
    row["val_bpd"] = history[-1]["val_bpd"] if history else math.nan
    row["best_val_bpd"] = best_val if history else math.nan
    row["train_loss_last"] = history[-1]["train_loss"] if history else math.nan
    row["train_s_per_epoch"] = statistics.median(epoch_times) if epoch_times else math.nan
    row["test_bpd"] = math.nan
    extra_rows: List[Dict[str, Any]] = []
    if status == "ok":
        if datasets.test is not None:
            torch.manual_seed(seed + 1)
            row["test_bpd"] = evaluate_bpd(model, datasets.test, config, device, num_dims)
        model.eval()
        density_batch = _timing_batch(datasets, batch_size).to(device)
        row["density_batch"] = density_batch.shape[0]
        with torch.no_grad():
            row["density_ms_per_batch"] = median_ms(lambda: model(density_batch), device,
                                                    args.repeats)
            row["sample_ms"] = median_ms(lambda: model.sample(args.num_samples), device,
                                         args.repeats)
            snf_layers = [m for m in model.modules() if isinstance(m, SelfNormConv2d)]
            if snf_layers and not all(m.sample_true_inv for m in snf_layers):
                for layer in snf_layers:
                    layer.sample_true_inv = True
                exact = {**row, "model": f"{name} (sample_true_inv)",
                         "sampling": SAMPLING_METHOD["snf_true_inv"],
                         "sample_ms": median_ms(lambda: model.sample(args.num_samples), device,
                                                args.repeats)}
                extra_rows.append(exact)
    return {"row": row, "extra_rows": extra_rows, "history": history}


def _timing_batch(datasets, batch_size: int) -> torch.Tensor:
    import torch  # noqa: PLC0415 - lazy, see the module imports
    source = datasets.val if len(datasets.val) >= batch_size else datasets.train
    count = min(batch_size, len(source))
    return torch.stack([source[i] for i in range(count)])


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


def markdown_table(rows: Sequence[Mapping[str, Any]], reference: str) -> str:
    header = ("| model | params (vs " + reference + ") | val bits/dim | test bits/dim | "
              "train s/epoch | density ms/batch | sample ms | sampling by |")
    lines = [header, "|" + "---|" * 8]
    for row in rows:
        params = f"{row['params']:,} ({row['params_vs_ref_pct']:+.1f}%)"
        status = "" if row["status"] == "ok" else f" — {row['status']}"
        lines.append(
            f"| {row['model']}{status} | {params} | {_fmt(row['val_bpd'])} | "
            f"{_fmt(row['test_bpd'])} | {_fmt(row['train_s_per_epoch'], 2)} | "
            f"{_fmt(row.get('density_ms_per_batch'), 2)} | {_fmt(row.get('sample_ms'), 2)} | "
            f"{row['sampling']} |")
    return "\n".join(lines)


def write_report(out_dir: Path, rows, histories, config, env, args, reference: str) -> Dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "compare.csv", "md": out_dir / "compare.md",
             "json": out_dir / "compare.json", "png": out_dir / "compare_bpd.png"}
    with open(paths["csv"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row.get(key, "") for key in CSV_FIELDS})
    batch = next((row.get("density_batch") for row in rows if row.get("density_batch")), "?")
    gpu = f" ({env['gpu']})" if "gpu" in env else ""
    text = [
        f"# inv-flow compare: {args.preset}",
        "",
        f"Ran {env['date_utc']} on {env['device']}{gpu}; CPU {env['cpu']} ({env['cpu_count']} "
        f"cores, torch threads {env['torch_threads']}); torch {env['torch']}, Python "
        f"{env['python']}, {env['platform']}.",
        "",
        f"Every model: preset `{args.preset}` ({config['model']}, num_blocks "
        f"{config['num_blocks']}, block_size {config['block_size']}, kernel_size "
        f"{config['kernel_size']}), seed {config['seed']}, {config['epochs']} epochs, "
        f"batch size {config['batch_size']}, Adam lr {config['lr']}; parameter budget: "
        f"{'coupling width matched to ' + reference if args.budget == 'match' else 'preset width'}.",
        "",
        markdown_table(rows, reference),
        "",
        f"Bits/dim: exact (SNF through the dense log-determinant), after the last epoch; "
        f"test is — when the dataset has no test split. Train s/epoch: median over epochs. "
        f"Density: exact log-likelihood of a batch of {batch} (eval mode, no gradient). "
        f"Sample: {args.num_samples} samples. Timings are medians of {args.repeats} runs after "
        f"a warm-up ({'CUDA events' if env['device'].startswith('cuda') else 'perf_counter'}).",
        "",
        f"![validation bits/dim against epoch]({paths['png'].name})",
        "",
    ]
    paths["md"].write_text("\n".join(text), encoding="utf-8")
    paths["json"].write_text(json.dumps({"environment": env, "rows": rows,
                                         "histories": histories,
                                         "config": {k: v for k, v in config.items()
                                                    if isinstance(v, (int, float, str, bool))}},
                                        indent=1, default=str), encoding="utf-8")
    plot_histories(histories, paths["png"], title=f"{args.preset}: validation bits/dim")
    return paths


def plot_histories(histories: Mapping[str, Sequence[Mapping[str, Any]]], out: Path,
                   title: str) -> Path:
    """Validation bits/dim against epoch, one line per model."""
    from inv_flow.plots import plot_curves  # noqa: PLC0415

    series = {name: [(h["epoch"], h["val_bpd"]) for h in history] for name, history in histories.items()}
    return plot_curves(series, out, "validation bits / dim", title)


# -------------------------------------------------------------------------------------- run
def run(args: argparse.Namespace) -> int:
    """Run the comparison described by ``args`` (see :func:`add_arguments`); 0 on success."""
    import torch  # noqa: PLC0415 - lazy, see the module imports
    from inv_flow.config import ConfigError  # noqa: PLC0415
    from inv_flow.data import load_datasets  # noqa: PLC0415
    from inv_flow.building import select_device  # noqa: PLC0415

    log = (lambda text: None) if args.quiet else (lambda text: print(text, flush=True))
    names = parse_models(args.models)
    if args.threads < 0:
        raise ConfigError("--threads must be >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
        # inv_conv's CPU pool reads this when it starts (at its first op in this process).
        os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    config = base_config(args)
    device = select_device(config["device"])
    datasets = load_datasets(config)
    image_shape = tuple(int(s) for s in datasets.image_shape)
    for name in names:  # every model must build before anything trains
        try:
            _quiet_build(model_config(config, name), image_shape)
        except ValueError as err:
            raise ConfigError(f"model {name!r} cannot be built for images of shape "
                              f"{image_shape}: {err}") from err

    reference = names[0]
    target = count_parameters(_quiet_build(model_config(config, reference), image_shape))
    widths = {name: int(config["coupling_hidden"]) for name in names}
    if args.budget == "match":
        for name in names[1:]:
            widths[name], _ = match_coupling_width(config, name, image_shape, target)

    rows, histories = [], {}
    for name in names:
        cfg = model_config(config, name, widths[name])
        log(f"{name}: coupling width {widths[name]}")
        result = train_and_measure(name, cfg, datasets, device, args, log)
        for row in [result["row"], *result["extra_rows"]]:
            row["params_vs_ref_pct"] = 100.0 * (row["params"] - target) / target
            rows.append(row)
        histories[name] = result["history"]

    from inv_flow.runs import claim_folder  # noqa: PLC0415

    # A fresh folder: an earlier comparison's tables are never overwritten.
    out_dir = claim_folder(args.out_dir or f"runs/compare_{args.preset}")
    env = environment(device)
    paths = write_report(out_dir, rows, histories, config, env, args, reference)
    print(markdown_table(rows, reference))
    print(f"wrote {paths['md']}, {paths['csv']}, {paths['json']}, {paths['png']}")
    return 0 if all(row["status"] == "ok" for row in rows) else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m inv_flow.compare``; exit status 0 ok, 1 a model diverged, 2 bad usage."""
    args = build_parser().parse_args(argv)
    from inv_flow.checkpoint import CheckpointError  # noqa: PLC0415
    from inv_flow.config import ConfigError  # noqa: PLC0415
    from inv_flow.data import DatasetNotFoundError  # noqa: PLC0415

    try:
        return run(args)
    except (ConfigError, DatasetNotFoundError, CheckpointError, ImportError) as err:
        print(f"inv-flow compare: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
