"""Timing shared by the loads: calibrated, repeated samples (the way pyperf measures), their spread, and
percentiles.

A figure is never one call timed once. `sample_times` first calibrates how many calls make one sample
at least `MIN_SAMPLE_SECONDS` long (a call of 1 ms timed alone is mostly timer and scheduler noise),
then takes `samples` such samples; each sample gives the mean time per call over its calls. The load's
headline figure is the median sample; `spread` keeps how far the samples lie apart (n, median, min,
max and the coefficient of variation, stdev / mean), which the JSON carries under `spread` and the
judging reads (`toolkit.bench.record`: a spread wider than `CV_LIMIT` across the floor is *unstable*).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

# a sample lasts at least this long: long enough that timer resolution and a stray context switch are
# a small part of it, short enough that a run of 10 samples stays under a second at tiny scale
MIN_SAMPLE_SECONDS = 0.05
# at least this many samples for any figure with a spread (a median of 2 is a mean)
MIN_SAMPLES = 5
# the most calls one sample is made of (a call of a microsecond would otherwise loop for ever)
MAX_LOOPS = 10_000


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 1]."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def spread(values: list[float]) -> dict:
    """The spread of a figure's samples: n, median, min, max and cv (stdev / mean, a fraction; 0 for a
    single sample)."""
    values = [float(v) for v in values]
    mean = statistics.fmean(values)
    cv = statistics.stdev(values) / mean if len(values) > 1 and mean else 0.0
    return {
        "n": len(values),
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "cv": round(cv, 5),
    }


def loops_for(seconds_per_call: float, min_seconds: float = MIN_SAMPLE_SECONDS) -> int:
    """How many calls make one sample at least `min_seconds` long."""
    if seconds_per_call <= 0:
        return MAX_LOOPS
    return max(1, min(MAX_LOOPS, math.ceil(min_seconds / seconds_per_call)))


def _timed(ctx, fn: Callable[[], object], loops: int) -> float:
    """Seconds for `loops` calls of `fn`; on a GPU timed with CUDA events (no host round trip inside
    the timed region)."""
    if ctx.device == "cpu":
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        return time.perf_counter() - t0
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(loops):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def sample_times(
    ctx, fn: Callable[[], object], warmup: int, samples: int, min_seconds: float = MIN_SAMPLE_SECONDS
) -> tuple[list[float], int]:
    """Seconds per call of `fn` in each of `samples` calibrated samples (at least MIN_SAMPLES), after
    `warmup` untimed calls; and the number of calls each sample is made of."""
    for _ in range(warmup):
        fn()
    ctx.sync()
    loops = loops_for(_timed(ctx, fn, 1), min_seconds)  # the calibration call is a warm-up too
    samples = max(samples, MIN_SAMPLES)
    times = []
    for i in range(samples):
        times.append(_timed(ctx, fn, loops) / loops)
        ctx.progress(i + 1, samples)
    return times, loops
