"""Rules for rebuilding an experiment from a checkpoint: which saved configs are usable, which
``--set`` overrides may change a run that is resumed, and how they are applied.

A resumed run continues the saved one, so only settings that can change between two steps may
be overridden: the learning rate, clipping, the length of the run, evaluation, sampling,
logging, where files go and the hardware (:data:`RESUMABLE_KEYS`).  Anything else (the
architecture, the data, the seeds, ...) is refused with a one-line :class:`ConfigError`, before
anything is loaded or written.  The learning rate is applied to the optimizer's parameter groups
and to the scheduler's base rates after their states are loaded, keeping the schedule's current
factor (mid-warm-up stays mid-warm-up).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inv_flow.checkpoint import CheckpointError, load_checkpoint
from inv_flow.config import DEFAULTS, ConfigError, apply_aliases, coerce_value, resolve_config

#: Keys a resumed training run may change with ``--set``.
RESUMABLE_KEYS = frozenset({
    # optimisation that can change between two steps
    "lr", "grad_clip_norm", "epochs", "warmup_epochs", "dense_reference", "self_normalized_grad",
    # evaluation, sampling and logging
    "eval_epochs", "eval_train", "max_eval_ex", "sample_epochs", "n_samples", "temperature",
    "plot_recon", "log_interval", "verbose", "log_timing", "progress", "tensorboard", "wandb",
    "wandb_project", "wandb_entity", "notes", "name",
    # where things are, and the hardware
    "output_dir", "sample_dir", "checkpoint_path", "last_checkpoint_path", "resume", "data_root",
    "download", "num_workers", "device", "dist_backend", "dist_timeout",
    "ddp_find_unused_parameters",
})
#: Resumable in a single process only: under DDP the per-rank shards and random streams were
#: laid out for the saved global batch.
SINGLE_PROCESS_RESUMABLE_KEYS = frozenset({"batch_size"})

#: What a checkpoint must hold to continue training (``Experiment.state``).
TRAINING_STATE_KEYS = ("optimizer", "scheduler", "epoch", "step", "best_val_bpd", "rng")


def from_checkpoint(cls: Any, path: str | os.PathLike,
                    overrides: Mapping[str, Any] | None, *,
                    presets: Mapping[str, Mapping[str, Any]] | None, training_state: bool,
                    **experiment_kwargs: Any) -> Any:
    """``Experiment.from_checkpoint``: the checks of this module, in order, around building
    the experiment and loading the file's state into it."""
    payload = load_checkpoint(path)
    saved = saved_config(payload, path, presets)
    config = resolve_config(overrides=overrides, presets=presets, base=saved) if overrides else saved
    if training_state:
        check_resume_overrides(saved, config, payload, path)
    experiment = cls(config, **experiment_kwargs)
    try:
        check_model_fits(experiment.model, payload["model"], path)
        # Every rank loads the (CPU-mapped) checkpoint into its own model on its device.
        experiment.load_state(payload, training_state=training_state)
        if training_state:
            apply_learning_rate(experiment.optimizer, experiment.scheduler, config["lr"])
    except BaseException:
        experiment.close(failed=True)
        raise
    return experiment


def saved_config(payload: Mapping[str, Any], path: str | os.PathLike,
                 presets: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The checkpoint's config, checked like a user's: a dict whose values have the types and
    ranges of the options (keys added since it was written take their defaults).  Raises
    :class:`CheckpointError` naming ``path``."""
    config = payload.get("config")
    if not isinstance(config, Mapping):
        raise CheckpointError(
            f"{path}: its config is a {type(config).__name__}, not a dict; the file was not "
            "written by inv_flow or was edited. Use the run's config.json to start a new run")
    try:
        filled = {**DEFAULTS, **apply_aliases(config)}  # earlier option names, then new keys
        for key, default in DEFAULTS.items():
            filled[key] = coerce_value(key, filled[key], default)
        return resolve_config(base=filled, presets=presets)
    except ConfigError as err:
        raise CheckpointError(f"{path}: its saved config is not valid ({err}); the file was "
                              "edited or written by another version") from None


def _world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def check_resume_overrides(saved: Mapping[str, Any], config: Mapping[str, Any],
                           payload: Mapping[str, Any], path: str | os.PathLike) -> None:
    """ConfigError unless ``config`` (saved + overrides) only changes resumable keys;
    CheckpointError if the file holds no training state."""
    missing = [key for key in TRAINING_STATE_KEYS if key not in payload]
    if missing:
        raise CheckpointError(
            f"{path} holds model weights but no training state ({', '.join(missing)} missing), "
            "so training cannot resume from it; `inv-flow eval` and `inv-flow sample` can use it, "
            "or resume from the run's last_checkpoint.tar")
    allowed = RESUMABLE_KEYS | (SINGLE_PROCESS_RESUMABLE_KEYS if _world_size() == 1 else set())
    for key in sorted(set(config) | set(saved)):
        if key in allowed or config.get(key) == saved.get(key):
            continue
        why = ("under torchrun (the ranks' data shards and random streams were laid out for it)"
               if key in SINGLE_PROCESS_RESUMABLE_KEYS else "(it is part of the trained run)")
        raise ConfigError(
            f"{key}={config.get(key)!r} cannot change when resuming {path}, which was trained with "
            f"{key}={saved.get(key)!r} {why}; drop that --set, or start a new run")


def check_epochs_left(completed: int, epochs: int, path: str | os.PathLike) -> None:
    """ConfigError when a resumed run has nothing left to train."""
    if epochs <= completed:
        raise ConfigError(
            f"{path} has already completed {completed} epoch(s) and epochs={epochs}; resume with "
            f"--set epochs=N, N > {completed}, to train longer")


def apply_learning_rate(optimizer: torch.optim.Optimizer, scheduler: Any, lr: float) -> None:
    """Make ``lr`` the base learning rate of a loaded optimizer and scheduler, keeping the
    schedule's current factor (the loaded states carry the saved run's rate)."""
    base_lrs = list(getattr(scheduler, "base_lrs", [group.get("initial_lr", group["lr"])
                                                    for group in optimizer.param_groups]))
    if all(base == lr for base in base_lrs):
        return  # unchanged: leave the loaded rates bit for bit
    for index, group in enumerate(optimizer.param_groups):
        old_base = base_lrs[index]
        factor = group["lr"] / old_base if old_base else 1.0
        group["lr"] = lr * factor
        group["initial_lr"] = lr
        base_lrs[index] = lr
    # A warm-up joined to the schedule (SequentialLR) keeps the base rates in its parts.
    for part in [scheduler, *getattr(scheduler, "_schedulers", [])]:
        if hasattr(part, "base_lrs"):
            part.base_lrs = list(base_lrs)
    if hasattr(scheduler, "_last_lr"):
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def check_model_fits(model: nn.Module, state: Any, path: str | os.PathLike) -> None:
    """CheckpointError in one line unless ``state`` has exactly the model's parameter names and
    shapes (another architecture, an edited config, or code that changed since)."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: its model entry is a {type(state).__name__}, not a state dict")
    want = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    have = {name: tuple(getattr(value, "shape", ())) for name, value in state.items()}
    missing = [name for name in want if name not in have]
    unexpected = [name for name in have if name not in want]
    reshaped = [name for name in want if name in have and want[name] != have[name]]
    if not (missing or unexpected or reshaped):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
    if reshaped:
        name = reshaped[0]
        problems.append(f"{len(reshaped)} of another shape (e.g. {name!r}: {have[name]} in the file, "
                        f"{want[name]} in the model)")
    raise CheckpointError(
        f"{Path(path)}: its weights do not fit the model its config builds with this code "
        f"({'; '.join(problems)} entries): it was written by another architecture or version, "
        "or its config was edited; use the code and config that wrote it, or train a new run")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says where the last checkpoint is and how to go on."""


def interrupted_message(experiment: Any) -> str:
    """One line for an interrupted training run: the last checkpoint and the command that
    continues from it (checkpoints are atomic, so the file holds the last completed epoch)."""
    where = f"training interrupted in epoch {experiment.epoch + 1} (step {experiment.step})"
    path = Path(experiment.last_checkpoint_path)
    if not path.is_file():
        return f"{where}, before the first checkpoint: nothing was saved; start it again"
    command = f"inv-flow train --resume {shlex.quote(str(path.resolve()))}"
    if getattr(experiment, "distributed", False):
        command = (f"torchrun --nproc_per_node={experiment.world_size} -m inv_flow train "
                   f"--resume {shlex.quote(str(path.resolve()))}")
    return f"{where}; the last checkpoint is {path.resolve()}; continue with: {command}"
