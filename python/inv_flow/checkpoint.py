"""Atomic checkpoint files and random-number-generator state capture.

A checkpoint is written to a temporary file in the destination's directory, flushed and
fsync'ed, then moved over the destination with :func:`os.replace` (atomic on POSIX and
Windows).  An interruption or a failing write therefore leaves either the old complete file or
the new complete file, never a truncated one.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inv_flow.writes import WriteError, write_atomically  # noqa: F401 - WriteError is part of this API

#: Bumped when the checkpoint layout changes incompatibly.
CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not hold what inv_flow wrote."""


def atomic_save(payload: Any, path: str | os.PathLike) -> Path:
    """``torch.save(payload)`` to ``path`` atomically; returns the final path.

    On any failure the temporary file is removed and the previous file at ``path`` (if any) is
    left untouched; a failed write (full disk, unwritable folder) is a :class:`WriteError`.
    """
    destination = Path(path)
    # Serialised in memory first: torch.save reports a failing file write as an obscure
    # RuntimeError, a plain write gives the OSError (errno) saying what went wrong.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomically(buffer.getbuffer(), destination)
    return destination


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`atomic_save`; raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        # weights_only=False: the payload holds RNG states and the config (plain Python objects)
        # written by this library; only load checkpoints you trust, as with any pickle.
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise CheckpointError(f"{path} is not an inv_flow checkpoint (no model/config entries)")
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {payload.get('format')!r}; this inv_flow reads "
            f"format {CHECKPOINT_FORMAT}"
        )
    return payload


def capture_rng_state() -> dict[str, Any]:
    """States of every global generator a training step may draw from."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and Python's ``random``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
