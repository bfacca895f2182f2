"""Flow layers of ``inv_flow``: each maps data -> latent with an exact per-sample
log-determinant (``forward``) and has an exact inverse (``reverse``)."""

from .actnorm import ActNorm, initialize_actnorm
from .activations import (ACTIVATIONS, InvertibleSELU, LearnableLeakyReLU, SmoothLeakyReLU,
                          SplineActivation, build_activation)
from .base import FlowLayer
from .conv1x1 import InvertibleConv1x1
from .coupling import AffineCoupling
from .dequantize import Dequantization
from .finc import FInCFlowUnit
from .invconv import InvConv, InvFlowUnit
from .linear import LULinear, LUMatrix
from .normalize import LogitTransform, Normalization
from .snf import SelfNormConv2d
from .split import SplitPrior
from .squeeze import Flatten, Squeeze, UnSqueeze

__all__ = [
    "ACTIVATIONS", "ActNorm", "AffineCoupling", "Dequantization", "FInCFlowUnit", "Flatten",
    "FlowLayer", "InvConv", "InvFlowUnit", "InvertibleConv1x1", "InvertibleSELU", "LULinear",
    "LUMatrix", "LearnableLeakyReLU", "LogitTransform", "Normalization", "SelfNormConv2d",
    "SmoothLeakyReLU", "SplineActivation", "SplitPrior", "Squeeze", "UnSqueeze",
    "build_activation", "initialize_actnorm",
]
