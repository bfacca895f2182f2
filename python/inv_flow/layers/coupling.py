"""Glow-style affine coupling layer."""

from __future__ import annotations

import os
import warnings
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .base import FlowLayer, sum_except_batch

# Glow's scale is sigmoid(h + 2); we divide by sigmoid(2) so that h = 0 (the zero-initialised
# output) is exactly the identity, while keeping Glow's bound on the scale (< 1/sigmoid(2)).
_SCALE_OFFSET = 2.0
_LOG_SIGMOID_OFFSET = F.logsigmoid(torch.tensor(_SCALE_OFFSET, dtype=torch.float64)).item()

# On CUDA the CNN runs in channels-last memory format: cuDNN's tensor-core convolutions work
# in it, so NCHW activations (512 channels wide) would be transposed around every conv, while
# converting the thin input and output costs little. Measured on an H200 (B = 100, hidden
# 512): the CNN at 6 × 32² 1.30 -> 1.14 ms, at 12 × 16² 0.46 -> 0.35 ms.
CHANNELS_LAST_ON_CUDA = True


# Set when cuDNN refused the fused op (no engine for a configuration): the plain net from then on.
_fused_cnn_refused = False


def _fused_conv_relu_applies(x: torch.Tensor) -> bool:
    """Whether the CNN's conv + bias + ReLU pairs may each run as one cuDNN call
    (``torch.cudnn_convolution_relu``): CUDA, no gradient wanted, nothing traced, and nothing
    asking for deterministic or cuDNN-free convolutions (that op picks its engine without
    honouring either). Without it every pair is three kernels (conv, bias add, ReLU) over the
    512-channel activations: at imagenet64 the adds and ReLUs were ~45 % of sampling time.
    ``INV_FLOW_FUSED_CNN=0`` turns it off (A/B runs)."""
    return (not _fused_cnn_refused and x.is_cuda and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling() and x.dtype in (torch.float32, torch.float16, torch.bfloat16)
            and torch.backends.cudnn.enabled and not torch.backends.cudnn.deterministic
            and not torch.are_deterministic_algorithms_enabled()
            and os.environ.get("INV_FLOW_FUSED_CNN") != "0")


def _conv_relu(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``relu(conv(x))`` as one cuDNN call (no autograd: callers check
    :func:`_fused_conv_relu_applies`)."""
    return torch.cudnn_convolution_relu(x, conv.weight, conv.bias, conv.stride, conv.padding,
                                        conv.dilation, conv.groups)


class AffineCoupling(FlowLayer):
    """Affine coupling (Dinh et al. 2017; Glow): split channels into ``(x_a, x_b)``; a CNN of
    ``x_a`` gives ``shift`` and raw scale ``h`` for ``x_b``::

        scale = sigmoid(h + 2) / sigmoid(2)
        y_a = x_a,   y_b = (x_b + shift) * scale
        logdet = Σ log scale

    The CNN is conv3x3 -> ReLU -> conv1x1 -> ReLU -> conv3x3, with the last conv
    zero-initialised so the layer starts as the identity.
    """

    def __init__(self, num_channels: int, hidden_channels: int = 512, kernel_size: int = 3):
        super().__init__()
        if num_channels < 2:
            raise ValueError(f"AffineCoupling needs at least 2 channels to split, got {num_channels}")
        if kernel_size % 2 != 1:
            raise ValueError(f"AffineCoupling kernel_size must be odd, got {kernel_size}")
        self.num_channels = int(num_channels)
        self.num_conditioning = num_channels // 2
        self.num_transformed = num_channels - self.num_conditioning
        pad = kernel_size // 2
        self.net = nn.Sequential(
            nn.Conv2d(self.num_conditioning, hidden_channels, kernel_size, padding=pad),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, hidden_channels, 1),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, 2 * self.num_transformed, kernel_size, padding=pad),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _split(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        # One op whose backward is one concatenation (two slices' would be two zero-filled
        # copies and their sum).
        return x.split_with_sizes((self.num_conditioning, self.num_transformed), dim=1)

    def net_output(self, x_a: torch.Tensor) -> torch.Tensor:
        """The CNN's output for the conditioning half: its channels interleave ``shift`` and
        the raw scale (channels-last on CUDA)."""
        if x_a.is_cuda and CHANNELS_LAST_ON_CUDA:
            x_a = x_a.contiguous(memory_format=torch.channels_last)
        if self._net_is_default() and _fused_conv_relu_applies(x_a):
            conv_in, _, conv_hidden, _, conv_out = self.net
            try:
                return conv_out(_conv_relu(conv_hidden, _conv_relu(conv_in, x_a)))
            except torch.cuda.OutOfMemoryError:
                raise
            except RuntimeError as err:  # cuDNN without a fused engine for this configuration
                global _fused_cnn_refused
                _fused_cnn_refused = True
                warnings.warn(f"AffineCoupling: cuDNN's fused conv + ReLU failed ({str(err).splitlines()[0]}); "
                              "using the unfused network from now on", RuntimeWarning, stacklevel=2)
        return self.net(x_a)

    def _net_is_default(self) -> bool:
        """The net is still the one built here (conv, ReLU, conv, ReLU, conv with zero padding
        mode), so the fused pairs compute the same function."""
        net = self.net
        return (isinstance(net, nn.Sequential) and len(net) == 5
                and all(type(net[i]) is nn.Conv2d and net[i].padding_mode == "zeros"
                        and not isinstance(net[i].padding, str) for i in (0, 2, 4))
                and all(type(net[i]) is nn.ReLU for i in (1, 3)))

    def _shift_and_raw_scale(self, x_a: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``shift`` and raw scale ``h``: the net's even and odd output channels (views; one
        backward op, a stack)."""
        return self._unpack(self.net_output(x_a))

    @staticmethod
    def _unpack(h: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        shift, raw_scale = torch.unflatten(h.contiguous(), 1, (-1, 2)).unbind(2)
        return shift, raw_scale

    def reverse_terms(self, y: torch.Tensor) -> Tuple[torch.Tensor, float, float]:
        """What a fused kernel needs to apply :meth:`reverse` itself (``inv_conv``'s
        ``conv2d_chain_fused``): the net's output ``h`` for ``y``'s conditioning half, the
        scale offset and ``logsigmoid`` of it."""
        return self.net_output(self._split(y)[0]), _SCALE_OFFSET, _LOG_SIGMOID_OFFSET

    def forward(self, x, context=None):
        x_a, x_b = self._split(x)
        shift, raw_scale = self._shift_and_raw_scale(x_a)
        log_scale = F.logsigmoid(raw_scale + _SCALE_OFFSET) - _LOG_SIGMOID_OFFSET
        y_b = (x_b + shift) * torch.exp(log_scale)
        return torch.cat([x_a, y_b], dim=1), sum_except_batch(log_scale)

    def reverse(self, y, context=None, net_output=None):
        """The inverse; ``net_output``: the net's output for ``y`` when already computed
        (:meth:`reverse_terms`)."""
        y_a, y_b = self._split(y)
        if net_output is None:
            shift, raw_scale = self._shift_and_raw_scale(y_a)
        else:
            shift, raw_scale = self._unpack(net_output)
        # -log_scale, as c - a is exactly -(a - c) in floating point: one negation less
        neg_log_scale = torch.rsub(F.logsigmoid(raw_scale + _SCALE_OFFSET), _LOG_SIGMOID_OFFSET)
        x_b = y_b * torch.exp(neg_log_scale) - shift
        return torch.cat([y_a, x_b], dim=1)

    def extra_repr(self) -> str:
        return f"{self.num_channels}"
