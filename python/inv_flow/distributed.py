"""Distributed data-parallel training (``torch.distributed`` + DDP) for ``inv_flow``.

Launch any training command under torchrun and it trains on every rank::

    torchrun --nproc_per_node=N -m inv_flow train --preset cifar10 --set batch_size=256
    torchrun --nproc_per_node=N experiments/inv_flow_cifar10_multi_GPUs.py

:class:`inv_flow.experiment.Experiment` calls :func:`setup` in its constructor.  When the
process was started by torchrun (``WORLD_SIZE``/``RANK``/``LOCAL_RANK``/``MASTER_ADDR`` in the
environment) and no process group exists yet, it

* picks the rank's device: ``device=auto``/``cuda`` → ``cuda:LOCAL_RANK`` (and makes it the
  current device, so the inv_conv CUDA ops and every CUDA stream of the rank live there);
  ``device=cpu`` (or no GPU) → the CPU;
* initialises the default process group: NCCL for CUDA devices, gloo for the CPU
  (``dist_backend`` overrides), with a timeout of ``dist_timeout`` seconds on every
  collective, so a rank that died can never leave the others waiting forever;
* for NCCL, keeps NVLink multicast off (``NCCL_NVLS_ENABLE=0`` unless already set).

A process group initialised by the caller (``torch.multiprocessing.spawn`` workers, a job
scheduler wrapper) is used as it is and is not destroyed by ``inv_flow``.

The rest of the design (which parts live in ``experiment.py`` / ``data.py``):

* ``batch_size`` is the **global** batch: each rank takes ``batch_size / world_size`` images
  per step; the training data are sharded by ``torch.utils.data.DistributedSampler`` seeded
  with ``(seed, epoch)`` (``set_epoch`` every epoch), whose permutation is exactly the
  single-process one, so the union of the ranks' k-th batches is the k-th batch of a
  single-process run (see :func:`inv_flow.data.make_sampler`).
* ActNorm initialises from statistics all-reduced over the first batch of every rank — the
  statistics of the global first batch (:func:`all_reduce_sum` is the hook).
* Gradients are averaged by DDP; the loss is the per-rank mean over equal-size batches, so the
  update equals the single-process update on the global batch.
* Evaluation shards the (capped) split without padding and all-reduces the float64 sums of
  log-likelihoods and the counts, so metrics are exact over the whole split.
* Only rank 0 writes checkpoints, samples, figures and logs; every rank loads a checkpoint to
  resume; checkpoints also hold every rank's RNG states.
* :meth:`DistContext.shutdown` destroys (or, after an error, aborts) the process group; the
  experiment drops its DDP wrapper first, so that nothing else holds the group and its threads
  are joined there and then, not at interpreter exit.
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.distributed as dist

if dist.is_available():
    # Imported before any process group exists, on purpose: DDP imports torch.distributed.nn,
    # whose functions bind `group=group.WORLD` as a default argument when that module is first
    # imported.  Imported while a group exists, they would keep that group (and gloo's worker and
    # I/O threads) alive after destroy_process_group, until interpreter exit, where tearing it
    # down raced the C++ runtime's own teardown: a rank now and then aborted with "terminate
    # called without an active exception" after a run that had succeeded.
    import torch.distributed.nn  # noqa: F401

#: Environment variables torchrun sets for every worker.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

#: Test-only fault injection: ``"RANK:STEP"`` makes that rank raise at that optimizer step.
FAULT_ENV = "INV_FLOW_TEST_FAULT"


class DistributedError(RuntimeError):
    """A distributed run that cannot start (bad backend, device or world size)."""


@dataclass
class DistContext:
    """Where this process stands in a (possibly trivial) distributed run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = ""
    #: True when torch.distributed is initialised (also for a world of one under torchrun).
    enabled: bool = False
    #: True when :func:`setup` created the process group (and so must destroy it).
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shutdown(self, failed: bool = False) -> None:
        """End the process group if :func:`setup` created it.

        On the clean path every rank meets in a barrier first (so rank 0's last files exist
        when any rank returns) and the group is destroyed; after an error (``failed``) the group
        is aborted without waiting for the other ranks, which may be dead or stuck.
        """
        if not (self.owns_group and dist.is_available() and dist.is_initialized()):
            return
        self.owns_group = False
        if failed:
            abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
            if abort is not None and self.backend == "nccl":
                try:
                    abort()
                    return
                except Exception:  # noqa: BLE001 - fall back to destroy
                    pass
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - already broken; the process is exiting anyway
                pass
            return
        try:
            barrier(self)
        finally:
            dist.destroy_process_group()


def launched_by_torchrun(environ: Mapping[str, str] | None = None) -> bool:
    """True when the torchrun variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) are set."""
    environ = os.environ if environ is None else environ
    return all(name in environ for name in TORCHRUN_VARIABLES)


def _rank_device(spec: str, local_rank: int, world_size: int) -> torch.device:
    """The device of one rank: ``auto``/``cuda`` → ``cuda:LOCAL_RANK`` (CPU without CUDA for
    ``auto``); ``cpu`` → CPU; an explicit ``cuda:K`` only in a world of one."""
    from inv_flow.config import ConfigError  # noqa: PLC0415

    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError as err:
        raise ConfigError(f"bad device {spec!r}: {err}") from None
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ConfigError(f"device={spec!r} but CUDA is not available; use device=cpu or auto")
    if device.index is not None:
        if world_size > 1:
            raise ConfigError(
                f"device={spec!r} names one GPU for all {world_size} ranks; use device=cuda "
                "(or auto): each rank takes cuda:LOCAL_RANK")
        return device
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(f"LOCAL_RANK={local_rank} but only {count} CUDA device(s) are visible; "
                          f"start at most {count} processes per node (--nproc_per_node)")
    return torch.device("cuda", local_rank)


def setup(config: Mapping[str, Any]) -> DistContext | None:
    """Join or create the process group for this process; ``None`` for a plain single process.

    See the module docstring.  Raises :class:`inv_flow.config.ConfigError` for a device or
    backend the run cannot use.
    """
    from inv_flow.config import ConfigError  # noqa: PLC0415

    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        backend = str(dist.get_backend())
        spec = str(config.get("device", "auto"))
        if spec == "auto" and backend == "gloo":
            spec = "cpu"  # a gloo group means CPU training unless the config names a GPU
        device = _rank_device(spec, local_rank, world_size)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return DistContext(rank, world_size, local_rank, device, backend, True, False)
    if not launched_by_torchrun():
        return None
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    device = _rank_device(str(config.get("device", "auto")), local_rank, world_size)
    backend = str(config.get("dist_backend", "auto") or "auto")
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ConfigError(f"dist_backend must be auto, nccl or gloo, got {backend!r}")
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError("dist_backend=nccl needs CUDA devices; use device=cuda or dist_backend=gloo")
    if backend == "nccl" and not dist.is_nccl_available():
        raise ConfigError("dist_backend=nccl but this torch build has no NCCL")
    if backend == "gloo" and not dist.is_gloo_available():
        raise ConfigError("dist_backend=gloo but this torch build has no gloo")
    timeout = float(config.get("dist_timeout", 600.0))
    if timeout <= 0:
        raise ConfigError(f"dist_timeout must be positive (seconds), got {timeout}")
    kwargs: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if backend == "nccl":
        # NVLink multicast (NVLS) must stay off on the shared GPU hosts.
        os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
        kwargs["device_id"] = device
    dist.init_process_group(backend=backend, init_method="env://", rank=rank,
                            world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout), **kwargs)
    return DistContext(rank, world_size, local_rank, device, backend, True, True)


# ------------------------------------------------------------------------------- collectives
def _collective_device(context: DistContext | None) -> torch.device:
    return context.device if context is not None and context.backend == "nccl" else torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor, context: DistContext | None) -> torch.Tensor:
    """Sum ``tensor`` over all ranks (returns a new tensor on ``tensor``'s device; the identity
    without a process group).  float64 sums stay float64 on gloo and NCCL.  Collectives run in a
    world of one too, so ``torchrun --nproc_per_node=1`` exercises the same code path."""
    if context is None or not context.enabled:
        return tensor
    work = tensor.detach().to(_collective_device(context), copy=True)
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(tensor.device)


def all_reduce_any(flag: bool, context: DistContext | None) -> bool:
    """True on every rank when ``flag`` is true on any rank."""
    if context is None or not context.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=_collective_device(context))
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def all_gather_object(obj: Any, context: DistContext | None) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` without a group)."""
    if context is None or not context.enabled:
        return [obj]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(context: DistContext | None) -> None:
    if context is None or not context.enabled:
        return
    if context.backend == "nccl":
        dist.barrier(device_ids=[context.device.index])
    else:
        dist.barrier()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank`` > 0 (rank 0 keeps ``seed``, so a world of one is a plain run)."""
    return (seed + 1_000_003 * rank) % (2**63)


# ---------------------------------------------------------------------------- fault injection
def injected_fault(context: DistContext | None) -> int | None:
    """The step at which this rank must fail, from ``INV_FLOW_TEST_FAULT="RANK:STEP"`` (tests)."""
    value = os.environ.get(FAULT_ENV, "")
    if not value:
        return None
    rank_text, _, step_text = value.partition(":")
    rank = 0 if context is None else context.rank
    try:
        return int(step_text) if int(rank_text) == rank else None
    except ValueError:
        print(f"inv_flow: ignoring malformed {FAULT_ENV}={value!r} (expected RANK:STEP)",
              file=sys.stderr)
        return None


def record_error(err: BaseException) -> None:
    """Write ``err`` to torchrun's error file (``TORCHELASTIC_ERROR_FILE``) so torchrun's
    failure summary shows the message and traceback of the rank that failed."""
    if "TORCHELASTIC_ERROR_FILE" not in os.environ:
        return
    try:
        from torch.distributed.elastic.multiprocessing.errors import get_error_handler  # noqa: PLC0415

        handler = get_error_handler()
        handler.initialize()
        handler.record_exception(err)
    except Exception:  # noqa: BLE001 - reporting must never mask the original error
        pass
