"""Micro check: memory-copy bandwidth.

    toolkit bench --workloads memory_bandwidth

Copies one buffer into another on the device. Counted bytes: read + written
(2 x buffer size) per copy. GPU: against the class's datasheet bandwidth. CPU:
the median sample becomes the cpu profile's bandwidth peak. Timed in calibrated
samples (`toolkit.bench.timing.sample_times`), their spread kept under `spread`.
"""

from __future__ import annotations

from toolkit.bench.timing import percentile, sample_times, spread
from toolkit.units import si


def run(ctx, rec) -> None:
    import torch

    s = ctx.scale.memory_bandwidth
    elements = s.bytes // 4
    rec.config = {
        "buffer_bytes": elements * 4,
        "warmup": s.warmup,
        "repeats": s.repeats,
        "device": ctx.device,
    }
    src = torch.ones(elements, device=ctx.device, dtype=torch.float32)
    dst = torch.empty_like(src)
    times, loops = sample_times(ctx, lambda: dst.copy_(src), s.warmup, s.repeats)
    rec.config.update(samples=len(times), calls_per_sample=loops)
    moved = 2 * elements * 4
    rec.spread["bandwidth_bytes_per_second"] = spread([moved / t for t in times])
    rec.metrics.update(
        bandwidth_bytes_per_second=rec.spread["bandwidth_bytes_per_second"]["median"],
        bandwidth_bytes_per_second_best=moved / min(times),
        copy_time_seconds_p50=percentile(times, 0.5),
    )
    rec.notes.append("bytes counted: read + written (2 x buffer) per copy")
    if ctx.measured_peaks:
        ctx.peaks.bandwidth = rec.metrics["bandwidth_bytes_per_second"]
        ctx.peaks.bandwidth_basis = (
            f"{ctx.peaks.bandwidth / 1e9:.1f} GB/s (copy measured in this run, "
            f"median of {len(times)} samples)"
        )
        rec.notes.append(
            "cpu profile: this measurement is the bandwidth peak the other loads are measured against"
        )
        return
    floor, f = ctx.floor("memory_bandwidth")
    peak = ctx.spec.value("memory_bandwidth_bytes_per_second") if ctx.spec else None
    ctx.check(
        rec,
        "bandwidth_bytes_per_second",
        floor * peak if floor and peak else None,
        f"{ctx.gpu_class} datasheet bandwidth {si(peak, 'B/s')} x {floor}",
        f,
    )
