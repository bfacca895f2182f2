"""Drop-in replacements for the original ``inv_conv_with_bp`` extension's four functions.

Same signatures and calling convention as the original scripts use: TL order, the result is
written into ``output`` in place and a one-element list ``[output]`` is returned; ``M`` is
accepted and ignored. The values are the correct ones of the contract (README, "The contract
in brief"), not the original's: its ``dy`` computed J·g instead of Jᵀ·g and its ``dw`` was
wrong in several ways.

Errors name these functions' own parameters (``input``, ``kernel``, ``grad``, ``output``); an
``output`` of another dtype, shape or device than the result is refused (never cast into) and
left untouched. The arguments are checked by the ops first, so ``output`` is judged against a
valid input.
"""

from __future__ import annotations

import contextlib
import re

import torch

from . import ops

_ORDER = "TL"


def _check_tensor(name: str, value: object) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")


@contextlib.contextmanager
def _named(**names: str):
    """Re-raise the ops' argument errors with this function's parameter names
    (``_named(y="input", weight="kernel")`` turns "y has 3 channels but weight expects 2" into
    "input has 3 channels but kernel expects 2")."""
    try:
        yield
    except (TypeError, ValueError) as err:
        pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
        raise type(err)(pattern.sub(lambda m: names[m.group(1)], str(err))) from None


def _check_output(output, shape, like: torch.Tensor, like_name: str) -> None:
    _check_tensor("output", output)
    if output.dtype != like.dtype:
        raise TypeError(f"output must have dtype {like.dtype} like the {like_name}; got {output.dtype}")
    if tuple(output.shape) != tuple(shape):
        raise ValueError(f"output must have shape {tuple(shape)}; got {tuple(output.shape)}")
    if output.device != like.device:
        raise ValueError(f"output must be on {like.device} like the {like_name}; got {output.device}")


def _write(output: torch.Tensor, value: torch.Tensor) -> list:
    with torch.no_grad():
        output.copy_(value)
    return [output]


def _image_into(op, name: str, value: torch.Tensor, kernel: torch.Tensor, output: torch.Tensor,
                **internal: str) -> list:
    """``op(value, kernel)`` (TL) written into ``output``; errors use this module's names
    (``internal`` maps the op's name for ``value`` to ``name``)."""
    _check_tensor(name, value)
    _check_tensor("kernel", kernel)
    with torch.no_grad(), _named(weight="kernel", **internal):
        result = op(value, kernel, _ORDER)
    _check_output(output, value.shape, value, name)
    return _write(output, result)


def inverse(input: torch.Tensor, kernel: torch.Tensor, output: torch.Tensor) -> list:
    """``output = A⁻¹ input`` (TL order), in place; returns ``[output]``."""
    return _image_into(ops.inv_conv2d, "input", input, kernel, output, y="input")


def forward(input: torch.Tensor, kernel: torch.Tensor, output: torch.Tensor) -> list:
    """``output = A input`` (TL order), in place; returns ``[output]``."""
    return _image_into(ops.conv2d, "input", input, kernel, output, x="input")


def dy(grad: torch.Tensor, kernel: torch.Tensor, M=None, output: torch.Tensor = None) -> list:
    """``output = A⁻ᵀ grad``: the gradient of the inverse w.r.t. its input (TL), in place."""
    return _image_into(ops.inv_conv2d_transpose, "grad", grad, kernel, output)


def dw(input: torch.Tensor, kernel: torch.Tensor, grad: torch.Tensor, M=None, output: torch.Tensor = None) -> list:
    """``output = ∂L/∂kernel`` of ``x = A⁻¹ input`` given ``grad = ∂L/∂x`` (TL), in place.

    Zero at the masked anchor entries; ``output`` has the kernel's shape.
    """
    for name, value in (("input", input), ("kernel", kernel), ("grad", grad)):
        _check_tensor(name, value)
    if grad.shape != input.shape:
        raise ValueError(f"grad must have the shape of input {tuple(input.shape)}; got {tuple(grad.shape)}")
    with torch.no_grad():
        with _named(y="input", weight="kernel"):
            x = ops.inv_conv2d(input, kernel, _ORDER)
        with _named(weight="kernel"):
            u = ops.inv_conv2d_transpose(grad, kernel, _ORDER)
        _check_output(output, kernel.shape, kernel, "kernel")
        return _write(output, -ops.conv2d_weight_grad(x, u, tuple(kernel.shape[2:]), _ORDER))
