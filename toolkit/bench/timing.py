"""Timing helpers shared by the loads: device-synchronised timers and percentiles."""

from __future__ import annotations

import time
from collections.abc import Callable


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 1]."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def time_repeats(ctx, fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Seconds per call of `fn`, after `warmup` untimed calls. On a GPU each call is timed
    with CUDA events (no host round trip inside the timed region)."""
    for _ in range(warmup):
        fn()
    ctx.sync()
    times = []
    if ctx.device == "cpu":
        for i in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
            ctx.progress(i + 1, repeats)
        return times
    import torch

    for i in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
        ctx.progress(i + 1, repeats)
    return times
