"""Overhead of the benchmark harness, as a ratio to the work it measures. Goal: well under 1%.

    .venv/bin/python benchmarks/harness_overhead.py

1. The KTO step timer (device sync, clock read, token delta, rich progress update) runs once
   per optimizer step inside the measured interval: its cost per call is compared with
   the step time of a real tiny KTO run measured in the same process.
2. The per-load peak-memory bookkeeping (VmHWM reset and read) runs once per load,
   outside the timed steps: its cost is compared with that load's duration.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

from toolkit.bench.context import RunContext
from toolkit.bench.memory import PeakMemory
from toolkit.bench.record import WorkloadRecord
from toolkit.bench.settings import load_settings
from toolkit.bench.workloads import kto_lora


def main() -> int:
    import io

    import torch
    from rich.console import Console
    from rich.progress import Progress

    from toolkit.commands.bench import _quiet_libraries

    _quiet_libraries()

    torch.set_num_threads(1)
    settings = load_settings()
    ctx = RunContext(
        device="cpu",
        dtype="float32",
        scale=settings.scales["tiny"],
        settings=settings,
        profile="cpu",
        gpu_class=None,
    )
    ctx.peaks.flops = 1e11
    rec = WorkloadRecord("kto_lora")
    memory = PeakMemory("cpu")
    t0 = time.perf_counter()
    memory.reset()
    kto_lora.run(ctx, rec)
    memory.read()
    load_seconds = time.perf_counter() - t0
    step = rec.metrics["step_time_seconds_p50"]

    # the same rich progress update the CLI does, rendered into a buffer
    progress = Progress(console=Console(file=io.StringIO(), force_terminal=True))
    task = progress.add_task("kto_lora", total=None)
    progress.start()
    ctx.progress = lambda done, total: progress.update(task, completed=done, total=total)
    timer = kto_lora.make_step_timer(ctx, WorkloadRecord("x"), warmup=0, total=10**9)
    timer.rec.metrics["loss_per_step"] = []
    state = SimpleNamespace(num_input_tokens_seen=0, global_step=0)
    timer.on_train_begin(None, state, None)
    calls = 20000
    t0 = time.perf_counter()
    for i in range(calls):
        state.global_step = i + 1
        state.num_input_tokens_seen += 100
        timer.on_step_end(None, state, None)
    per_call = (time.perf_counter() - t0) / calls
    progress.stop()

    t0 = time.perf_counter()
    for _ in range(200):
        memory.reset()
        memory.read()
    per_load = (time.perf_counter() - t0) / 200

    print(f"tiny KTO step p50            {step * 1e3:9.2f} ms")
    print(f"step timer per step          {per_call * 1e6:9.2f} µs   ratio {per_call / step:.2e}")
    print(f"tiny KTO load duration       {load_seconds:9.2f} s")
    print(f"peak-memory bookkeeping/load {per_load * 1e6:9.2f} µs   ratio {per_load / load_seconds:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
