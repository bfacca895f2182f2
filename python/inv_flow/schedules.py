"""Learning-rate schedules of ``inv_flow``, built from ``torch.optim.lr_scheduler`` and stepped
once per optimizer step.

``warmup_epochs`` of linear warm-up (``LinearLR``: step ``s`` gets ``lr * (s + 1) / W``) followed
by ``lr_schedule``: ``constant``, ``cosine`` (``CosineAnnealingLR`` from ``lr`` down to ``lr_min``
at the last step of ``epochs``) or ``exponential`` (``ExponentialLR`` with ``lr_gamma`` per
epoch, i.e. ``lr_gamma ** (1 / steps_per_epoch)`` per step); joined by ``SequentialLR``.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import torch
from torch.optim import lr_scheduler


def warmup_steps(config: Mapping[str, Any], steps_per_epoch: int) -> int:
    """Number of warm-up steps (0 = none)."""
    epochs = float(config["warmup_epochs"])
    return 0 if epochs <= 0 else max(1, round(epochs * steps_per_epoch))


def build_scheduler(optimizer: torch.optim.Optimizer, config: Mapping[str, Any],
                    steps_per_epoch: int) -> lr_scheduler.LRScheduler:
    """The per-step scheduler that ``config`` asks for (see the module docstring)."""
    warmup = warmup_steps(config, steps_per_epoch)
    total = max(1, int(config["epochs"]) * steps_per_epoch)
    kind = config.get("lr_schedule", "constant")
    if kind == "cosine":
        after = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup),
                                               eta_min=float(config.get("lr_min", 0.0)))
    elif kind == "exponential":
        gamma = float(config.get("lr_gamma", 1.0)) ** (1.0 / max(1, steps_per_epoch))
        after = lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
    elif kind == "constant":
        after = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    else:
        raise ValueError(f"lr_schedule must be constant, cosine or exponential; got {kind!r}")
    if warmup == 0:
        return after
    # SequentialLR steps `after` once at construction; every scheduler is built on the same lr.
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0,
                                 total_iters=max(1, warmup - 1))
    return lr_scheduler.SequentialLR(optimizer, [ramp, after], milestones=[warmup])


def restore_scheduler(scheduler: lr_scheduler.LRScheduler, state: Mapping[str, Any],
                      step: int) -> None:
    """Load a saved scheduler state; a state saved by another kind of scheduler (a checkpoint
    from before ``lr_schedule`` existed) is replayed instead: ``step`` scheduler steps."""
    try:
        scheduler.load_state_dict(dict(state))
        return
    except (KeyError, TypeError, ValueError, AttributeError):
        pass
    with warnings.catch_warnings():  # replaying: no optimizer steps to interleave
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        for _ in range(step):
            scheduler.step()
