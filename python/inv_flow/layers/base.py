"""Base class shared by every flow layer of ``inv_flow``."""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple, TypeVar

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

T = TypeVar("T")


class FlowLayer(nn.Module):
    """An invertible map with a tractable log-Jacobian-determinant.

    Subclasses implement the *density* direction ``forward`` (data -> latent) and its exact
    inverse ``reverse`` (latent -> data, the sampling direction).

    * ``forward(x, context=None) -> (y, logdet)`` where ``logdet`` has shape ``[B]`` and holds
      ``log|det dy/dx|`` per sample, in nats.
    * ``reverse(y, context=None) -> x``.

    ``context`` is accepted everywhere for interface compatibility with conditional flows; the
    layers in this package ignore it.
    """

    #: True for fixed pre-processing maps (dequantization, scaling, logit) that have no
    #: parameters worth logging; lets training code separate them from learned layers.
    is_preprocessing: bool = False

    #: True when ``forward``'s logdet is zero for every input (volume-preserving maps), so that
    #: ``FlowSequential`` need not add it. Only read from the class that defines ``forward``
    #: (:func:`logdet_is_zero`): a subclass that overrides ``forward`` is summed as usual.
    zero_logdet: bool = False

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def reverse(self, y: torch.Tensor, context: Optional[torch.Tensor] = None
                ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def zero_logdet(x: torch.Tensor) -> torch.Tensor:
    """A ``[B]`` tensor of zeros on x's device and dtype (for volume-preserving layers)."""
    return x.new_zeros(x.shape[0])


def channel_view(param: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-channel vector ``(C,)`` so it broadcasts against ``x`` of shape
    ``(B, C, *spatial)`` (any number of spatial dims, including none)."""
    return param.view(1, -1, *([1] * (x.dim() - 2)))


def sum_except_batch(x: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension except the first (batch) one -> shape ``[B]``."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


_ZERO_LOGDET: Dict[type, bool] = {}


def logdet_is_zero(layer: nn.Module) -> bool:
    """Whether ``layer``'s forward returns a zero logdet: its class attribute ``zero_logdet``,
    taken from the class in the MRO that defines ``forward`` (memoised per type)."""
    kind = type(layer)
    known = _ZERO_LOGDET.get(kind)
    if known is None:
        owner = next((k for k in kind.__mro__ if "forward" in k.__dict__), object)
        known = _ZERO_LOGDET[kind] = bool(owner.__dict__.get("zero_logdet", False))
    return known


# --------------------------------------------------------------------------------------------
# Values that depend only on parameters (exp(-log_scale), ...), reused between calls while no
# gradient is recorded (sampling, evaluation). An entry is keyed on each parameter's storage
# address and ``_version`` (bumped by every in-place change: optimizer steps, load_state_dict,
# initialisation) and on the count of optimizer steps taken in this process (fused optimizers
# update parameters without bumping ``_version``); it holds an alias of each parameter so that
# its storage cannot be freed and reused at the same address. In-place writes through
# ``param.data`` bypass all of these: after them, use the layers with gradients enabled or
# call :func:`clear_derived_caches`.
# --------------------------------------------------------------------------------------------

_optimizer_steps = 0


def _count_optimizer_step(optimizer, args, kwargs) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


register_optimizer_step_post_hook(_count_optimizer_step)

_PLAIN_TENSORS = (torch.Tensor, nn.Parameter)
_dispatch_depth = getattr(torch._C, "_len_torch_dispatch_stack", lambda: 0)
_function_mode_on = getattr(torch._C, "_is_torch_function_mode_enabled", lambda: False)
_functorch_level = torch._C._functorch.peek_interpreter_stack


class _DerivedCache(dict):
    """Per-module store of derived values; copied and pickled empty (never in a state dict)."""

    def __reduce__(self):
        return (_DerivedCache, ())


def _reusable(params: Sequence[torch.Tensor]) -> bool:
    """Whether a stored value may stand in for a computation on ``params``: no gradient is
    recorded and nothing traces, captures or transforms the call (torch.compile, CUDA graph
    capture, torch.func, dispatch or function modes), on plain CPU/CUDA tensors."""
    if torch.is_grad_enabled() or torch.compiler.is_compiling() or _dispatch_depth() or \
            _function_mode_on() or _functorch_level() is not None:
        return False
    for p in params:
        if type(p) not in _PLAIN_TENSORS:
            return False
        # a CUDA graph would bake in the stored value, or own the memory of a new one
        if not (p.is_cpu or (p.is_cuda and not torch.cuda.is_current_stream_capturing())):
            return False
    return True


def derived(module: nn.Module, slot: object, params: Sequence[torch.Tensor],
            compute: Callable[[], T]) -> T:
    """``compute()``, a function of ``params`` only, reused from the previous call with the same
    ``slot`` while the parameters are unchanged and no gradient is recorded (see above)."""
    if not _reusable(params):
        return compute()
    cache = module.__dict__.get("_derived_cache")
    if cache is None:
        cache = module.__dict__["_derived_cache"] = _DerivedCache()
    key = [_optimizer_steps]
    for p in params:
        key += (p.data_ptr(), p._version)
    entry = cache.get(slot)
    if entry is not None and entry[0] == key:
        return entry[2]
    value = compute()
    cache[slot] = (key, [p.detach() for p in params], value)
    return value


def clear_derived_caches(model: nn.Module) -> None:
    """Forget the values :func:`derived` stored for ``model`` and its submodules."""
    for module in model.modules():
        module.__dict__.pop("_derived_cache", None)
