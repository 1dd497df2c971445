"""What the burn-in watches while it works: each GPU's temperature, power, SM clock and clock-event
("throttle") reasons through NVML, or the CPU's frequency and temperature through psutil, and the
aggregates of those readings.

A thread of its own, so the readings keep their one-second rhythm however long the matmul rounds take.
The NVML queries go through the health collector's guard: a query the driver or board does not support
leaves its field None and is named in `errors`, instead of stopping the sampler. This is the burn-in's
only module that reads NVML names from health (the guard, the error names and the clock-event reasons).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from toolkit.nvml import (
    CLOCK_EVENT_REASONS,
    CLOCK_EVENT_STATUS,
    CLOCK_EVENT_TEXT,
    NvmlGuard,
    decode_clock_events,
    error_name,
)

SAMPLE_SECONDS = 1.0
CPU_NOTE = (
    "fp32 matmul on the CPU: no NVML readings (GPU temperature, power, clocks and throttle reasons are "
    "not sampled)"
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
            self.note = f"no NVML ({error_name(err)}: {err}): GPU readings not sampled"
            return
        self.nvml = pynvml
        for device in devices:
            g = NvmlGuard(pynvml)
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
        g = NvmlGuard(nvml)
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


def gpu_stats(samples: list[dict], device: str) -> dict:
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


def cpu_stats(samples: list[dict]) -> dict:
    rows = [s["cpu"] for s in samples if "cpu" in s]
    freqs = [r["cpu_frequency_mhz"] for r in rows if r.get("cpu_frequency_mhz") is not None]
    temps = [r["cpu_temperature_celsius"] for r in rows if r.get("cpu_temperature_celsius") is not None]
    return {
        "samples": len(rows),
        "cpu_frequency_mean_mhz": round(sum(freqs) / len(freqs), 1) if freqs else None,
        "cpu_frequency_min_mhz": min(freqs) if freqs else None,
        "cpu_temperature_max_celsius": max(temps) if temps else None,
    }


def gpu_metrics(gpus: list[dict], throttle: dict[str, dict]) -> dict:
    """The run's temperature, power, clock and throttle metrics from the per-GPU entries: the worst
    GPU's, so one bad board does not hide behind healthy ones (the mean SM clock is the mean over GPUs).

    `gpus`: the devices' entries holding `gpu_stats`; `throttle`: `summarize_clock_events` per device.
    """

    def worst(key, fn):
        vals = [e[key] for e in gpus if e.get(key) is not None]
        return fn(vals) if vals else None

    mhz = worst("sm_clock_min_mhz", min)
    mean_mhz = worst("sm_clock_mean_mhz", lambda v: sum(v) / len(v))
    ratios = [t["throttled_samples_ratio"] for t in throttle.values() if t["samples"]]
    m = {
        "temperature_max_celsius": worst("temperature_max_celsius", max),
        "power_mean_watts": worst("power_mean_watts", max),
        "power_max_watts": worst("power_max_watts", max),
        "power_limit_watts": worst("power_limit_watts", min),
        "sm_clock_min_hertz": mhz * 1e6 if mhz is not None else None,
        "sm_clock_mean_hertz": round(mean_mhz * 1e6) if mean_mhz is not None else None,
        "throttled_samples_ratio": max(ratios) if ratios else None,
    }
    for name in CLOCK_EVENT_REASONS.values():
        fractions = [t["reasons"][name]["fraction"] for t in throttle.values() if name in t["reasons"]]
        if fractions:
            m[f"clock_event_{name}_ratio"] = max(fractions)
    return m
