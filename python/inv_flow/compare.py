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
``inverse_flow_1x1``   inverse_flow with Glow's 1×1 convolution after each unit (``mix_1x1``)
``glow``               Glow's 1×1 convolutions (LU)
``snf``                Self-Normalizing Flow: k×k conv + learned inverse R, self-normalized gradient;
                       sampling through R (approximate); a second row times the exact inverse
=====================  ==========================================================================

All models see the same data, seed (initialisation stream and data order), epochs, optimiser
and learning-rate schedule: each is trained by :class:`inv_flow.experiment.Experiment` (the one
training loop: warm-up, clipping, ActNorm init, divergence checks, evaluation), silently (no
run folder). ``--seeds 1,2,3`` trains every model once per seed; the table gives mean ±
standard deviation and each seed's value, and whether a model's difference from the best
exceeds the spread (:mod:`inv_flow.compare_report`). ``--budget match`` (default) picks each
model's coupling width so that its parameter count is as close as possible to the first
model's (reported with the deviation). After training: validation (and test, when the dataset
has one) bits/dim — exact for every model, SNF through its dense log-determinant — then
timings: training seconds per epoch (median over epochs of the synchronised step time), the
density direction (exact log-likelihood of one batch, eval mode, no gradient) and drawing
``--num-samples`` samples, each the median of ``--repeats`` runs after a warm-up (CUDA events
on a GPU, ``time.perf_counter`` on the CPU), then the median over seeds.

Writes ``compare.md``, ``compare.csv``, ``compare.json`` (per-epoch histories, each seed's
run, the model configs and options) and ``compare_bpd.png`` (validation bits/dim against epoch,
a band of ± one standard deviation over the seeds) to ``--out-dir``.

``--merge A B ...`` trains nothing: it pools comparisons that ran the same models and settings
with different seeds (one machine or call per seed) into one report in a new folder.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence

from inv_flow.compare_report import (aggregate_seeds, environment, mark_spread, markdown_table,
                                     mean_history, write_report)

if TYPE_CHECKING:
    import torch
# torch is imported inside the functions that use it, so `inv-flow compare --help` stays fast.

#: Model name → the config keys that make it (applied on top of the preset and --set).
MODEL_SPECS: Dict[str, Dict[str, Any]] = {
    "inverse_flow": {"family": "inverse_flow"},
    "finc_flow": {"family": "finc_flow", "finc_unit": "grouped"},
    "finc_flow_unit": {"family": "finc_flow", "finc_unit": "unit"},
    "inverse_flow_1x1": {"family": "inverse_flow", "mix_1x1": True},
    "glow": {"family": "glow"},
    "snf": {"family": "snf"},
}

#: How each model draws samples (the paper's point: what sampling has to invert).
SAMPLING_METHOD = {
    "inverse_flow": "masked convolutions",
    "finc_flow": "wavefront inverses (+1×1 inverse)",
    "finc_flow_unit": "wavefront inverses",
    "inverse_flow_1x1": "masked convolutions + 1×1 inverses",
    "glow": "1×1 inverses",
    "snf": "learned approx. inverse R (convolutions)",
    "snf_true_inv": "exact inverse (dense solve)",
}

DEFAULT_MODELS = "inverse_flow,finc_flow,glow,snf"

# --------------------------------------------------------------------------------- arguments
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``compare`` options to ``parser`` (a subcommand parser of ``inv-flow``)."""
    parser.add_argument("--preset", default="digits", help="dataset/model preset (default digits)")
    parser.add_argument("--models", default=DEFAULT_MODELS,
                        help=f"comma-separated, from {', '.join(MODEL_SPECS)} "
                             f"(default {DEFAULT_MODELS}); the first sets the parameter budget")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs for every model (default: the preset's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="config override applied to every model "
                        "(repeatable), e.g. --set batch_size=128 --set coupling_hidden=64")
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1")
    parser.add_argument("--seed", type=int, default=None, help="seed for every model (default: config)")
    parser.add_argument("--seeds", default=None, metavar="S1,S2,...",
                        help="train every model once per seed (e.g. 1,2,3) and report mean ± "
                             "standard deviation and each seed's bits/dim")
    parser.add_argument("--budget", choices=("match", "off"), default="match",
                        help="match: choose each model's coupling width to match the first "
                             "model's parameter count; off: the preset's width for all")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (median); default 5")
    parser.add_argument("--num-samples", dest="num_samples", type=int, default=100,
                        help="samples per timed sampling call (default 100)")
    parser.add_argument("--max-steps-per-epoch", dest="max_steps", type=int, default=0,
                        help="cap on optimizer steps per epoch: train on a fixed random "
                             "subset of N × batch_size images (0 = the whole training set)")
    parser.add_argument("--out-dir", dest="out_dir", default=None,
                        help="where to write the table and plot (default runs/compare_<preset>)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch and inv_conv's rayon pool (0 = their "
                             "defaults); 1 gives steadier CPU timings on a busy machine")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    parser.add_argument("--merge", nargs="+", default=None, metavar="FOLDER",
                        help="train nothing: pool the seeds of earlier comparisons (same "
                             "models and settings, different seeds) into one report in a new "
                             "folder (--out-dir, default runs/compare_<preset>_merged)")
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


# ------------------------------------------------------------------------------- train / measure
def train_and_measure(name: str, config: Mapping[str, Any], datasets, args: argparse.Namespace,
                      log: Callable[[str], None]) -> Dict[str, Any]:
    """Train one model (one seed) with :class:`inv_flow.experiment.Experiment` and time it;
    returns the seed's row and its per-epoch history."""
    import torch  # noqa: PLC0415 - lazy, see the module imports
    from inv_flow.experiment import Experiment, TrainingDiverged  # noqa: PLC0415
    from inv_flow.layers import SelfNormConv2d  # noqa: PLC0415

    # A silent experiment (no run folder, checkpoints, samples or prints): compare writes its
    # own report.  log_timing gives the synchronised training time of every step.
    config = {**config, "sample_epochs": 0, "eval_epochs": 1, "log_timing": True,
              "progress": False, "tensorboard": False, "wandb": False}
    seed = int(config["seed"])
    exp = Experiment(config, model_builder=_quiet_build, datasets=datasets, main_process=False)
    history: List[Dict[str, Any]] = []
    status = "ok"
    try:
        for epoch in range(int(config["epochs"])):
            try:
                record = exp.train(until_epoch=epoch + 1)
            except TrainingDiverged:
                status = f"diverged in epoch {epoch + 1}"
                break
            seconds = record["time_per_batch_mean"] * exp.steps_per_epoch
            history.append({"epoch": epoch + 1, "train_bpd": record["train_bpd"],
                            "val_bpd": record["val_bpd"], "epoch_seconds": seconds})
            log(f"  {name} seed {seed} epoch {epoch + 1}: train {record['train_bpd']:.4f}, "
                f"val {record['val_bpd']:.4f} bits/dim, {seconds:.1f} s")
        row: Dict[str, Any] = {
            "seed": seed, "params": count_parameters(exp.model), "epochs": len(history),
            "steps_per_epoch": exp.steps_per_epoch, "status": status,
            "val_bpd": history[-1]["val_bpd"] if history else math.nan,
            "best_val_bpd": min((h["val_bpd"] for h in history), default=math.nan),
            "train_bpd_last": history[-1]["train_bpd"] if history else math.nan,
            "train_s_per_epoch": statistics.median(h["epoch_seconds"] for h in history)
            if history else math.nan,
            "test_bpd": math.nan}
        if status != "ok":
            return {"row": row, "history": history}
        model, device = exp.model, exp.device
        if datasets.test is not None:
            torch.manual_seed(seed + 1)  # the same dequantization noise for every model
            row["test_bpd"] = exp.evaluate("test")["test_bpd"]
        model.eval()
        density_batch = _timing_batch(datasets, int(config["batch_size"])).to(device)
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
                row["exact_sample_ms"] = median_ms(lambda: model.sample(args.num_samples),
                                                   device, args.repeats)
        return {"row": row, "history": history}
    finally:
        exp.close()


def _timing_batch(datasets, batch_size: int) -> torch.Tensor:
    import torch  # noqa: PLC0415 - lazy, see the module imports
    source = datasets.val if len(datasets.val) >= batch_size else datasets.train
    count = min(batch_size, len(source))
    return torch.stack([source[i] for i in range(count)])


# -------------------------------------------------------------------------------------- run
def parse_seeds(args: argparse.Namespace, config_seed: int) -> List[int]:
    """``--seeds 1,2,3`` (or ``--seed``, or the config's seed) as a list of distinct ints."""
    from inv_flow.config import ConfigError  # noqa: PLC0415

    if args.seeds is None:
        return [config_seed]
    if args.seed is not None:
        raise ConfigError("give --seed or --seeds, not both")
    try:
        seeds = [int(part) for part in args.seeds.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds expects comma-separated integers such as 1,2,3, got "
                          f"{args.seeds!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds expects distinct integers such as 1,2,3, got {args.seeds!r}")
    return seeds


def _capped(datasets, max_steps: int, batch_size: int, split_seed: int):
    """``datasets`` with the training set cut to a fixed random ``max_steps × batch_size``
    images (``--max-steps-per-epoch``): every epoch then has at most ``max_steps`` steps."""
    import dataclasses  # noqa: PLC0415

    import torch  # noqa: PLC0415 - lazy, see the module imports
    from torch.utils.data import Subset  # noqa: PLC0415

    count = max_steps * batch_size
    if not max_steps or count >= len(datasets.train):
        return datasets
    order = torch.randperm(len(datasets.train),
                           generator=torch.Generator().manual_seed(split_seed))
    return dataclasses.replace(datasets, train=Subset(datasets.train, sorted(order[:count].tolist())))


def run(args: argparse.Namespace) -> int:
    """Run the comparison described by ``args`` (see :func:`add_arguments`), or with
    ``--merge`` pool earlier ones; 0 on success."""
    if args.merge:
        _check_merge_alone(args)
        return merge(args.merge, args.out_dir)
    import torch  # noqa: PLC0415 - lazy, see the module imports
    from inv_flow.config import ConfigError  # noqa: PLC0415
    from inv_flow.data import load_datasets  # noqa: PLC0415
    from inv_flow.building import select_device  # noqa: PLC0415

    log = (lambda text: None) if args.quiet else (lambda text: print(text, flush=True))
    names = parse_models(args.models)
    if args.threads < 0:
        raise ConfigError("--threads must be >= 0")
    config = base_config(args)
    seeds = parse_seeds(args, int(config["seed"]))
    if args.threads:
        torch.set_num_threads(args.threads)
        # inv_conv's CPU pool reads this when it starts (at its first op in this process).
        os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    device = select_device(config["device"])
    datasets = load_datasets(config)
    image_shape = tuple(int(s) for s in datasets.image_shape)
    for name in names:  # every model must build before anything trains
        try:
            _quiet_build(model_config(config, name), image_shape)
        except ValueError as err:
            raise ConfigError(f"model {name!r} cannot be built for images of shape "
                              f"{image_shape}: {err}") from err
    train_sets = _capped(datasets, args.max_steps, int(config["batch_size"]),
                         int(config["split_seed"]))

    budget_model = names[0]  # the others' coupling widths are matched to its parameter count
    target = count_parameters(_quiet_build(model_config(config, budget_model), image_shape))
    widths = {name: int(config["coupling_hidden"]) for name in names}
    if args.budget == "match":
        for name in names[1:]:
            widths[name], _ = match_coupling_width(config, name, image_shape, target)

    from inv_flow.runs import claim_folder  # noqa: PLC0415

    # A fresh folder, claimed before anything trains (an earlier comparison's tables are never
    # overwritten); the report is rewritten after every run, so one cut short keeps what finished.
    out_dir = claim_folder(args.out_dir or f"runs/compare_{args.preset}")
    env = environment(device)
    runs: Dict[str, List[Dict[str, Any]]] = {}
    configs = {name: model_config(config, name, widths[name]) for name in names}
    options = {key: getattr(args, key) for key in REPORT_OPTIONS}
    for name in names:
        log(f"{name}: coupling width {widths[name]}, seeds {', '.join(map(str, seeds))}")
        for seed in seeds:
            result = train_and_measure(name, {**configs[name], "seed": seed}, train_sets, args, log)
            result["row"]["num_samples"] = args.num_samples
            runs.setdefault(name, []).append(result)
            rows, paths = build_report(out_dir, runs, configs, config, env, options,
                                       budget_model, target, len(names) * len(seeds))
    print(markdown_table(rows, budget_model))
    print(f"wrote {paths['md']}, {paths['csv']}, {paths['json']}, {paths['png']}")
    return 0 if all(row["status"] == "ok" for row in rows) else 1


#: The options a report states (kept in compare.json, so that --merge can restate them).
REPORT_OPTIONS = ("preset", "budget", "repeats", "num_samples", "max_steps")


def build_report(out_dir: Path, runs: Mapping[str, List[Dict[str, Any]]],
                 configs: Mapping[str, Mapping[str, Any]], config: Mapping[str, Any],
                 env: Mapping[str, Any], options: Mapping[str, Any], budget_model: str,
                 target: int, planned: int, parts: Sequence[Mapping[str, Any]] = ()
                 ) -> tuple[list, Dict[str, Path]]:
    """Aggregate each model's seed runs into rows and (re)write the report files."""
    rows, histories, seed_histories = [], {}, {}
    for name, done in runs.items():
        for row in aggregate_seeds(name, configs[name], done, SAMPLING_METHOD[name],
                                   SAMPLING_METHOD["snf_true_inv"]):
            row["params_vs_ref_pct"] = 100.0 * (row["params"] - target) / target
            rows.append(row)
        histories[name] = mean_history([run["history"] for run in done])
        seed_histories[name] = {str(run["row"]["seed"]): run["history"] for run in done}
    mark_spread(rows)
    finished = sum(len(done) for done in runs.values())
    restated = {"budget_model": budget_model, "target_params": target, "options": dict(options),
                "model_configs": {name: _scalars(configs[name]) for name in configs},
                "seed_runs": runs, "parts": list(parts)}
    paths = write_report(out_dir, rows, histories, config, env, argparse.Namespace(**options),
                         budget_model, seed_histories, (finished, planned), restated)
    return rows, paths


def _scalars(config: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool))}


# ------------------------------------------------------------------------------------ merge
#: What a compare.json must hold for --merge to rebuild a report from it.
MERGE_KEYS = frozenset({"seed_runs", "options", "model_configs", "budget_model", "target_params",
                        "environment", "runs_planned", "config"})


def merge(folders: Sequence[str], out_dir: Optional[str]) -> int:
    """``--merge A B ...``: pool comparisons of the same models and settings that ran different
    seeds (e.g. on several machines, or one call per seed) into one report, in a new folder."""
    import json  # noqa: PLC0415

    from inv_flow.config import ConfigError  # noqa: PLC0415
    from inv_flow.runs import claim_folder  # noqa: PLC0415

    if len(folders) < 2:
        raise ConfigError(f"--merge needs at least two comparison folders, got {len(folders)}")
    parts = []
    for folder in folders:
        path = Path(folder) / "compare.json"
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ConfigError(f"--merge: cannot read {path}: {err}") from None
        if not isinstance(document, dict) or not MERGE_KEYS <= set(document):
            raise ConfigError(f"--merge: {path} has no per-seed runs (not written by this "
                              "version of inv-flow compare); run that comparison again")
        parts.append((folder, document))
    first_folder, first = parts[0]
    same = ("options", "model_configs", "budget_model", "target_params")
    runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in first["model_configs"]}
    for folder, document in parts:
        for key in same:
            if _without_seed(document[key]) != _without_seed(first[key]):
                raise ConfigError(f"--merge: {folder} differs from {first_folder} in {key} "
                                  "(only the seeds may differ)")
        for name, done in document["seed_runs"].items():
            have = {run["row"]["seed"] for run in runs[name]}
            for run in done:
                if run["row"]["seed"] in have:
                    raise ConfigError(f"--merge: {name} seed {run['row']['seed']} is in more "
                                      "than one folder")
                runs[name].append(run)
    for done in runs.values():
        done.sort(key=lambda run: run["row"]["seed"])
    runs = {name: done for name, done in runs.items() if done}
    options = first["options"]
    target_dir = claim_folder(out_dir or f"runs/compare_{options['preset']}_merged")
    sources = [{"folder": str(folder), **{k: document["environment"].get(k)
                                          for k in ("date_utc", "host", "gpu", "device")}}
               for folder, document in parts]
    planned = sum(document["runs_planned"] for _, document in parts)
    rows, paths = build_report(target_dir, runs, first["model_configs"], first["config"],
                               first["environment"], options, first["budget_model"],
                               first["target_params"], planned, sources)
    print(markdown_table(rows, first["budget_model"]))
    print(f"wrote {paths['md']}, {paths['csv']}, {paths['json']}, {paths['png']}")
    return 0 if all(row["status"] == "ok" for row in rows) else 1


def _check_merge_alone(args: argparse.Namespace) -> None:
    """--merge trains nothing: a training option next to it would be silently ignored."""
    from inv_flow.config import ConfigError  # noqa: PLC0415

    parser = build_parser()
    given = [action.option_strings[0] for action in parser._actions
             if action.dest not in ("help", "merge", "out_dir", "quiet")
             and getattr(args, action.dest) != action.default]
    if given:
        raise ConfigError(f"--merge trains nothing and takes only --out-dir; remove "
                          f"{', '.join(given)} (the merged comparisons' own settings are used)")


def _without_seed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_seed(v) for k, v in value.items() if k != "seed"}
    return value


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
