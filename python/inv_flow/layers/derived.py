"""Values that depend only on parameters (ActNorm's ``exp(-log_scale)``, ...), kept from one call
to the next while no gradient is recorded (sampling, evaluation), so that a model with fixed
weights does not launch the same small kernels in every call.

A stored value is keyed on each parameter's storage address and ``_version`` (bumped by every
in-place change: optimizer steps, ``load_state_dict``, initialisation) and on the number of
optimizer steps taken in this process (fused optimizers update parameters without bumping
``_version``); it holds each parameter's storage, so that it cannot be freed and reused at the
same address. In-place writes through ``param.data`` bypass all of these: after
one, call :func:`clear_derived_caches` (or use the layers with gradients enabled, which never
read stored values).
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, TypeVar

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

T = TypeVar("T")

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


def _current_key(params: Sequence[torch.Tensor]) -> Optional[List[int]]:
    """The parameters' storage addresses and versions and the optimizer step count, or None
    when no stored value may stand in for a computation on them now: under autograd,
    torch.compile, CUDA graph capture, torch.func, dispatch or function modes, or on other
    than plain CPU/CUDA tensors."""
    if torch.is_grad_enabled() or torch.compiler.is_compiling() or _dispatch_depth() or \
            _function_mode_on() or _functorch_level() is not None:
        return None
    key = [_optimizer_steps]
    for p in params:
        if type(p) not in _PLAIN_TENSORS:
            return None
        # a CUDA graph would bake in the stored value, or own the memory of a new one
        if not (p.is_cpu or (p.is_cuda and not torch.cuda.is_current_stream_capturing())):
            return None
        key += (p.data_ptr(), p._version)
    return key


def _stored(module: nn.Module, slot: object):
    cache = module.__dict__.get("_derived_cache")
    return cache.get(slot) if cache is not None else None


def stale_key(module: nn.Module, slot: object, params: Sequence[torch.Tensor]
              ) -> Optional[List[int]]:
    """The key under which a fresh value of ``slot`` is to be stored (:func:`store_derived`),
    or None when the stored one is current or none may be reused now."""
    key = _current_key(params)
    if key is None:
        return None
    entry = _stored(module, slot)
    return None if entry is not None and entry[0] == key else key


def store_derived(module: nn.Module, slot: object, key: List[int],
                  params: Sequence[torch.Tensor], value) -> None:
    """Keep ``value`` for ``slot`` under ``key`` (from :func:`stale_key`)."""
    cache = module.__dict__.get("_derived_cache")
    if cache is None:
        cache = module.__dict__["_derived_cache"] = _DerivedCache()
    cache[slot] = (key, [p.untyped_storage() for p in params], value)  # (pins the storage)


def derived(module: nn.Module, slot: object, params: Sequence[torch.Tensor],
            compute: Callable[..., T]) -> T:
    """``compute(*params)``, or the value it gave in an earlier call with the same ``slot``
    while the parameters are unchanged and no gradient is recorded."""
    key = _current_key(params)
    if key is None:
        return compute(*params)
    entry = _stored(module, slot)
    if entry is not None and entry[0] == key:
        return entry[2]
    value = compute(*params)
    store_derived(module, slot, key, params, value)
    return value


def clear_derived_caches(model: nn.Module) -> None:
    """Forget the values stored for ``model`` and its submodules."""
    for module in model.modules():
        module.__dict__.pop("_derived_cache", None)
