"""Micro check: square matmul throughput.

    toolkit bench --workloads matmul

GPU: n^3 in the class's 16-bit tensor type (bf16, or fp16 where the class has no
bf16), against the dense tensor peak. CPU: fp32; the median sample becomes the
cpu profile's FLOP/s peak that later loads are measured against. FLOPs = 2 n^3.
Timed in calibrated samples (`toolkit.bench.timing.sample_times`); the spread of
the samples' FLOP/s is kept under `spread`.
"""

from __future__ import annotations

from toolkit.bench.timing import percentile, sample_times, spread
from toolkit.units import si


def run(ctx, rec) -> None:
    import torch

    s = ctx.scale.matmul
    n = s.size
    rec.config = {
        "size": n,
        "dtype": ctx.dtype,
        "warmup": s.warmup,
        "repeats": s.repeats,
        "device": ctx.device,
    }
    rec.flops = {"flops_per_call": 2 * n**3, "formula": "2 n^3 per (n x n) @ (n x n)"}
    gen = torch.Generator(device=ctx.device).manual_seed(ctx.seed)
    a = torch.randn(n, n, device=ctx.device, dtype=ctx.torch_dtype, generator=gen)
    b = torch.randn(n, n, device=ctx.device, dtype=ctx.torch_dtype, generator=gen)
    c = torch.empty(n, n, device=ctx.device, dtype=ctx.torch_dtype)
    times, loops = sample_times(ctx, lambda: torch.mm(a, b, out=c), s.warmup, s.repeats)
    rec.config.update(samples=len(times), calls_per_sample=loops)
    flop = 2 * n**3
    rec.spread["flops_per_second"] = spread([flop / t for t in times])
    rec.metrics.update(
        flops_per_second=rec.spread["flops_per_second"]["median"],
        flops_per_second_best=flop / min(times),
        call_time_seconds_p50=percentile(times, 0.5),
        call_time_seconds_p90=percentile(times, 0.9),
    )
    if ctx.measured_peaks:
        # the median, not the best repeat: steadier on shared, noisy machines
        ctx.peaks.flops = rec.metrics["flops_per_second"]
        ctx.peaks.flops_basis = (
            f"{ctx.peaks.flops / 1e9:.1f} GFLOP/s (fp32 matmul measured in this run, "
            f"median of {len(times)} samples)"
        )
        rec.notes.append(
            "cpu profile: this measurement is the FLOP/s peak the other loads are measured against"
        )
        return
    floor, f = ctx.floor("matmul")
    peak = ctx.spec.tensor_flops if ctx.spec else None
    ctx.check(
        rec,
        "flops_per_second",
        floor * peak if floor and peak else None,
        f"{ctx.gpu_class} dense {ctx.dtype} tensor peak {si(peak, 'FLOP/s')} x {floor}",
        f,
    )
