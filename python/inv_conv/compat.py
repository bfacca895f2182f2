"""Drop-in replacements for the original ``inv_conv_with_bp`` extension's four functions.

Same signatures and calling convention as the original scripts use: TL order, the result is
written into ``output`` in place and a one-element list ``[output]`` is returned; ``M`` is
accepted and ignored. The values are the correct ones of the contract (DESIGN.md), not the
original's: its ``dy`` computed J·g instead of Jᵀ·g and its ``dw`` was wrong in several ways.
"""

from __future__ import annotations

import torch

from . import ops

_ORDER = "TL"


def _check_output(output, like_shape, like) -> None:
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"output must be a torch.Tensor; got {type(output).__name__}")
    if tuple(output.shape) != tuple(like_shape):
        raise ValueError(f"output must have shape {tuple(like_shape)}; got {tuple(output.shape)}")
    if output.device != like.device:
        raise ValueError(f"output must be on {like.device}; got {output.device}")


def _write(output: torch.Tensor, value: torch.Tensor) -> list:
    with torch.no_grad():
        output.copy_(value)
    return [output]


def inverse(input: torch.Tensor, kernel: torch.Tensor, output: torch.Tensor) -> list:
    """``output = A⁻¹ input`` (TL order), in place; returns ``[output]``."""
    _check_output(output, input.shape, input)
    with torch.no_grad():
        return _write(output, ops.inv_conv2d(input, kernel, _ORDER))


def forward(input: torch.Tensor, kernel: torch.Tensor, output: torch.Tensor) -> list:
    """``output = A input`` (TL order), in place; returns ``[output]``."""
    _check_output(output, input.shape, input)
    with torch.no_grad():
        return _write(output, ops.conv2d(input, kernel, _ORDER))


def dy(grad: torch.Tensor, kernel: torch.Tensor, M=None, output: torch.Tensor = None) -> list:
    """``output = A⁻ᵀ grad``: the gradient of the inverse w.r.t. its input (TL), in place."""
    _check_output(output, grad.shape, grad)
    with torch.no_grad():
        return _write(output, ops.inv_conv2d_transpose(grad, kernel, _ORDER))


def dw(input: torch.Tensor, kernel: torch.Tensor, grad: torch.Tensor, M=None, output: torch.Tensor = None) -> list:
    """``output = ∂L/∂kernel`` of ``x = A⁻¹ input`` given ``grad = ∂L/∂x`` (TL), in place.

    Zero at the masked anchor entries; ``output`` has the kernel's shape.
    """
    _check_output(output, kernel.shape, kernel)
    with torch.no_grad():
        x = ops.inv_conv2d(input, kernel, _ORDER)
        u = ops.inv_conv2d_transpose(grad, kernel, _ORDER)
        return _write(output, -ops.conv2d_weight_grad(x, u, tuple(kernel.shape[2:]), _ORDER))
