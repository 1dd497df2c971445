"""matmul and bandwidth: the toolkit's load against a plain torch loop, side by side in one process.

Each round runs the toolkit's load (`toolkit.bench.workloads.matmul.run` / `memory_bandwidth.run` on a
RunContext, as the runner calls it) and a plain loop of the same shape and dtype on the same device:
`torch.matmul(a, b, out=c)` (or `dst.copy_(src)`) back to back, one device sync at the end of each
sample, timed as a whole, with as many calls per sample and as many samples as the toolkit's load
took. The order alternates round after round. The plain loop is the ceiling the harness is measured
against: ratio = the toolkit's median figure / the plain loop's median figure.
"""

from __future__ import annotations

import statistics
import time

ROUNDS = {False: 5, True: 2}  # rounds at full size, at tiny scale


def _context(tiny: bool):
    """(torch, RunContext) on the GPU if torch sees one (its class's 16-bit type), else the CPU in fp32."""
    import torch

    from toolkit.bench.context import Peaks, RunContext
    from toolkit.bench.settings import load_settings
    from toolkit.catalog import load_catalog

    settings = load_settings()
    scale = settings.scales["tiny" if tiny else "full"]
    if tiny:  # one thread: on a busy 2-core CI machine two OpenMP threads wait on each other for ms
        torch.set_num_threads(1)
    spec, device, dtype = None, "cpu", "float32"
    if torch.cuda.is_available():
        device = "cuda"
        spec = load_catalog().match_device(torch.cuda.get_device_name(0))
        dtype = spec.tensor_dtype if spec else "bfloat16"
    peaks = Peaks()
    if spec is not None:
        peaks = Peaks(flops=spec.tensor_flops, bandwidth=spec.value("memory_bandwidth_bytes_per_second"))
    ctx = RunContext(
        device=device,
        dtype=dtype,
        scale=scale,
        settings=settings,
        gpu_class=spec.key if spec else "cpu",
        spec=spec,
        peaks=peaks,
    )
    return torch, ctx


def _plain(torch, ctx, fn, calls: int, samples: int) -> float:
    """Median seconds per call of `fn` over `samples` batches of `calls` back-to-back calls."""
    per_call = []
    for _ in range(samples):
        ctx.sync()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        ctx.sync()
        per_call.append((time.perf_counter() - t0) / calls)
    return statistics.median(per_call)


def _toolkit_load(ctx, module, name: str) -> dict:
    from toolkit.bench.record import WorkloadRecord

    rec = WorkloadRecord(name)
    module.run(ctx, rec)
    out = {"status": rec.status, "metrics": dict(rec.metrics), "config": dict(rec.config)}
    for key in ("spread", "contention", "expected"):
        value = getattr(rec, key, None)
        if value:
            out[key] = value
    return out


def _plain_shape(last: dict, repeats: int) -> tuple[int, int]:
    """(calls per sample, samples) of the toolkit's last load, so the plain loop is timed alike."""
    cfg = last.get("config", {})
    return int(cfg.get("calls_per_sample") or repeats), int(cfg.get("samples") or 5)


def _side_by_side(toolkit_round, plain_round, tiny: bool, emit) -> None:
    """Alternate the two; after every round `emit` the figures so far (a part stopped at its allowance
    keeps the rounds it finished)."""
    rounds = []
    for i in range(ROUNDS[tiny]):
        order = (toolkit_round, plain_round) if i % 2 == 0 else (plain_round, toolkit_round)
        got = {}
        for fn in order:
            got.update(fn())
        got["ratio"] = got["toolkit"] / got["plain"]
        rounds.append(got)
        toolkit = statistics.median(r["toolkit"] for r in rounds)
        plain = statistics.median(r["plain"] for r in rounds)
        emit(
            {
                "toolkit": toolkit,
                "plain": plain,
                "ratio": toolkit / plain,
                "paired_ratios": [r["ratio"] for r in rounds],
                "rounds": len(rounds),
                "rounds_planned": ROUNDS[tiny],
            }
        )


def matmul(tiny: bool, emit) -> None:
    torch, ctx = _context(tiny)
    from toolkit.bench.workloads import matmul as load

    s = ctx.scale.matmul
    n = s.size
    gen = torch.Generator(device=ctx.device).manual_seed(1)
    a = torch.randn(n, n, device=ctx.device, dtype=ctx.torch_dtype, generator=gen)
    b = torch.randn(n, n, device=ctx.device, dtype=ctx.torch_dtype, generator=gen)
    c = torch.empty(n, n, device=ctx.device, dtype=ctx.torch_dtype)
    last: dict = {}

    def toolkit_round() -> dict:
        last.update(_toolkit_load(ctx, load, "matmul"))
        return {"toolkit": last["metrics"]["flops_per_second"]}

    def plain_round() -> dict:
        for _ in range(s.warmup):
            torch.matmul(a, b, out=c)
        calls, samples = _plain_shape(last, s.repeats)
        seconds = _plain(torch, ctx, lambda: torch.matmul(a, b, out=c), calls, samples)
        return {"plain": 2 * n**3 / seconds}

    _side_by_side(
        toolkit_round,
        plain_round,
        tiny,
        lambda found: emit(
            {
                "metric": "flops_per_second",
                **found,
                "unit": "FLOP/s",
                "shape": f"{n} x {n} @ {n} x {n}",
                "dtype": ctx.dtype,
                "device": _device_name(torch, ctx),
                "gpu_class": ctx.gpu_class,
                "plain_loop": "torch.matmul(a, b, out=c) back to back, one sync per sample; as many calls "
                "per sample and samples as the toolkit's load took; the median sample",
                "toolkit_load": last,
            }
        ),
    )


def bandwidth(tiny: bool, emit) -> None:
    torch, ctx = _context(tiny)
    from toolkit.bench.workloads import memory_bandwidth as load

    s = ctx.scale.memory_bandwidth
    elements = s.bytes // 4
    src = torch.ones(elements, device=ctx.device, dtype=torch.float32)
    dst = torch.empty_like(src)
    moved = 2 * elements * 4
    last: dict = {}

    def toolkit_round() -> dict:
        last.update(_toolkit_load(ctx, load, "memory_bandwidth"))
        return {"toolkit": last["metrics"]["bandwidth_bytes_per_second"]}

    def plain_round() -> dict:
        for _ in range(s.warmup):
            dst.copy_(src)
        calls, samples = _plain_shape(last, s.repeats)
        seconds = _plain(torch, ctx, lambda: dst.copy_(src), calls, samples)
        return {"plain": moved / seconds}

    _side_by_side(
        toolkit_round,
        plain_round,
        tiny,
        lambda found: emit(
            {
                "metric": "bandwidth_bytes_per_second",
                **found,
                "unit": "B/s",
                "buffer_bytes": elements * 4,
                "bytes_counted": "read + written (2 x buffer) per copy",
                "device": _device_name(torch, ctx),
                "gpu_class": ctx.gpu_class,
                "plain_loop": "dst.copy_(src) back to back, one sync per sample; as many calls per sample "
                "and samples as the toolkit's load took; the median sample",
                "toolkit_load": last,
            }
        ),
    )


def _device_name(torch, ctx) -> str:
    return torch.cuda.get_device_name(0) if ctx.device == "cuda" else "cpu"
