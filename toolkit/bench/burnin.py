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
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from toolkit.bench.record import WorkloadRecord
from toolkit.errors import UsageError
from toolkit.health.collectors.gpu_nvidia import (
    CLOCK_EVENT_REASONS,
    CLOCK_EVENT_STATUS,
    CLOCK_EVENT_TEXT,
    _error_name,
    _Guard,
    decode_clock_events,
)

WORKLOAD = "burn_in"
SAMPLE_SECONDS = 1.0
CPU_NOTE = (
    "fp32 matmul on the CPU: no NVML readings (GPU temperature, power, clocks and throttle reasons are "
    "not sampled)"
)
ROUND_SECONDS = 0.25  # matmuls queued per device between two checks of the error counters
MINUTE = 60.0
RELATIVE_TOLERANCE = 0.0
TOLERANCE_BASIS = (
    "exact (relative tolerance 0): the same kernel on the same inputs, shape, device and thread count "
    "reproduces its result bit for bit, so every element that differs from the first result counts, "
    "NaN included"
)
# clock-event reasons that hold the clocks below what the load asks for
THROTTLE_REASONS = (
    "sw_power_cap",
    "hw_slowdown",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
)
# of those, the ones the health collector flags (the board pulling clocks down): the burn-in warns
WARN_REASONS = tuple(r for r in THROTTLE_REASONS if r in CLOCK_EVENT_STATUS)

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


def short_label(reason: str) -> str:
    """'SW power cap (at the power limit)' -> 'SW power cap'."""
    return CLOCK_EVENT_TEXT.get(reason, reason).split(" (")[0]


def summarize_clock_events(masks: Iterable[int | None]) -> dict:
    """Which clock-event reasons were active, and in what fraction of the samples.

    `masks`: NVML clock-event bitmasks, one per sample (None: that sample could not be read).
    """
    read = [int(m) for m in masks if m is not None]
    counts = Counter(name for mask in read for name in decode_clock_events(mask))
    reasons = {
        name: {"label": short_label(name), "samples": n, "fraction": round(n / len(read), 4)}
        for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    }
    throttling = [n for n in reasons if n in THROTTLE_REASONS]
    any_throttle = sum(1 for mask in read if any(n in THROTTLE_REASONS for n in decode_clock_events(mask)))
    if not read:
        summary = "clock-event reasons not sampled"
    elif throttling:
        summary = "throttled: " + ", ".join(
            f"{reasons[n]['label']} {reasons[n]['fraction']:.0%} of samples" for n in throttling
        )
    else:
        summary = f"not throttled ({len(read)} samples)"
    others = [f"{r['label']} {r['fraction']:.0%}" for n, r in reasons.items() if n not in THROTTLE_REASONS]
    if read and others:
        summary += f"; also {', '.join(others)} (not throttling)"
    return {
        "samples": len(read),
        "throttled": bool(throttling) if read else None,
        "throttled_samples_ratio": round(any_throttle / len(read), 4) if read else None,
        "hw_reasons": [n for n in throttling if n in WARN_REASONS],
        "reasons": reasons,
        "summary": summary,
    }


# --------------------------------------------------------------------------- sampling


@dataclass
class _Gpu:
    device: str  # torch device, "cuda:0"
    handle: object
    info: dict


class Sampler(threading.Thread):
    """Reads the devices once every `period` seconds until stopped; `take()` hands over new samples."""

    def __init__(self, devices: list[str], period: float = SAMPLE_SECONDS):
        super().__init__(name="burn-in-sampler", daemon=True)
        self.period = period
        self.t0 = time.perf_counter()
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._new: list[dict] = []
        self.all: list[dict] = []
        self.nvml = None
        self.gpus: list[_Gpu] = []
        self.source: str | None = None
        self.note = ""
        self.errors: dict[str, str] = {}
        gpus = [d for d in devices if d.startswith("cuda")]
        if gpus:
            self._open_nvml(gpus)
        else:
            self._open_psutil()

    # -- set-up

    def _open_nvml(self, devices: list[str]) -> None:
        try:
            import pynvml
        except ImportError as err:
            self.note = f"no NVML (nvidia-ml-py is not installed: {err}): GPU readings not sampled"
            return
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as err:  # an AMD GPU, or no NVIDIA driver library
            self.note = f"no NVML ({_error_name(err)}: {err}): GPU readings not sampled"
            return
        self.nvml = pynvml
        for device in devices:
            g = _Guard(pynvml)
            h = None
            for attempt in _nvml_lookups(device):
                h = g.get("handle", attempt)
                if h is not None:
                    break
            if h is None:
                why = g.errors.get("handle", "torch gives neither UUID nor PCI bus id")
                self.errors[device] = f"no NVML handle for {device} ({why})"
                continue
            name = g.get("name", ("nvmlDeviceGetName", h))
            limit = g.get("power_limit", ("nvmlDeviceGetEnforcedPowerLimit", h))
            slowdown = g.get(
                "temperature_slowdown",
                (
                    "nvmlDeviceGetTemperatureThreshold",
                    h,
                    getattr(pynvml, "NVML_TEMPERATURE_THRESHOLD_SLOWDOWN", 1),
                ),
            )
            index = g.get("index", ("nvmlDeviceGetIndex", h))
            self.gpus.append(
                _Gpu(
                    device,
                    h,
                    {
                        "nvml_index": index,
                        "name": name.decode() if isinstance(name, bytes) else name,
                        "power_limit_watts": round(limit / 1000, 3) if limit else None,
                        "temperature_slowdown_celsius": slowdown or None,
                        "unsupported": sorted(k for k in g.errors if k != "handle"),
                    },
                )
            )
        if self.gpus:
            self.source = "nvml"
            self.note = (
                f"NVML sampled every {self.period:g} s: temperature, power, SM clock, clock-event reasons"
            )
        else:
            self.note = "NVML is loaded but none of the GPUs could be matched to an NVML device"

    def _open_psutil(self) -> None:
        try:
            import psutil
        except ImportError:
            self.note = f"{CPU_NOTE}; psutil is not installed: nothing sampled"
            return
        self.psutil = psutil
        self.source = "psutil"
        self.note = (
            f"{CPU_NOTE}; CPU frequency and temperature (CPU readings) from psutil every {self.period:g} s "
            "where the machine exposes them"
        )

    # -- the thread

    def run(self) -> None:
        while not self._stop_event.is_set():
            sample = self.read()
            if sample is not None:
                with self._lock:
                    self._new.append(sample)
            self._stop_event.wait(self.period)

    def read(self) -> dict | None:
        if self.source is None:
            return None
        t = round(time.perf_counter() - self.t0, 3)
        if self.source == "psutil":
            return {"t": t, "cpu": _read_cpu(self.psutil)}
        return {"t": t, "gpus": {gpu.device: self._read_gpu(gpu) for gpu in self.gpus}}

    def _read_gpu(self, gpu: _Gpu) -> dict:
        nvml, h = self.nvml, gpu.handle
        g = _Guard(nvml)
        sensor = getattr(nvml, "NVML_TEMPERATURE_GPU", 0)
        temp = g.get(
            "temperature",
            ("nvmlDeviceGetTemperatureV", h, sensor),
            ("nvmlDeviceGetTemperature", h, sensor),
        )
        power = g.get("power", ("nvmlDeviceGetPowerUsage", h))
        clock = g.get("sm_clock", ("nvmlDeviceGetClockInfo", h, getattr(nvml, "NVML_CLOCK_SM", 1)))
        reasons = g.get(
            "clock_events",
            ("nvmlDeviceGetCurrentClocksEventReasons", h),
            ("nvmlDeviceGetCurrentClocksThrottleReasons", h),
        )
        with self._lock:  # the first failure of each query is kept; describe() reads it meanwhile
            for key, why in g.errors.items():
                self.errors.setdefault(f"{gpu.device}.{key}", why)
        return {
            "temperature_celsius": temp,
            "power_watts": round(power / 1000, 3) if power is not None else None,
            "sm_clock_mhz": clock,
            "clock_events": int(reasons) if reasons is not None else None,
        }

    def take(self) -> list[dict]:
        """The samples read since the last call (also kept in `all`)."""
        with self._lock:
            new, self._new = self._new, []
        self.all.extend(new)
        return new

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=5)
        self.take()
        if self.nvml is not None:
            with contextlib.suppress(self.nvml.NVMLError):
                self.nvml.nvmlShutdown()

    def describe(self) -> dict:
        return {
            "source": self.source,
            "available": self.source is not None,
            "period_seconds": self.period,
            "note": self.note,
            "samples": len(self.all),
            "gpus": {gpu.device: gpu.info for gpu in self.gpus},
            "errors": self._errors_copy(),
        }

    def _errors_copy(self) -> dict[str, str]:
        with self._lock:
            return dict(self.errors)


def _nvml_lookups(device: str) -> list[tuple]:
    """NVML handle lookups for a torch CUDA device, by UUID first, then PCI bus id. Not by index:
    CUDA_VISIBLE_DEVICES and torch's FASTEST_FIRST order make torch's index differ from NVML's."""
    import torch

    props = torch.cuda.get_device_properties(torch.device(device))
    lookups: list[tuple] = []
    uuid = getattr(props, "uuid", None)
    if uuid is not None:  # torch prints the UUID without NVML's "GPU-" prefix
        text = str(uuid)
        ids = [text] if text.startswith(("GPU-", "MIG-")) else [f"GPU-{text}", f"MIG-{text}"]
        lookups += [("nvmlDeviceGetHandleByUUID", i) for i in ids]
    bus = getattr(props, "pci_bus_id", None)
    if bus is not None:
        domain, dev = getattr(props, "pci_domain_id", 0), getattr(props, "pci_device_id", 0)
        lookups.append(("nvmlDeviceGetHandleByPciBusId", f"{domain:08x}:{bus:02x}:{dev:02x}.0"))
    return lookups


def _read_cpu(psutil) -> dict:
    """CPU readings from psutil; a field the machine does not expose stays None."""
    freq = temp = None
    try:
        f = psutil.cpu_freq()
        freq = round(f.current, 1) if f and f.current else None
    except (OSError, RuntimeError, AttributeError, NotImplementedError):
        pass
    try:
        sensors = psutil.sensors_temperatures() if hasattr(psutil, "sensors_temperatures") else {}
        readings = [t.current for entries in sensors.values() for t in entries if t.current]
        temp = max(readings) if readings else None
    except (OSError, RuntimeError, NotImplementedError):
        pass
    return {"cpu_frequency_mhz": freq, "cpu_temperature_celsius": temp}


def _gpu_stats(samples: list[dict], device: str) -> dict:
    """Aggregate NVML samples of one GPU: max temperature, mean/max power, SM clock, reasons."""
    rows = [s["gpus"][device] for s in samples if device in s.get("gpus", {})]

    def values(key):
        return [r[key] for r in rows if r.get(key) is not None]

    temps, powers, clocks = values("temperature_celsius"), values("power_watts"), values("sm_clock_mhz")
    masks = [r.get("clock_events") for r in rows]
    return {
        "samples": len(rows),
        "temperature_max_celsius": max(temps) if temps else None,
        "power_mean_watts": round(sum(powers) / len(powers), 3) if powers else None,
        "power_max_watts": max(powers) if powers else None,
        "sm_clock_min_mhz": min(clocks) if clocks else None,
        "sm_clock_mean_mhz": round(sum(clocks) / len(clocks), 1) if clocks else None,
        "clock_events": summarize_clock_events(masks),
    }


def _cpu_stats(samples: list[dict]) -> dict:
    rows = [s["cpu"] for s in samples if "cpu" in s]
    freqs = [r["cpu_frequency_mhz"] for r in rows if r.get("cpu_frequency_mhz") is not None]
    temps = [r["cpu_temperature_celsius"] for r in rows if r.get("cpu_temperature_celsius") is not None]
    return {
        "samples": len(rows),
        "cpu_frequency_mean_mhz": round(sum(freqs) / len(freqs), 1) if freqs else None,
        "cpu_frequency_min_mhz": min(freqs) if freqs else None,
        "cpu_temperature_max_celsius": max(temps) if temps else None,
    }


# --------------------------------------------------------------------------- the load


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
                stats = _gpu_stats(samples, d.name)
                stats["clock_events"] = {k: v["samples"] for k, v in stats["clock_events"]["reasons"].items()}
                row.update(stats)
            per_device[d.name] = row
        entry["devices"] = per_device
        if self.sampler.source == "psutil":
            entry["cpu"] = _cpu_stats(samples)
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
                stats = _gpu_stats(samples, d.name)
                entry.update(self.sampler.describe()["gpus"].get(d.name, {}))
                entry.update(stats)
                throttle[d.name] = stats["clock_events"]
            devices.append(entry)
        gpus = [e for e in devices if "samples" in e]
        if gpus:

            def worst(key, fn):
                vals = [e[key] for e in gpus if e.get(key) is not None]
                return fn(vals) if vals else None

            mhz = worst("sm_clock_min_mhz", min)
            mean_mhz = worst("sm_clock_mean_mhz", lambda v: sum(v) / len(v))
            ratios = [t["throttled_samples_ratio"] for t in throttle.values() if t["samples"]]
            m.update(
                temperature_max_celsius=worst("temperature_max_celsius", max),
                power_mean_watts=worst("power_mean_watts", max),
                power_max_watts=worst("power_max_watts", max),
                power_limit_watts=worst("power_limit_watts", min),
                sm_clock_min_hertz=mhz * 1e6 if mhz is not None else None,
                sm_clock_mean_hertz=round(mean_mhz * 1e6) if mean_mhz is not None else None,
                throttled_samples_ratio=max(ratios) if ratios else None,
            )
            for name in CLOCK_EVENT_REASONS.values():
                fractions = [
                    t["reasons"][name]["fraction"] for t in throttle.values() if name in t["reasons"]
                ]
                if fractions:
                    m[f"clock_event_{name}_ratio"] = max(fractions)
        elif self.sampler and self.sampler.source == "psutil":
            cpu = _cpu_stats(samples)
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


def judge(errors: int, throttle: dict[str, dict]) -> tuple[dict, dict]:
    """The burn-in's checks: (expected entries, throttle verdict).

    `throttle`: `summarize_clock_events` per device. Any differing element fails; HW slowdown, HW
    thermal, HW power brake or SW thermal slowdown in any sample warns; the SW power cap alone passes.
    """
    expected = {
        "errors_total": {
            "min": None,
            "max": 0,
            "basis": f"results compared with the first result of the same inputs, {TOLERANCE_BASIS}",
            "status": "fail" if errors else "pass",
        }
    }
    sampled = {dev: t for dev, t in throttle.items() if t["samples"]}
    if len(sampled) == 1:
        summary = next(iter(sampled.values()))["summary"]
    else:
        summary = "; ".join(f"{dev}: {t['summary']}" for dev, t in sampled.items())
    hw = sorted({r for t in sampled.values() for r in t["hw_reasons"]})
    if sampled:
        expected["throttled_samples_ratio"] = {
            "min": None,
            "basis": f"{summary}. NVML clock-event reasons: HW slowdown, HW thermal, HW power brake or "
            "SW thermal slowdown warn (cooling or power delivery); the SW power cap is normal at the "
            "power limit",
            "status": "warn" if hw else "pass",
        }
    verdict = {
        "throttled": any(t["throttled"] for t in sampled.values()) if sampled else None,
        "hw_reasons": hw,
        "summary": summary if sampled else "not sampled",
    }
    return expected, verdict


def summary_line(rec) -> str:
    """One line for the progress log: iterations, errors, sustained FLOP/s, temperature, power, throttle."""
    from toolkit.units import si

    m, b = rec.metrics, getattr(rec, "burn_in", {}) or {}
    parts = [f"{m.get('iterations_total', 0)} matmuls in {m.get('burn_in_seconds', 0):.0f} s"]
    parts.append(f"{m.get('errors_total', 0)} errors")
    if m.get("last_minute_flops_per_second"):
        ratio = m.get("sustained_flops_ratio")
        parts.append(
            f"last minute {si(m['last_minute_flops_per_second'], 'FLOP/s')}"
            + (f" ({ratio:.0%} of the first)" if ratio else "")
        )
    if m.get("temperature_max_celsius") is not None:
        parts.append(f"max {m['temperature_max_celsius']:g} °C")
    if m.get("power_max_watts") is not None:
        limit = m.get("power_limit_watts")
        parts.append(
            f"power mean {m.get('power_mean_watts') or 0:.0f} W, max {m['power_max_watts']:.0f} W"
            + (f" of {limit:.0f} W" if limit else "")
        )
    parts.append((b.get("throttle") or {}).get("summary") or "throttling not sampled: no NVML readings")
    return ", ".join(parts)


def run(
    ctx,
    duration: float,
    on_start: Callable[[str], None],
    on_done: Callable[[WorkloadRecord], None],
    on_interval: Callable[[WorkloadRecord], None],
) -> tuple[list[WorkloadRecord], bool]:
    """The burn-in as the run's only load; (records, interrupted) like `runner.run_loads`."""
    import gc
    import traceback

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
        rec.duration_seconds = round(time.perf_counter() - t0, 3)
        try:
            rec.metrics.update(memory.read())
            rec.notes.append(memory.note)
        except Exception as exc:  # memory stats are best effort after a crash
            rec.notes.append(f"peak memory unavailable: {exc}")
        rec.settle()
        burn.devices.clear()
        gc.collect()
    on_done(rec)
    return [rec], interrupted
