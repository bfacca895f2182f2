"""inv_flow: normalizing flows with exact invertible convolutions (Inverse-Flow,
Nagar & Varma, AISTATS 2025) on top of ``inv_conv``.

Importing this package does not import ``inv_conv``; layers that need it import it when
constructed.
"""

from .distributions import DiagonalGaussian
from .flows import FlowSequential, bits_per_dim
from .layers import initialize_actnorm

__all__ = ["DiagonalGaussian", "FlowSequential", "bits_per_dim", "initialize_actnorm"]

from .models import PRESETS, build_model, get_preset  # noqa: E402

__all__ += ["PRESETS", "build_model", "get_preset"]
