"""The ``compile`` training option: the training loss under ``torch.compile``."""

from __future__ import annotations

import warnings
from typing import Callable

import torch


def compile_mode(option: str, device: torch.device) -> str:
    """The torch.compile mode of the ``compile`` option ("off" for none). ``auto`` is
    reduce-overhead on CUDA and off on the CPU, where compiling a whole flow takes minutes and
    a step is not launch-bound (docs/TRAINING.md has the measurements)."""
    if option == "auto":
        return "reduce-overhead" if device.type == "cuda" else "off"
    return option


class CompiledLoss:
    """``loss_fn(batch) -> (per-sample log-densities, loss)``, compiled at the first call (so
    after whatever ran before the first step: ActNorm's data-dependent init). A failure of the
    first compiled call is one warning, and from then on ``loss_fn`` runs eagerly."""

    def __init__(self, loss_fn: Callable, option: str, device: torch.device):
        self.loss_fn = loss_fn
        self.mode = compile_mode(option, device)
        self._compiled: Callable | None = None
        self._worked = False

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "off":
            return self.loss_fn(batch)
        if self._compiled is None:
            self._compiled = torch.compile(self.loss_fn, mode=self.mode)
        try:
            if self.mode == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()
            log_prob, loss = self._compiled(batch)
        except Exception as err:  # noqa: BLE001 - any compiler failure falls back to eager
            if self._worked:
                raise
            first_line = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            warnings.warn(f"compile={self.mode} failed ({type(err).__name__}: {first_line}); "
                          "training continues without torch.compile", RuntimeWarning, stacklevel=3)
            self.mode = "off"
            return self.loss_fn(batch)
        self._worked = True
        # CUDA-graph outputs are overwritten by the next replay: keep a copy of what we return.
        return (log_prob.clone() if self.mode == "reduce-overhead" else log_prob), loss
