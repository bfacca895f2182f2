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
# autocast changes the dtype of some results (exp is computed in float32 on CUDA)
_autocast_on = getattr(torch._C, "_is_any_autocast_enabled", None) or \
    (lambda: torch.is_autocast_enabled("cuda") or torch.is_autocast_enabled("cpu"))


class _DerivedCache(dict):
    """Per-module store of derived values; copied and pickled empty (never in a state dict)."""

    def __reduce__(self):
        return (_DerivedCache, ())


def reuse_allowed() -> bool:
    """Whether stored values may stand in for computations now: no gradient is recorded, no
    autocast, and nothing traces or transforms the call (torch.compile, torch.func, dispatch
    or function modes)."""
    return not (torch.is_grad_enabled() or torch.compiler.is_compiling() or _autocast_on()
                or _dispatch_depth() or _function_mode_on() or _functorch_level() is not None)


def params_key(params: Sequence[torch.Tensor]) -> Optional[List[int]]:
    """The parameters' storage addresses and versions and the optimizer step count (given
    :func:`reuse_allowed`), or None for other than plain CPU/CUDA tensors or during CUDA graph
    capture (a graph would bake in a stored value, or own the memory of a new one)."""
    key = [_optimizer_steps]
    for p in params:
        if type(p) not in _PLAIN_TENSORS or \
                not (p.is_cpu or (p.is_cuda and not torch.cuda.is_current_stream_capturing())):
            return None
        key += (p.data_ptr(), p._version)
    return key


def is_current(module: nn.Module, slot: object, key: List[int]) -> bool:
    """Whether ``module`` holds a value of ``slot`` stored under ``key``."""
    cache = module.__dict__.get("_derived_cache")
    entry = cache.get(slot) if cache is not None else None
    return entry is not None and entry[0] == key


def store_derived(module: nn.Module, slot: object, key: List[int],
                  params: Sequence[torch.Tensor], value) -> None:
    """Keep ``value`` for ``slot`` under ``key`` (from :func:`params_key`)."""
    cache = module.__dict__.get("_derived_cache")
    if cache is None:
        cache = module.__dict__["_derived_cache"] = _DerivedCache()
    cache[slot] = (key, [p.untyped_storage() for p in params], value)  # (pins the storage)


def derived(module: nn.Module, slot: object, params: Sequence[torch.Tensor],
            compute: Callable[..., T]) -> T:
    """``compute(*params)``, or the value it gave in an earlier call with the same ``slot``
    while the parameters are unchanged and no gradient is recorded."""
    key = params_key(params) if reuse_allowed() else None
    if key is None:
        return compute(*params)
    cache = module.__dict__.get("_derived_cache")
    entry = cache.get(slot) if cache is not None else None
    if entry is not None and entry[0] == key:
        return entry[2]
    value = compute(*params)
    store_derived(module, slot, key, params, value)
    return value


def clear_derived_caches(model: nn.Module) -> None:
    """Forget the values stored for ``model`` and its submodules."""
    for module in model.modules():
        module.__dict__.pop("_derived_cache", None)
