"""``inv-flow`` command line (also ``python -m inv_flow``).

    inv-flow train --preset digits [--config FILE] [--set key=value ...] [--resume PATH]
    inv-flow eval --checkpoint PATH [--split val|test|train] [--set key=value ...]
    inv-flow sample --checkpoint PATH -n 64 --out grid.png [--temperature 0.8]
    inv-flow export --checkpoint PATH --out model.safetensors
    inv-flow plot runs/NAME/metrics.jsonl --out bpd.png
    inv-flow options            # every config key: default, meaning, allowed values
    inv-flow presets            # the model presets

Each new training run writes into its own folder under runs/ (see inv_flow.runs).  eval and
sample take a checkpoint or an export (``.safetensors``).  torch is imported only when a
command needs it, so ``--help`` is fast and a missing torch is a one-line error.

Exit status: 0 done; 1 training diverged; 2 an error reported in one line on stderr (usage,
config, missing data, a checkpoint that does not fit, a file that cannot be read or written);
130 interrupted (Ctrl-C; the message names the last checkpoint and the --resume command).
See docs/TRAINING.md, "Exit codes and errors".

Distributed data-parallel training: start ``train`` (or ``eval``) under torchrun, e.g.
``torchrun --nproc_per_node=4 -m inv_flow train --preset cifar10``; see inv_flow.distributed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from inv_flow.config import (ConfigError, describe_options, load_config_file, parse_overrides,
                             resolve_config)

PRESET_NAMES = ("mnist", "cifar10", "imagenet32", "imagenet64", "celeba32", "celeba64",
                "celeba128", "digits")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``inv-flow`` (exposed for the experiment scripts and tests)."""
    parser = argparse.ArgumentParser(
        prog="inv-flow", description="Train and use Inverse-Flow normalizing flows.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    set_help = "override a config option (repeatable), e.g. --set lr=1e-4 --set epochs=10"

    train = commands.add_parser("train", help="train a model")
    train.add_argument("--preset", default=None,
                       help=f"model/dataset preset: {', '.join(PRESET_NAMES)} (default digits)")
    train.add_argument("--config", default=None, metavar="FILE",
                       help="options from a JSON file (or YAML with PyYAML), applied before --set")
    train.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help=set_help)
    train.add_argument("--resume", default=None, metavar="PATH",
                       help="continue training exactly from a checkpoint (e.g. the run's "
                            "last_checkpoint.tar); --set may extend epochs")

    evaluate = commands.add_parser("eval", help="report bits/dim of a checkpoint")
    evaluate.add_argument("--checkpoint", required=True, metavar="PATH",
                          help="a training checkpoint (.tar) or an export (.safetensors)")
    evaluate.add_argument("--split", default="val", choices=("val", "test", "train"))
    evaluate.add_argument("--set", dest="overrides", action="append", default=[],
                          metavar="KEY=VALUE", help="e.g. --set data_root=/data --set max_eval_ex=1000")

    sample = commands.add_parser("sample", help="write a PNG grid of samples from a checkpoint")
    sample.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="a training checkpoint (.tar) or an export (.safetensors)")
    sample.add_argument("-n", "--num-samples", dest="num_samples", type=int, default=64)
    sample.add_argument("--out", required=True, metavar="PNG")
    sample.add_argument("--temperature", type=float, default=None)
    sample.add_argument("--seed", type=int, default=None, help="sampling seed (default: run seed)")
    sample.add_argument("--device", default=None, help="device to sample on (default: auto)")

    export = commands.add_parser(
        "export", help="write a checkpoint's model as safetensors (+ its config as JSON)")
    export.add_argument("--checkpoint", required=True, metavar="PATH")
    export.add_argument("--out", required=True, metavar="FILE.safetensors",
                        help="the weights; the config goes to the .json of the same name")

    plot = commands.add_parser("plot", help="plot bits/dim against epoch from metrics.jsonl")
    plot.add_argument("metrics", metavar="METRICS_JSONL")
    plot.add_argument("--out", required=True, metavar="PNG")

    from inv_flow import compare  # noqa: PLC0415 - torch-free at import

    compare.add_arguments(
        commands.add_parser("compare", help="train Inverse-Flow and baselines side by side, write tables and a plot")
    )
    commands.add_parser("options", help="list every config option: default, meaning, allowed values")
    commands.add_parser("presets", help="list the model presets")
    return parser


def _train(args: argparse.Namespace) -> int:
    from inv_flow.experiment import Experiment  # noqa: PLC0415 - keeps `--help` fast
    from inv_flow.resume import TrainingInterrupted, check_epochs_left, interrupted_message  # noqa: PLC0415
    from inv_flow.runs import describe_run  # noqa: PLC0415

    overrides = parse_overrides(args.overrides)
    if args.config:
        overrides = {**load_config_file(args.config), **overrides}
    resume = args.resume or overrides.pop("resume", "")
    if resume:
        experiment = Experiment.from_checkpoint(resume, overrides)
        try:
            check_epochs_left(experiment.epoch, experiment.config["epochs"], resume)
        except BaseException:
            experiment.close(failed=True)
            raise
    else:
        config = resolve_config(args.preset, overrides)
        experiment = Experiment(config)
    try:
        record = experiment.train()
    except BaseException as err:
        if experiment.distributed:
            _report_rank_failure(experiment, err)
        experiment.close(failed=True)
        if isinstance(err, KeyboardInterrupt) and experiment.is_main:
            raise TrainingInterrupted(interrupted_message(experiment)) from None
        raise
    experiment.close()
    if experiment.is_main:
        summary = {k: record[k] for k in ("epoch", "train_bpd", "val_bpd", "best_val_bpd") if k in record}
        print(f"done: {json.dumps(summary)}")
        print(describe_run(experiment.config))  # the run's own folder, chosen at the start
    return 0


def _report_rank_failure(experiment, err: BaseException) -> None:
    """One line naming the failing rank (torchrun then stops the other ranks), and the error in
    torchrun's failure summary."""
    from inv_flow.distributed import record_error  # noqa: PLC0415

    from inv_flow.experiment import TrainingDiverged  # noqa: PLC0415

    if isinstance(err, (KeyboardInterrupt, SystemExit, TrainingDiverged)):
        return  # interrupted, or diverged on every rank together (reported by main())
    print(f"inv-flow train: rank {experiment.rank} of {experiment.world_size} failed: "
          f"{type(err).__name__}: {err}; shutting down this rank (torchrun stops the others)",
          file=sys.stderr, flush=True)
    record_error(err)


def _load_for_inference(path: str, overrides: dict, load_data: bool = True):
    """An Experiment with the weights of a checkpoint or of an export (``.safetensors``)."""
    from inv_flow import export  # noqa: PLC0415
    from inv_flow.experiment import Experiment  # noqa: PLC0415

    if export.is_export(path):
        return export.experiment_from_export(path, overrides, load_data=load_data)
    return Experiment.from_checkpoint(path, overrides, load_data=load_data, training_state=False)


def _eval(args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.overrides)
    experiment = _load_for_inference(args.checkpoint, overrides)
    with experiment:
        # Under torchrun every rank evaluates its shard; the sums are all-reduced.
        metrics = experiment.evaluate(args.split)
    if not experiment.is_main:
        return 0
    prefix = "train_eval" if args.split == "train" else args.split
    print(f"{args.split}: {metrics[f'{prefix}_bpd']:.4f} bits/dim, "
          f"log-likelihood {metrics[f'{prefix}_log_likelihood']:.2f} nats/image over "
          f"{metrics[f'{prefix}_examples']} images")
    print(json.dumps(metrics))
    return 0


#: Most images ``inv-flow sample`` draws into its one grid.
MAX_GRID_SAMPLES = 10_000


def _sample(args: argparse.Namespace) -> int:
    overrides = {"device": args.device} if args.device else {}
    if args.seed is not None:
        overrides["seed"] = str(args.seed)
    if args.temperature is not None:
        overrides["temperature"] = str(args.temperature)  # validated like the config option
    if not 1 <= args.num_samples <= MAX_GRID_SAMPLES:
        raise ConfigError(f"-n must be between 1 and {MAX_GRID_SAMPLES} (one PNG grid), got "
                          f"{args.num_samples}")
    experiment = _load_for_inference(args.checkpoint, overrides, load_data=False)
    with experiment:
        path = experiment.save_samples(args.out, n=args.num_samples)
    if experiment.is_main:
        print(f"wrote {args.num_samples} samples to {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from inv_flow.export import export_checkpoint  # noqa: PLC0415

    weights, config = export_checkpoint(args.checkpoint, args.out)
    print(f"wrote {weights} (weights) and {config} (config)")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from inv_flow.plots import plot_bits_per_dim  # noqa: PLC0415

    if not os.path.isfile(args.metrics):
        raise ConfigError(f"metrics file not found: {args.metrics} (a run's metrics.jsonl)")
    try:
        path = plot_bits_per_dim(args.metrics, args.out)
    except ValueError as err:  # not JSON lines, not UTF-8, or no per-epoch records
        raise ConfigError(f"cannot plot {args.metrics}: {err}") from None
    print(f"wrote {path}")
    return 0


def _presets(_: argparse.Namespace) -> int:
    from inv_flow.config import load_presets  # noqa: PLC0415

    for name, values in load_presets().items():
        print(f"{name}: {values}")
    return 0


#: Exit statuses of ``inv-flow`` (docs/TRAINING.md, "Exit codes and errors").
EXIT_OK, EXIT_DIVERGED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130

#: Modules of the ``flow`` extra (``pip install 'inv_conv[flow]'``), by import name.
FLOW_EXTRA_MODULES = ("torch", "tqdm", "matplotlib", "PIL")


def _describe(err: BaseException) -> str:
    """The one-line message of an expected failure."""
    from inv_flow.writes import WriteError  # noqa: PLC0415

    if isinstance(err, ImportError) and (err.name or "").split(".")[0] in FLOW_EXTRA_MODULES:
        return f"{err}; install the training extra: pip install 'inv_conv[flow]'"
    if isinstance(err, WriteError):
        return f"{err}; free some space or choose another path; files written before are unchanged"
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.strerror or err}: {err.filename}"
    return str(err)


def _torch_missing() -> ImportError | None:
    try:
        import torch  # noqa: F401, PLC0415
    except ImportError as err:
        return err
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``inv-flow``; returns the exit status: 0 ok, 1 diverged, 2 an error
    reported in one line (usage, config, data, checkpoint, files), 130 interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from inv_flow import compare  # noqa: PLC0415

    handlers = {"train": _train, "eval": _eval, "sample": _sample, "export": _export,
                "plot": _plot, "compare": compare.run,
                "options": lambda _: print(describe_options()) or 0, "presets": _presets}
    if args.command in ("options", "presets"):
        try:
            return handlers[args.command](args)  # torch-free
        except BrokenPipeError:  # piped into `head`: not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    missing = _torch_missing()  # imported only now: `--help`, options and presets need no torch
    if missing is not None:
        print(f"inv-flow {args.command}: error: PyTorch is not installed ({missing}); install the "
              "training extra: pip install 'inv_conv[flow]' (a CPU-only torch: see the README)",
              file=sys.stderr)
        return EXIT_ERROR
    from inv_flow.checkpoint import CheckpointError  # noqa: PLC0415
    from inv_flow.data import DatasetNotFoundError  # noqa: PLC0415

    # Under torchrun every process reports its own errors; name the process.
    world = os.environ.get("WORLD_SIZE", "1")
    where = f"[rank {os.environ.get('RANK', '?')} of {world}] " if world != "1" else ""
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt as err:
        print(f"inv-flow {args.command}: {where}{err or 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ConfigError, DatasetNotFoundError, CheckpointError, ImportError, OSError) as err:
        # ImportError: an optional dependency the run asked for (torchvision, wandb, inv_conv).
        # OSError: a file that cannot be read or written (full disk, missing folder).
        print(f"inv-flow {args.command}: error: {where}{_describe(err)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as err:  # noqa: BLE001 - diverged training: message, no traceback
        from inv_flow.experiment import TrainingDiverged  # noqa: PLC0415

        if isinstance(err, TrainingDiverged):
            print(f"inv-flow {args.command}: error: {where}{err}", file=sys.stderr)
            return EXIT_DIVERGED
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
