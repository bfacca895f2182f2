"""Turning a config into the pieces a run needs: its device and its model."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import nn

from inv_flow.config import ConfigError

#: ``(config, image_shape) -> model``, e.g. :func:`inv_flow.models.build_model`.
ModelBuilder = Callable[[dict, tuple], nn.Module]


def select_device(spec: str) -> torch.device:
    """``"auto"`` → ``cuda`` when available, else ``cpu``; anything else is passed to
    :class:`torch.device` (``"cpu"``, ``"cuda"``, ``"cuda:1"``)."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as err:
        raise ConfigError(f"bad device {spec!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={spec!r} but CUDA is not available; use device=cpu or auto")
    return device


def default_model_builder(config: dict, image_shape: tuple) -> nn.Module:
    """``inv_flow.models.build_model`` (imported lazily)."""
    from inv_flow.models import build_model  # noqa: PLC0415

    return build_model(config, image_shape)


def build_checked_model(config: Mapping[str, Any], image_shape: tuple[int, int, int],
                        builder: ModelBuilder | None = None) -> nn.Module:
    """Build the model, turning "cannot take this image shape" into a :class:`ConfigError`."""
    builder = builder or default_model_builder
    try:
        return builder(dict(config), tuple(image_shape))
    except ValueError as err:
        raise ConfigError(
            f"model {config.get('model')!r} cannot be built for images of shape "
            f"{tuple(image_shape)} (C, H, W): {err}"
        ) from err
