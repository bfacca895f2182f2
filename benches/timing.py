"""Timing shared by the benchmark scripts (they import it from their own folder): wall clock,
CUDA events for one call at a time, and the environment switches the backend reads at each call
(for A/B runs in one process)."""

from __future__ import annotations

import contextlib
import os
import statistics
import time


@contextlib.contextmanager
def env(name: str, value: str):
    """`name=value` in the environment for the block, the previous value (or its absence)
    restored after it."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def median_ms(fn, repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def cuda_median_ms(fn, repeats: int, warmup: int = 3) -> float:
    """Median device time of ``fn()`` in milliseconds (CUDA events around each call, a
    synchronisation after each) over ``repeats`` calls after ``warmup``."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)
