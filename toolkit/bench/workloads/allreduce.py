"""Distributed check: all-reduce bus bandwidth between the ranks of a `--gpus N` run.

    toolkit bench --gpus 8 --workloads allreduce                  # NCCL across 8 GPUs
    toolkit bench --gpus 2 --scale tiny --workloads allreduce     # gloo across 2 CPU processes

Each size in `[scales.*.allreduce]` (bench.toml) is reduced (sum, float32, in place)
`warmup` times untimed, then `repeats` times back to back after a barrier; the time
per operation is the block's time / repeats, reduced with MAX over the ranks so every
rank reports the slowest rank's figure.

Bandwidths as nccl-tests define them (NVIDIA/nccl-tests, doc/PERFORMANCE.md):
algbw = bytes / time, and for all-reduce busbw = algbw x 2(n-1)/n, n the number of
ranks. busbw is the figure comparable with the hardware's link bandwidth, whatever n.

Correctness: before the timed runs each rank fills a buffer of that size with
rank+1 and reduces it once; every element must equal n(n+1)/2 (exact in float32).

Expectation: busbw against an interconnect figure of the GPU class. The GPU catalog
holds no NVLink/PCIe figures yet, so the check warns "no expectation" and says why.
A single-process run skips this load: it has nothing to reduce with.
"""

from __future__ import annotations

import time

from toolkit.units import gib, si


def bus_bandwidth(algbw: float, ranks: int) -> float:
    """nccl-tests' all-reduce bus bandwidth: algbw x 2(n-1)/n."""
    return algbw * 2 * (ranks - 1) / ranks


def run(ctx, rec) -> None:
    import torch
    import torch.distributed as dist

    s = ctx.scale.allreduce
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        rec.status = "skipped"
        rec.notes.append("skipped: all-reduce needs several processes; run it with --gpus N (N >= 2)")
        return
    n, rank = dist.get_world_size(), dist.get_rank()
    on_gpu = ctx.device != "cpu"
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    rec.config = {
        "backend": str(dist.get_backend()),
        "world_size": n,
        "dtype": "float32",
        "op": "sum, in place",
        "sizes_bytes": list(s.sizes_bytes),
        "warmup": s.warmup,
        "repeats": s.repeats,
        "device": ctx.device,
        "busbw_formula": "busbw = algbw x 2(n-1)/n, algbw = bytes / time (nccl-tests doc/PERFORMANCE.md)",
        "time": "per operation: `repeats` back-to-back operations after a barrier, divided by repeats; "
        "the slowest rank's time (MAX over ranks)",
        # every rank ends with the same figures: the aggregate takes rank 0's
        "same_on_all_ranks": True,
    }
    expected_sum = n * (n + 1) / 2
    sizes, times, algbw, busbw = [], [], [], []
    wrong = 0
    for i, size in enumerate(s.sizes_bytes):
        count = size // 4
        check = torch.full((count,), float(rank + 1), dtype=torch.float32, device=device)
        dist.all_reduce(check)
        wrong += int((check != expected_sum).sum().item())
        del check
        buf = torch.zeros(count, dtype=torch.float32, device=device)  # zeros stay zeros: no overflow
        for _ in range(s.warmup):
            dist.all_reduce(buf)
        ctx.sync()
        dist.barrier()
        ctx.sync()
        t0 = time.perf_counter()
        for _ in range(s.repeats):
            dist.all_reduce(buf)
        ctx.sync()
        elapsed = torch.tensor([(time.perf_counter() - t0) / s.repeats], dtype=torch.float64, device=device)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        del buf
        t = float(elapsed.item())
        sizes.append(count * 4)
        times.append(t)
        algbw.append(count * 4 / t)
        busbw.append(bus_bandwidth(count * 4 / t, n))
        ctx.progress(i + 1, len(s.sizes_bytes))
    total_wrong = torch.tensor([wrong], dtype=torch.int64, device=device)
    dist.all_reduce(total_wrong)
    wrong = int(total_wrong.item())
    rec.metrics.update(
        algorithm_bandwidth_bytes_per_second=algbw[-1],
        bus_bandwidth_bytes_per_second=busbw[-1],
        op_time_seconds=times[-1],
        sizes_bytes=sizes,
        op_time_seconds_per_size=times,
        algorithm_bandwidth_bytes_per_second_per_size=algbw,
        bus_bandwidth_bytes_per_second_per_size=busbw,
        mismatched_elements_total=wrong,
    )
    rec.notes.append(
        f"headline figures at the largest size ({gib(sizes[-1])}); every size is in the *_per_size lists"
    )
    if wrong:
        rec.fail(
            "fail",
            "wrong_result",
            f"all-reduce returned wrong sums: {wrong} element(s) over all ranks differ from "
            f"n(n+1)/2 = {expected_sum:g}",
        )
        return
    figure = ctx.spec.value("interconnect_bandwidth_bytes_per_second") if ctx.spec else None
    floor, f = ctx.floor("allreduce")
    if not on_gpu:
        reason = (
            "gloo between CPU processes on one host is a functional check of the multi-GPU path, "
            "not a measure of a GPU interconnect"
        )
    elif figure is None or floor is None:
        reason = (
            f"the GPU catalog holds no interconnect (NVLink/PCIe) bandwidth for {ctx.gpu_class}, "
            "so busbw is measured and reported, not judged"
        )
    else:
        reason = f"floor {floor} x {ctx.gpu_class} interconnect bandwidth {si(figure, 'B/s')}"
    minimum = floor * figure if on_gpu and figure and floor else None
    ctx.check(rec, "bus_bandwidth_bytes_per_second", minimum, reason, f)
