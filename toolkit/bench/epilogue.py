"""How a load is closed, whatever it reached: the loads of `runner.run_loads` and the burn-in share this
one epilogue so their records cannot drift apart (duration, peak memory, the competing load observed
during the load and the judging it informs, status, freed memory).
"""

from __future__ import annotations

import gc
import time

from toolkit.bench.context import RunContext
from toolkit.bench.memory import PeakMemory
from toolkit.bench.record import WorkloadRecord

# below this a load's own memory drowns in the RSS noise of the process (measured: tiny loads of
# 3-13 MiB read 0.6-8x their estimate, loads of 0.4-2.2 GiB within 5%)
CPU_COMPARABLE_BYTES = 64 * 2**20


def _estimate_ratio(rec: WorkloadRecord) -> None:
    """Measured peak over the load's memory estimate (on the CPU the RSS the load added)."""
    m = rec.metrics
    estimate, peak = m.get("memory_estimate_bytes"), m.get("peak_memory_bytes")
    if not (estimate and peak and m.get("steps_completed")):
        return
    on_cpu = "baseline_memory_bytes" in m
    if on_cpu and estimate < CPU_COMPARABLE_BYTES:
        rec.notes.append(
            f"memory estimate {estimate / 2**20:.1f} MiB: too small to compare with the process's RSS "
            f"(one-time allocations of tens of MiB); compared from {CPU_COMPARABLE_BYTES >> 20} MiB up"
        )
        return
    used = peak - (m.get("baseline_memory_bytes") or 0)
    m["memory_measured_over_estimate_ratio"] = round(used / estimate, 4)


def close_load(
    ctx: RunContext, rec: WorkloadRecord, memory: PeakMemory, started: float, *, free_cache: bool = True
) -> bool:
    """Finish `rec` after its load ended, by success, failure or interrupt; False when the device is
    unusable afterwards, so no later load should run on it.

    `started`: the load's `time.perf_counter()` at its start. `free_cache=False` leaves the CUDA cache
    alone, for a load that is the run's last: nothing after it needs the memory back.
    """
    rec.duration_seconds = round(time.perf_counter() - started, 3)
    try:
        if "peak_memory_bytes" not in rec.metrics:  # a load run in a process of its own measured it there
            rec.metrics.update(memory.read())
            rec.notes.append(memory.note)
        _estimate_ratio(rec)
    except Exception as exc:  # memory stats are best effort after a crash
        rec.notes.append(f"peak memory unavailable: {exc}")
    try:
        contention = ctx.end_observation()
    except Exception as exc:  # an observation that fails must not lose the load
        contention = None
        rec.notes.append(f"competing load not observed: {type(exc).__name__}: {exc}")
    rec.judge(contention)  # a shortfall on a busy machine is inconclusive; a wide spread unstable
    rec.settle()
    gc.collect()
    if not free_cache or ctx.device == "cpu":
        return True
    import torch

    try:
        torch.cuda.empty_cache()
    except Exception as exc:  # a sticky CUDA error (illegal address, device assert) poisons the context
        rec.notes.append(f"device unusable after this load: {exc}")
        return False
    return True
