"""Model exports: the weights of a trained flow in safetensors, with the config as JSON.

``inv-flow export --checkpoint runs/x/best_checkpoint.tar --out model.safetensors`` writes

* ``model.safetensors``: every tensor of the model's ``state_dict`` (no optimizer, no RNG, no
  pickle: safe to load from anywhere), with the run's config (JSON) and the image shape in the
  file's metadata, so the one file is enough to rebuild the model;
* ``model.json``: the same config, for reading.

:func:`load_export` reads such a file back into a checkpoint-like dict, :func:`load_model`
into a ready model, and :func:`experiment_from_export` builds an :class:`~inv_flow.experiment.Experiment` on it for
``inv-flow eval`` / ``inv-flow sample`` (which accept an export wherever they take a checkpoint).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from inv_flow.checkpoint import CheckpointError, load_checkpoint
from inv_flow.config import DEFAULTS, apply_aliases, resolve_config
from inv_flow.logging_utils import _jsonable
from inv_flow.writes import write_atomically

#: Metadata keys in the safetensors header.
FORMAT_KEY, CONFIG_KEY, SHAPE_KEY = "inv_flow_export", "inv_flow_config", "image_shape"
EXPORT_FORMAT = "1"
SUFFIX = ".safetensors"


def is_export(path: str | os.PathLike) -> bool:
    return str(path).endswith(SUFFIX)


def _safetensors_torch():
    try:
        from safetensors import torch as st  # noqa: PLC0415 - optional until used
    except ImportError:
        raise ImportError("exports are safetensors files, and safetensors is not installed; "
                          "`pip install safetensors` (part of inv_conv[flow])") from None
    return st


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike) -> tuple[Path, Path]:
    """Write the model of ``checkpoint`` to ``out`` (``.safetensors``) and its config to the
    ``.json`` next to it; returns both paths.  Refuses to replace existing files."""
    out = Path(out)
    if not is_export(out):
        raise CheckpointError(f"--out must end in {SUFFIX}, got {out}")
    config_path = out.with_suffix(".json")
    for path in (out, config_path):
        if path.exists():
            raise CheckpointError(f"{path} exists; choose another --out (exports never replace "
                                  "files)")
    payload = load_checkpoint(checkpoint)
    state = {key: value.detach().cpu().contiguous().clone()
             for key, value in payload["model"].items()}
    config = _jsonable(apply_aliases(payload["config"]))  # today's option names
    shape = list(payload.get("image_shape") or config["image_shape"])
    metadata = {FORMAT_KEY: EXPORT_FORMAT, CONFIG_KEY: json.dumps(config, sort_keys=True),
                SHAPE_KEY: json.dumps(shape)}
    st = _safetensors_torch()
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(st.save(state, metadata=metadata), out)
    text = json.dumps({"config": config, "image_shape": shape}, indent=2, sort_keys=True) + "\n"
    write_atomically(text.encode("utf-8"), config_path)
    return out, config_path


def load_export(path: str | os.PathLike, device: str = "cpu") -> dict[str, Any]:
    """``{"model": state_dict, "config": dict, "image_shape": tuple}`` from an export;
    raises :class:`CheckpointError` for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"export not found: {path}")
    st = _safetensors_torch()
    try:
        from safetensors import safe_open  # noqa: PLC0415

        with safe_open(str(path), framework="pt", device=device) as handle:
            metadata = handle.metadata() or {}
        state = st.load_file(str(path), device=device)
    except Exception as err:  # noqa: BLE001 - any parse failure means a bad file
        raise CheckpointError(f"cannot read {path} as safetensors: {err}") from err
    if metadata.get(FORMAT_KEY) != EXPORT_FORMAT or CONFIG_KEY not in metadata:
        raise CheckpointError(f"{path} is not an inv_flow export (no {CONFIG_KEY} metadata); "
                              "write one with `inv-flow export`")
    config = json.loads(metadata[CONFIG_KEY])
    for key, value in config.items():  # JSON has no tuples: shapes come back as lists
        if isinstance(value, list) and isinstance(DEFAULTS.get(key), tuple):
            config[key] = tuple(value)
    return {"model": state, "config": config,
            "image_shape": tuple(json.loads(metadata.get(SHAPE_KEY, "null")) or config["image_shape"])}


def load_model(path: str | os.PathLike, device: str = "cpu"):
    """The flow of an export, ready to use (eval mode): ``inv_flow.build_model`` from the
    exported config, with the exported weights."""
    from inv_flow.models import build_model  # noqa: PLC0415

    payload = load_export(path)
    model = build_model(payload["config"], payload["image_shape"])
    model.load_state_dict(payload["model"])
    return model.to(device).eval()


def experiment_from_export(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None,
                           *, load_data: bool = True, **kwargs: Any):
    """An :class:`~inv_flow.experiment.Experiment` with the exported weights loaded (for
    evaluation and sampling; no training state)."""
    from inv_flow.experiment import Experiment  # noqa: PLC0415

    payload = load_export(path)
    config = resolve_config(overrides=overrides or {}, base=payload["config"])
    experiment = Experiment(config, load_data=load_data, **kwargs)
    try:
        experiment.model.load_state_dict(payload["model"])
    except BaseException:
        experiment.close(failed=True)
        raise
    return experiment
