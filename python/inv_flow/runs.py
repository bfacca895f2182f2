"""Run folders: every training run owns one folder (``output_dir``, by default ``runs/<name>``)
holding its config, metrics, best and last checkpoints, samples and TensorBoard events.

A new run never writes into a folder that already holds files: :func:`claim_run_dir` takes the
configured folder when it is new or empty, else the first free ``<folder>-2``, ``<folder>-3``
...  The claim is a marker file created with ``O_EXCL`` in the folder, so two runs started
together get two folders.  Path options that pointed inside the configured folder
move with it; a path given outside it (e.g. the original ``checkpoint_path``) is kept, but a
new run refuses to start rather than overwrite a file already there.  Resuming (``--resume``)
continues in the run's own folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from inv_flow.options import ConfigError
from inv_flow.writes import WriteError, writing

#: The path options of a run (besides ``output_dir`` itself).
PATH_KEYS = ("checkpoint_path", "last_checkpoint_path", "sample_dir")
#: Created (exclusively) in a folder when a run claims it.
MARKER = ".inv_flow_run"
_MAX_RUNS = 100_000


def _absolute(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and next(path.iterdir(), None) is None


def _take(path: Path) -> bool:
    """Claim ``path`` for this run: True if it was new or empty and this process created its
    marker file first (``O_EXCL``: of two runs starting together, exactly one wins)."""
    path.mkdir(parents=True, exist_ok=True)
    if not _is_empty_dir(path):
        return False
    try:
        fd = os.open(path / MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(f"pid {os.getpid()}\n")
    return True


def _outside_conflicts(config: Mapping[str, Any], base: Path) -> list[str]:
    """Path options outside the run folder that a new run would overwrite."""
    conflicts = []
    for key in PATH_KEYS:
        path = _absolute(config[key])
        if path == base or base in path.parents:
            continue
        if key == "sample_dir":
            if path.exists() and not _is_empty_dir(path):
                conflicts.append(f"{key}={config[key]} (a folder with files)")
        elif path.exists():
            conflicts.append(f"{key}={config[key]}")
    return conflicts


def claim_run_dir(config: Mapping[str, Any], experiment: Any = None) -> dict[str, Any]:
    """The config of a new run with ``output_dir`` set to a folder created for it, and the path
    options inside the configured folder moved along.  Raises :class:`ConfigError` (before
    creating anything) when a path outside the folder would overwrite an earlier file.

    With an ``experiment`` (an :class:`inv_flow.experiment.Experiment`), only its main process
    chooses; in a distributed run the choice (or the error) is shared with every rank."""
    if experiment is None:
        return _claim(config)
    claimed: Any = dict(config)
    if experiment.is_main:
        try:
            claimed = _claim(config)
        except (ConfigError, WriteError) as err:
            claimed = err
    if experiment.distributed:
        from inv_flow import distributed  # noqa: PLC0415 - needs torch

        # Every rank learns the folder, or the error (as text: a WriteError does not pickle).
        shared = ConfigError(str(claimed)) if isinstance(claimed, WriteError) else claimed
        shared = distributed.all_gather_object(shared, experiment.dist)[0]
        claimed = claimed if experiment.is_main else shared
    if isinstance(claimed, (ConfigError, WriteError)):
        raise claimed
    return claimed


def _claim(config: Mapping[str, Any]) -> dict[str, Any]:
    base = _absolute(config["output_dir"])
    conflicts = _outside_conflicts(config, base)
    if conflicts:
        raise ConfigError(
            "a new run would overwrite files of an earlier run: " + ", ".join(conflicts)
            + ". Choose another path (or leave it at its default, inside the run folder), or "
            "continue that run with --resume.")
    with writing(base):  # an unwritable place is one line naming it, not a traceback
        chosen = claim_folder(base)
    claimed = dict(config)
    # Absolute: a run resumed from another directory must keep writing into its own folder.
    claimed["output_dir"] = str(chosen)
    for key in PATH_KEYS:
        path = _absolute(config[key])
        if path == base or base in path.parents:
            claimed[key] = str(chosen / path.relative_to(base))
    return claimed


def claim_folder(path: str | os.PathLike) -> Path:
    """Create and claim ``path``, or its first free sibling ``<path>-2``, ``<path>-3`` ... when
    it holds files; returns the folder claimed (for any command that writes a run's results)."""
    base = _absolute(path)
    for index in range(1, _MAX_RUNS):
        chosen = base if index == 1 else base.with_name(f"{base.name}-{index}")
        if _take(chosen):
            return chosen
    raise ConfigError(f"no free run folder next to {base}; use another name or output_dir")


def _relative_if_below_cwd(path: Path) -> Path:
    """``runs/x`` rather than ``/home/me/project/runs/x`` in configs and messages."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def describe_run(config: Mapping[str, Any]) -> str:
    """One line with a run's folder and files (printed when a run starts and ends)."""
    def shown(key: str) -> Path:
        return _relative_if_below_cwd(_absolute(config[key]))

    return (f"run folder {shown('output_dir')}: best checkpoint {shown('checkpoint_path')}, "
            f"last state {shown('last_checkpoint_path')}, metrics "
            f"{shown('output_dir') / 'metrics.jsonl'}, samples {shown('sample_dir')}")
