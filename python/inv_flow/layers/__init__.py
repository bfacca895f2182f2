"""Flow layers of ``inv_flow``: each maps data -> latent with an exact per-sample
log-determinant (``forward``) and has an exact inverse (``reverse``)."""

import warnings

from .actnorm import ActNorm, initialize_actnorm
from .activations import (ACTIVATIONS, InvertibleSELU, LearnableLeakyReLU, SmoothLeakyReLU,
                          SplineActivation, build_activation)
from .base import FlowLayer
from .conv1x1 import InvertibleConv1x1
from .coupling import AffineCoupling
from .dequantize import Dequantization
from .finc import FInCFlowUnit
from .invconv import InvConvLayer, InvFlowUnitLayer
from .linear import LULinear, LUMatrix
from .normalize import LogitTransform, Normalization
from .snf import SelfNormConv2d
from .split import SplitPrior
from .squeeze import Flatten, Squeeze, UnSqueeze

__all__ = [
    "ACTIVATIONS", "ActNorm", "AffineCoupling", "Dequantization", "FInCFlowUnit", "Flatten",
    "FlowLayer", "InvConvLayer", "InvFlowUnitLayer", "InvertibleConv1x1", "InvertibleSELU",
    "LULinear", "LUMatrix", "LearnableLeakyReLU", "LogitTransform", "Normalization",
    "SelfNormConv2d", "SmoothLeakyReLU", "SplineActivation", "SplitPrior", "Squeeze", "UnSqueeze",
    "build_activation", "initialize_actnorm",
]

#: Earlier names of the layers above (``InvFlowUnit`` was also the name of
#: :class:`inv_conv.InvFlowUnit`, a different class): importable, with a DeprecationWarning.
_RENAMED = {"InvConv": "InvConvLayer", "InvFlowUnit": "InvFlowUnitLayer"}


def __getattr__(name: str):
    if name in _RENAMED:
        warnings.warn(f"inv_flow.layers.{name} is now inv_flow.layers.{_RENAMED[name]}",
                      DeprecationWarning, stacklevel=2)
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
