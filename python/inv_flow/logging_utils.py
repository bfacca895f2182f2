"""Run logging: printed metric lines, a JSONL metrics file, optional TensorBoard and wandb.

Only the main process writes (see :func:`is_main_process`); other ranks of a distributed run
get a silent logger (no files, no prints, no progress bars).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from inv_flow.writes import writing

METRICS_FILENAME = "metrics.jsonl"


def is_main_process() -> bool:
    """True unless torch.distributed is initialised and this is not rank 0."""
    try:
        import torch.distributed as dist  # noqa: PLC0415
    except ImportError:  # pragma: no cover - torch always ships it
        return True
    return not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)


def _jsonable(value: Any) -> Any:
    """Plain JSON types; NaN/Inf become strings so the file stays strict JSON."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """One readable line: ``epoch 3 | train_bpd 2.1345 | val_bpd 2.2001``."""
    parts = []
    for key, value in metrics.items():
        if isinstance(value, float):
            parts.append(f"{key} {value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{key} {value:.3e}")
        else:
            parts.append(f"{key} {value}")
    return " | ".join(parts)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records (JSON objects) of a metrics JSONL file; a truncated last line, or any line
    that is not an object, is ignored."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption
            if isinstance(record, dict):
                records.append(record)
    return records


class Timer:
    """Collects durations (seconds) and reports mean and standard deviation."""

    def __init__(self) -> None:
        self.durations: list[float] = []

    def add(self, seconds: float) -> None:
        self.durations.append(seconds)

    def summary(self, per: float = 1.0) -> tuple[float, float]:
        """(mean, std) of the durations, each divided by ``per`` (e.g. the batch size)."""
        if not self.durations:
            return float("nan"), float("nan")
        values = np.asarray(self.durations) / per
        return float(values.mean()), float(values.std())

    def reset(self) -> None:
        self.durations.clear()


class RunLogger:
    """Prints metrics, appends them to ``output_dir/metrics.jsonl`` and forwards them to
    TensorBoard (when installed and enabled) and wandb (only when ``wandb`` is set)."""

    def __init__(self, config: Mapping[str, Any], enabled: bool | None = None):
        self.enabled = is_main_process() if enabled is None else enabled
        self.output_dir = Path(config["output_dir"])
        self.metrics_path = self.output_dir / METRICS_FILENAME
        self.show_progress = bool(config.get("progress", True)) and self.enabled
        self._tensorboard = None
        self._wandb_run = None
        if not self.enabled:
            return
        config_path = self.output_dir / "config.json"
        with writing(config_path):
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with open(config_path, "w", encoding="utf-8") as handle:
                json.dump(_jsonable(dict(config)), handle, indent=2, sort_keys=True)
        if config.get("tensorboard", True):
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - optional

                self._tensorboard = SummaryWriter(log_dir=str(self.output_dir / "tensorboard"))
            except ImportError:
                self._tensorboard = None  # tensorboard not installed: JSONL only
        if config.get("wandb", False):
            try:
                import wandb  # noqa: PLC0415 - only when asked for
            except ImportError:
                raise ImportError("wandb=True but wandb is not installed; `pip install wandb` "
                                  "or leave wandb=false") from None
            self._wandb_run = wandb.init(
                project=config.get("wandb_project") or None,
                entity=config.get("wandb_entity") or None,
                name=config.get("name"),
                notes=config.get("notes") or None,
                config=_jsonable(dict(config)),
            )

    def progress(self, iterable: Iterable, **kwargs: Any):
        """A tqdm progress bar over ``iterable`` (the plain iterable when disabled — on every
        rank but 0 — or when tqdm is not installed)."""
        if not self.show_progress:
            return iterable
        try:
            from tqdm.auto import tqdm  # noqa: PLC0415
        except ImportError:
            return iterable
        return tqdm(iterable, dynamic_ncols=True, **kwargs)

    def message(self, text: str) -> None:
        """Print a line without breaking progress bars (plain print without tqdm)."""
        if not self.enabled:
            return
        try:
            from tqdm.auto import tqdm  # noqa: PLC0415
        except ImportError:
            print(text, file=sys.stdout, flush=True)
            return
        tqdm.write(text, file=sys.stdout)

    def log(self, record: Mapping[str, Any], step: int | None = None, echo: bool = True) -> None:
        """Record one metrics dict (``event``, ``epoch``, ``step`` and values)."""
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        with writing(self.metrics_path), open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(_jsonable(record)) + "\n")
            handle.flush()
        if echo:
            shown = {k: v for k, v in record.items() if k not in ("time", "event")}
            self.message(f"[{record.get('event', 'log')}] " + format_metrics(shown))
        numbers = {k: v for k, v in record.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and k not in ("time", "step", "epoch")}
        if step is None:
            step = record.get("step")
        if self._tensorboard is not None:
            prefix = record.get("event", "log")
            for key, value in numbers.items():
                self._tensorboard.add_scalar(f"{prefix}/{key}", value, global_step=step)
            self._tensorboard.flush()
        if self._wandb_run is not None:
            self._wandb_run.log({**numbers, "epoch": record.get("epoch")}, step=step)

    def log_image(self, tag: str, path: str | Path, step: int | None = None) -> None:
        """Send a saved PNG (e.g. a sample grid) to TensorBoard and wandb when they are on."""
        if self._tensorboard is not None:
            from PIL import Image  # noqa: PLC0415 - what wrote the PNG

            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            self._tensorboard.add_image(tag, pixels, global_step=step, dataformats="HWC")
            self._tensorboard.flush()
        if self._wandb_run is not None:
            import wandb  # noqa: PLC0415

            self._wandb_run.log({tag: wandb.Image(str(path))}, step=step)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None
