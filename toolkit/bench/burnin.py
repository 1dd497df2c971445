"""Burn-in: sustained matmul with a numerical check while NVML watches temperature, power and clocks.

    toolkit bench --burn-in 10m [--gpu CLASS]

gpu-burn's idea: the same matmul of fixed, seeded inputs runs over and over on every visible GPU (the
class's 16-bit tensor dtype, as the matmul load) or on the CPU (fp32); the first result is the
reference and every later result is compared with it. cuBLAS and the CPU BLAS reproduce a result bit
for bit for the same shape, device and thread count, so the comparison is exact (relative tolerance 0):
every element that differs counts as an error, NaN included. A healthy part has none; a part that
corrupts results under heat or power stress shows them here, long before a training run diverges.

A sampler thread reads each GPU's temperature, power, SM clock and clock-event ("throttle") reasons
through NVML once a second, with the guarded queries of the health collector. Where NVML cannot be
read (no NVIDIA driver: a CPU node, an AMD GPU) the record says so and holds no GPU readings; on the
CPU, psutil's frequency and temperature are recorded instead, named as CPU readings.

The run is cut into intervals (a tenth of the duration, 1-10 s); after each one the record is handed
to `on_interval`, which saves the run document atomically, so a killed burn-in keeps every finished
interval. Status: fail when any element differed, warn when a GPU was held down by HW slowdown, HW
thermal, HW power brake or SW thermal slowdown, pass otherwise. The SW power cap (the GPU at its power
limit) is reported as throttling but is normal under sustained load.

This module is the loop and its record; the readings live in `burnin_sampler` (the only one that
touches NVML) and the conclusions in `burnin_judge` (free of torch and NVML, for the report).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from toolkit.bench.burnin_judge import RELATIVE_TOLERANCE, TOLERANCE_BASIS, judge
from toolkit.bench.burnin_judge import summary_line as summary_line  # report.py reads it from here
from toolkit.bench.burnin_sampler import SAMPLE_SECONDS, Sampler, cpu_stats, gpu_metrics, gpu_stats
from toolkit.bench.record import WorkloadRecord
from toolkit.errors import UsageError

WORKLOAD = "burn_in"
ROUND_SECONDS = 0.25  # matmuls queued per device between two checks of the error counters
MINUTE = 60.0

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)", re.IGNORECASE)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """Seconds of `90s`, `10m`, `1h`, `1.5h` or plain seconds; anything else is a usage error."""
    m = _DURATION.fullmatch(str(text).strip())
    seconds = float(m[1]) * _UNIT_SECONDS[m[2].lower()] if m else 0.0
    if not m or seconds <= 0:
        raise UsageError(
            f"--burn-in: {text!r} is not a duration",
            hint="give a positive number of seconds, or a number with s, m or h: 90s, 10m, 1h",
        )
    return seconds


def interval_for(duration: float) -> float:
    """A tenth of the run, between 1 and 10 seconds: enough points for a trend, small saves."""
    return min(10.0, max(1.0, duration / 10))


def count_mismatches(result, reference, rtol: float = RELATIVE_TOLERANCE):
    """Elements of `result` farther from `reference` than rtol * |reference| (NaN always counts).

    Returns a 0-dim int64 tensor on the tensors' device: no host synchronisation, so the GPU keeps
    working while the counts add up. rtol 0 is an exact comparison (one cheap kernel); rtol > 0
    compares in float64.
    """
    import torch

    if rtol == 0:
        return torch.count_nonzero(result != reference)
    r, ref = result.double(), reference.double()
    ok = (r == ref) | ((r - ref).abs() <= rtol * ref.abs())
    return torch.count_nonzero(~ok)


@dataclass
class BurnInRecord(WorkloadRecord):
    """A WorkloadRecord with the burn-in's intervals, devices, sampler and throttle summary."""

    burn_in: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        doc = super().as_dict()
        doc["burn_in"] = self.burn_in
        return doc


class _Device:
    """One device's fixed inputs, reference result, output buffer and on-device error counter."""

    def __init__(self, name: str, n: int, dtype, seed: int):
        import torch

        self.name = name
        self.is_cuda = name.startswith("cuda")
        gen = torch.Generator(device=name).manual_seed(seed)
        self.a = torch.randn(n, n, device=name, dtype=dtype, generator=gen)
        self.b = torch.randn(n, n, device=name, dtype=dtype, generator=gen)
        # the first result is the reference; computed through the same call (out=) as every later one
        self.ref = torch.empty(n, n, device=name, dtype=dtype)
        torch.mm(self.a, self.b, out=self.ref)
        self.c = torch.empty_like(self.ref)
        self.errors_acc = torch.zeros((), dtype=torch.int64, device=name)
        self.reference_nonfinite = int((~torch.isfinite(self.ref)).sum())
        self.k = 1  # matmuls per round, adapted to ROUND_SECONDS
        self.iterations = 0
        self.errors = 0
        self.first_error_seconds: float | None = None

    def enqueue(self) -> None:
        import torch

        if not self.is_cuda:
            self.t0 = time.perf_counter()
            for _ in range(self.k):
                torch.mm(self.a, self.b, out=self.c)
                self.errors_acc += count_mismatches(self.c, self.ref)
            return
        with torch.cuda.device(self.name):  # events record on the current device's stream
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.start.record()
            for _ in range(self.k):
                torch.mm(self.a, self.b, out=self.c)
                self.errors_acc += count_mismatches(self.c, self.ref)
            self.end.record()

    def collect(self) -> tuple[int, int]:
        """(iterations, errors) of the round; waits for the device; adapts the next round's size."""
        errors = int(self.errors_acc.item())  # synchronises with this device
        self.errors_acc.zero_()
        busy = self.start.elapsed_time(self.end) / 1e3 if self.is_cuda else time.perf_counter() - self.t0
        done = self.k
        per_call = busy / done if busy > 0 else ROUND_SECONDS
        self.k = max(1, min(4 * done, int(ROUND_SECONDS / per_call)))
        self.iterations += done
        self.errors += errors
        return done, errors


def _window_flops(intervals: list[dict], keep: Callable[[dict], bool], flop: float) -> float | None:
    chosen = [i for i in intervals if keep(i)]
    seconds = sum(i["end_seconds"] - i["start_seconds"] for i in chosen)
    return sum(i["iterations"] for i in chosen) * flop / seconds if seconds > 0 else None


class BurnIn:
    def __init__(self, ctx, duration: float, rec: BurnInRecord, on_interval: Callable[[BurnInRecord], None]):
        self.ctx, self.duration, self.rec, self.on_interval = ctx, duration, rec, on_interval
        self.interval = interval_for(duration)
        self.n = ctx.scale.matmul.size
        self.flop = 2 * self.n**3
        self.devices: list[_Device] = []
        self.intervals: list[dict] = []
        self.sampler: Sampler | None = None
        self.elapsed = 0.0

    def device_names(self) -> list[str]:
        import torch

        if self.ctx.device == "cpu":
            return ["cpu"]
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]

    def run(self) -> None:
        import torch

        names = self.device_names()
        rec = self.rec
        rec.config = {
            "duration_seconds": self.duration,
            "interval_seconds": self.interval,
            "sample_period_seconds": SAMPLE_SECONDS,
            "size": self.n,
            "dtype": self.ctx.dtype,
            "devices": names,
            "threads": torch.get_num_threads() if self.ctx.device == "cpu" else None,
            "tolerance": {"relative": RELATIVE_TOLERANCE, "basis": TOLERANCE_BASIS},
            "across_devices": "FLOP/s and iterations are summed over the devices; temperature, power, "
            "clock and throttle metrics are the worst device's (per device under burn_in.devices)",
            "inputs": f"two {self.n} x {self.n} torch.randn matrices per device, seed {self.ctx.seed}",
        }
        rec.flops = {
            "flops_per_call": self.flop,
            "formula": "2 n^3 per (n x n) @ (n x n)",
            "counts": "matmul FLOPs only; the wall time they are divided by includes the comparison "
            "with the reference (one elementwise pass per matmul)",
        }
        self.sampler = Sampler(names)
        self.devices = [_Device(name, self.n, self.ctx.torch_dtype, self.ctx.seed) for name in names]
        for d in self.devices:
            if d.is_cuda:
                torch.cuda.synchronize(d.name)
        self.sampler.start()
        start = time.perf_counter()
        deadline = start + self.duration
        interval_start = start
        boundary = min(start + self.interval, deadline)
        current = {d.name: [0, 0] for d in self.devices}
        self._started = start
        try:
            while True:
                for d in self.devices:
                    d.enqueue()
                for d in self.devices:
                    done, errors = d.collect()
                    current[d.name][0] += done
                    current[d.name][1] += errors
                    if errors and d.first_error_seconds is None:
                        d.first_error_seconds = round(time.perf_counter() - start, 3)
                now = time.perf_counter()
                self.elapsed = now - start
                self.ctx.progress(min(int(self.elapsed), int(self.duration)), int(self.duration))
                if now >= boundary:
                    # reset first: an interrupt while saving must not count this interval twice
                    finished, current = current, {d.name: [0, 0] for d in self.devices}
                    self._close_interval(finished, interval_start, now, partial=False)
                    interval_start = now
                    boundary = min(now + self.interval, deadline)
                    if now >= deadline:
                        break
        except KeyboardInterrupt:
            # the rounds that finished since the last interval are kept as a partial interval
            if any(v[0] for v in current.values()):
                self._close_interval(current, interval_start, time.perf_counter(), partial=True)
            raise

    def _close_interval(self, current: dict, t_start: float, t_end: float, partial: bool) -> None:
        samples = self.sampler.take()
        seconds = t_end - t_start
        entry: dict = {
            "index": len(self.intervals),
            "start_seconds": round(t_start - self._started, 3),
            "end_seconds": round(t_end - self._started, 3),
            "iterations": sum(v[0] for v in current.values()),
            "errors": sum(v[1] for v in current.values()),
        }
        entry["flops_per_second"] = entry["iterations"] * self.flop / seconds if seconds > 0 else None
        if partial:
            entry["partial"] = True
        per_device = {}
        for d in self.devices:
            done, errors = current[d.name]
            row = {
                "iterations": done,
                "errors": errors,
                "flops_per_second": done * self.flop / seconds if seconds > 0 else None,
            }
            if self.sampler.source == "nvml":
                stats = gpu_stats(samples, d.name)
                stats["clock_events"] = {k: v["samples"] for k, v in stats["clock_events"]["reasons"].items()}
                row.update(stats)
            per_device[d.name] = row
        entry["devices"] = per_device
        if self.sampler.source == "psutil":
            entry["cpu"] = cpu_stats(samples)
        self.intervals.append(entry)
        self.update()
        self.on_interval(self.rec)

    def update(self) -> None:
        """Metrics, checks, notes and details from the intervals and samples so far."""
        rec, intervals, flop = self.rec, self.intervals, self.flop
        end = intervals[-1]["end_seconds"] if intervals else 0.0
        first = _window_flops(intervals, lambda i: i["start_seconds"] < MINUTE, flop)
        last = _window_flops(intervals, lambda i: i["end_seconds"] > end - MINUTE, flop)
        iterations = sum(i["iterations"] for i in intervals)
        errors = sum(i["errors"] for i in intervals)
        m = {
            "iterations_total": iterations,
            "errors_total": errors,
            "errors_per_interval": [i["errors"] for i in intervals],
            "flops_per_second": iterations * flop / end if end > 0 else None,
            "flops_per_second_per_interval": [i["flops_per_second"] for i in intervals],
            "first_minute_flops_per_second": first,
            "last_minute_flops_per_second": last,
            "sustained_flops_ratio": round(last / first, 4) if first and last else None,
            "burn_in_seconds": round(end, 3),
        }
        samples = self.sampler.all if self.sampler else []
        sampler = self.sampler.describe() if self.sampler else {"available": False, "note": "not started"}
        devices, throttle = [], {}
        for d in self.devices:
            mine = [{**i, **i["devices"][d.name]} for i in intervals]
            entry = {
                "device": d.name,
                "iterations": d.iterations,
                "errors_total": d.errors,
                "first_error_seconds": d.first_error_seconds,
                "reference_nonfinite_elements": d.reference_nonfinite,
                "first_minute_flops_per_second": _window_flops(
                    mine, lambda i: i["start_seconds"] < MINUTE, flop
                ),
                "last_minute_flops_per_second": _window_flops(
                    mine, lambda i: i["end_seconds"] > end - MINUTE, flop
                ),
            }
            if self.sampler and self.sampler.source == "nvml":
                stats = gpu_stats(samples, d.name)
                entry.update(self.sampler.describe()["gpus"].get(d.name, {}))
                entry.update(stats)
                throttle[d.name] = stats["clock_events"]
            devices.append(entry)
        gpus = [e for e in devices if "samples" in e]
        if gpus:
            m.update(gpu_metrics(gpus, throttle))
        elif self.sampler and self.sampler.source == "psutil":
            cpu = cpu_stats(samples)
            freq = cpu["cpu_frequency_mean_mhz"]
            m.update(
                cpu_frequency_mean_hertz=round(freq * 1e6) if freq is not None else None,
                cpu_temperature_max_celsius=cpu["cpu_temperature_max_celsius"],
            )
        rec.metrics.update(m)

        expected, verdict = judge(errors, throttle)
        rec.expected.update(expected)
        summaries = {dev: t for dev, t in throttle.items() if t["samples"]}
        summary = verdict["summary"]
        rec.burn_in = {
            "duration_requested_seconds": self.duration,
            "interval_seconds": self.interval,
            "tolerance": {"relative": RELATIVE_TOLERANCE, "basis": TOLERANCE_BASIS},
            "sampler": sampler,
            "throttle": {
                **verdict,
                "summary": summary if summaries else "throttling not sampled: no NVML readings",
                "per_device": throttle,
            },
            "devices": devices,
            "intervals": intervals,
        }
        notes = [sampler["note"]] if sampler.get("note") else []
        if summaries:
            notes.append(summary)
        if end and end < 2 * MINUTE:
            notes.append(
                f"run of {end:.0f} s, shorter than two minutes: the first- and last-minute FLOP/s overlap"
            )
        if errors:
            bad = ", ".join(f"{d.name} {d.errors}" for d in self.devices if d.errors)
            notes.append(
                f"{errors} element(s) differed from the reference ({bad}): the device corrupts results"
            )
        rec.notes = notes
        rec.settle()


def run(
    ctx,
    duration: float,
    on_start: Callable[[str], None],
    on_done: Callable[[WorkloadRecord], None],
    on_interval: Callable[[WorkloadRecord], None],
) -> tuple[list[WorkloadRecord], bool]:
    """The burn-in as the run's only load; (records, interrupted) like `runner.run_loads`."""
    import traceback

    from toolkit.bench.epilogue import close_load
    from toolkit.bench.memory import PeakMemory
    from toolkit.bench.runner import classify

    rec = BurnInRecord(WORKLOAD)
    memory = PeakMemory("cuda" if ctx.device != "cpu" else "cpu")
    on_start(WORKLOAD)
    burn = BurnIn(ctx, duration, rec, on_interval)
    t0 = time.perf_counter()
    interrupted = False
    try:
        memory.reset()
        burn.run()
    except KeyboardInterrupt:
        interrupted = True
        kept = burn.intervals
        ran = kept[-1]["end_seconds"] if kept else burn.elapsed
        partial = ", the last one partial" if kept and kept[-1].get("partial") else ""
        rec.fail(
            "error",
            "interrupted",
            f"interrupted by the user after {ran:.0f} s of {duration:g} s ({len(kept)} interval(s) "
            f"kept{partial}, {sum(i['errors'] for i in kept)} errors)",
        )
    except Exception as exc:  # the record says what happened; the run still saves it
        status, kind = classify(exc)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        rec.fail(
            status, kind, f"{kind.replace('_', ' ')}: {type(exc).__name__}: {first}", traceback.format_exc(8)
        )
    finally:
        if burn.sampler is not None:
            burn.sampler.stop()
        if burn.intervals or burn.sampler is not None:
            burn.update()
        burn.devices.clear()  # freeing does not lower the peaks close_load reads; its gc frees the tensors
        close_load(ctx, rec, memory, t0, free_cache=False)  # the run's only load: nothing needs the cache
    on_done(rec)
    return [rec], interrupted
