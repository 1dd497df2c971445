"""NVIDIA GPUs through NVML: `read_nvml()` takes a raw, JSON-serialisable snapshot; `checks_from_nvml()`
judges it with the rules below, as a pure function, so the rules are tested on recorded snapshots.

Every NVML query is guarded on its own: a query the GPU, the driver or nvidia-ml-py does not support
(NotSupported, FunctionNotFound, NoPermission, a GPU fallen off the bus...) leaves its field None and
names the field in the GPU's `unsupported` list (`errors` maps it to the NVML error). A None field is
reported with value None and "not supported", never as a number.

Rules (check names carry the NVML index: `gpu0.temperature`):

- no driver / no libnvidia-ml: one check `gpu.nvidia`, OK when no GPUs are expected, CRITICAL when
  `expect_gpus` > 0; the collector is down (`up` False).
- `gpu.count`: CRITICAL when fewer GPUs are visible than `expect_gpus` ("expected N, found M").
- `gpu.driver`: OK, value the driver version, detail the CUDA version the driver supports.
- `gpuN.device`: only when a GPU answers GpuIsLost / ResetRequired / has no handle: CRITICAL.
- `gpuN.temperature`: WARNING from the GPU's slowdown threshold − 5 °C, CRITICAL from the slowdown
  threshold itself (defaults 83 / 90 °C when NVML gives no threshold); `thresholds` keys
  `temperature_warning_c` / `temperature_critical_c` override both.
- `gpuN.power`, `gpuN.memory`, `gpuN.utilization`, `gpuN.clocks`, `gpuN.fan`: measurements, OK.
- `gpuN.clock_events`: an active HW slowdown, HW thermal slowdown or HW power brake is CRITICAL (the
  board itself is pulling clocks down: cooling, PSU or power cable trouble); SW thermal slowdown is
  WARNING; SW power cap, idle, application clocks, sync boost and display clock are normal (OK).
- `gpuN.ecc`: volatile (since driver load) uncorrected errors > 0 CRITICAL; aggregate (lifetime)
  uncorrected > 0 WARNING; corrected only: OK with the count. ECC disabled: OK, said in the detail.
- `gpuN.row_remapping` (Ampere and later, where NVML reports remapped rows): a pending remap is
  WARNING ("reset the GPU to remap"), a remapping failure CRITICAL. Older GPUs get
  `gpuN.retired_pages` instead: pending retirement WARNING ("reset the GPU to retire"), and WARNING at
  60 or more retired pages (NVIDIA's replacement guidance for page retirement).
- `gpuN.pcie`: current width below max width is WARNING ("link degraded x8 of x16") at any load; a
  generation below max is WARNING only while the GPU is busy (utilization > 0 and NVML not reporting
  the idle clock event) — at idle a lower generation is normal power saving (OK). A slot slower than
  the GPU (`GpuMaxPcieLinkGeneration` above `MaxPcieLinkGeneration`) is said in the detail, OK.
- `gpuN.persistence`: off is WARNING on Linux ("enable nvidia-persistenced"); elsewhere OK.

A summary check (`gpuN.ecc`, `gpuN.clock_events`, `gpuN.pcie`, `gpuN.row_remapping`,
`gpuN.retired_pages`) carries the verdict and no metric; the series behind it are exported by checks
named `<summary>.<series>` (`gpu0.ecc.volatile_uncorrected`), which are always OK so that one fault
is not alerted twice. `gpuN.power.limit`, `gpuN.memory.total` and `gpuN.clocks.memory` export the
second series of a measurement the same way.

Metrics (base units, labels gpu, name, uuid): toolkit_gpu_temperature_celsius, toolkit_gpu_power_watts,
toolkit_gpu_power_limit_watts, toolkit_gpu_memory_used_bytes, toolkit_gpu_memory_total_bytes,
toolkit_gpu_utilization_ratio, toolkit_gpu_sm_clock_hertz, toolkit_gpu_memory_clock_hertz,
toolkit_gpu_clock_event_active{reason}, toolkit_gpu_ecc_errors_total{type,scope},
toolkit_gpu_remapped_rows_total{type}, toolkit_gpu_row_remap_pending, toolkit_gpu_row_remap_failure,
toolkit_gpu_retired_pages_total{cause}, toolkit_gpu_retired_pages_pending, toolkit_gpu_pcie_link_width,
toolkit_gpu_pcie_link_width_max, toolkit_gpu_pcie_link_generation, toolkit_gpu_pcie_link_generation_max,
toolkit_gpu_persistence_mode, toolkit_gpu_fan_speed_ratio, toolkit_gpu_count,
toolkit_gpu_driver_info{driver_version,cuda_version}.

`python -m toolkit.health.collectors.gpu_nvidia` prints a snapshot: the way to record a fixture.
"""

from __future__ import annotations

import contextlib
import json
import platform
from typing import Any

from toolkit.health.model import Check, CollectorResult, Status

COLLECTOR = "gpu"

DEFAULT_WARNING_C = 83.0
DEFAULT_CRITICAL_C = 90.0
SLOWDOWN_MARGIN_C = 5.0
RETIRED_PAGES_LIMIT = 60  # NVIDIA: a board with 60+ retired pages qualifies for replacement

# nvmlClocksEventReason* bits (same values as the older nvmlClocksThrottleReason* names)
CLOCK_EVENT_REASONS: dict[int, str] = {
    0x001: "gpu_idle",
    0x002: "applications_clocks_setting",
    0x004: "sw_power_cap",
    0x008: "hw_slowdown",
    0x010: "sync_boost",
    0x020: "sw_thermal_slowdown",
    0x040: "hw_thermal_slowdown",
    0x080: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
CLOCK_EVENT_STATUS: dict[str, Status] = {
    "hw_slowdown": Status.CRITICAL,
    "hw_thermal_slowdown": Status.CRITICAL,
    "hw_power_brake_slowdown": Status.CRITICAL,
    "sw_thermal_slowdown": Status.WARNING,
}
CLOCK_EVENT_TEXT: dict[str, str] = {
    "gpu_idle": "idle",
    "applications_clocks_setting": "application clocks setting",
    "sw_power_cap": "SW power cap (at the power limit)",
    "hw_slowdown": "HW slowdown",
    "sync_boost": "sync boost",
    "sw_thermal_slowdown": "SW thermal slowdown",
    "hw_thermal_slowdown": "HW thermal slowdown",
    "hw_power_brake_slowdown": "HW power brake slowdown",
    "display_clock_setting": "display clock setting",
}
LOST_ERRORS = {"GpuIsLost", "ResetRequired"}

# every key of one GPU in a snapshot, so recorded fixtures can be held to the reader's shape
GPU_FIELDS = (
    "index", "name", "uuid", "pci_bus_id",
    "temperature_c", "temperature_slowdown_c", "temperature_shutdown_c",
    "temperature_gpu_max_c", "temperature_memory_max_c",
    "power_w", "power_limit_w",
    "memory_total_bytes", "memory_used_bytes", "memory_reserved_bytes",
    "utilization_gpu_percent", "utilization_memory_percent",
    "sm_clock_mhz", "mem_clock_mhz", "sm_clock_max_mhz", "mem_clock_max_mhz", "performance_state",
    "clocks_event_reasons", "clocks_event_reasons_decoded",
    "ecc_mode_current", "ecc_mode_pending",
    "ecc_corrected_volatile", "ecc_corrected_aggregate",
    "ecc_uncorrected_volatile", "ecc_uncorrected_aggregate",
    "retired_pages_single_bit", "retired_pages_double_bit", "retired_pages_pending",
    "remapped_rows_correctable", "remapped_rows_uncorrectable",
    "remapped_rows_pending", "remapped_rows_failure",
    "pcie_link_gen_current", "pcie_link_gen_max", "pcie_link_gen_gpu_max",
    "pcie_link_width_current", "pcie_link_width_max",
    "persistence_mode", "fan_speed_percent",
    "unsupported", "errors",
)  # fmt: skip


# --------------------------------------------------------------------------- reading


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def _error_name(err: Exception) -> str:
    name = type(err).__name__
    return name.removeprefix("NVMLError_") if name != "NVMLError" else f"NVMLError({err})"


class _Guard:
    """Runs each NVML query on its own; a failure leaves the field None and is recorded."""

    def __init__(self, nvml):
        self.nvml = nvml
        self.errors: dict[str, str] = {}

    def get(self, field: str, *attempts: tuple):
        """`attempts`: (function name, *args) tried in order (new NVML name first, then the old one)."""
        last = "not attempted"
        for name, *args in attempts:
            fn = getattr(self.nvml, name, None)
            if fn is None:  # an older nvidia-ml-py without this binding
                last = f"FunctionNotFound ({name} not in nvidia-ml-py)"
                continue
            try:
                return fn(*args)
            except self.nvml.NVMLError as err:
                last = _error_name(err)
            except Exception as err:  # a binding that does not fit this driver must not sink the rest
                last = f"{type(err).__name__}: {err}"
        self.errors[field] = last
        return None


def _read_gpu(nvml, index: int) -> dict:
    gpu: dict[str, Any] = {"index": index}
    g = _Guard(nvml)
    h = g.get("handle", ("nvmlDeviceGetHandleByIndex", index))
    if h is None:  # every other field stays None; the rules report the GPU as unreadable
        unreadable = dict.fromkeys(GPU_FIELDS)
        unreadable.update(index=index, unsupported=["handle"], errors=g.errors)
        return unreadable

    name = g.get("name", ("nvmlDeviceGetName", h))
    uuid = g.get("uuid", ("nvmlDeviceGetUUID", h))
    pci = g.get("pci_bus_id", ("nvmlDeviceGetPciInfo", h))
    gpu["name"] = _text(name) if name is not None else None
    gpu["uuid"] = _text(uuid) if uuid is not None else None
    gpu["pci_bus_id"] = _text(pci.busId) if pci is not None else None

    sensor = getattr(nvml, "NVML_TEMPERATURE_GPU", 0)
    gpu["temperature_c"] = g.get(
        "temperature_c",
        ("nvmlDeviceGetTemperatureV", h, sensor),
        ("nvmlDeviceGetTemperature", h, sensor),
    )
    for field, const, default in (
        ("temperature_slowdown_c", "NVML_TEMPERATURE_THRESHOLD_SLOWDOWN", 1),
        ("temperature_shutdown_c", "NVML_TEMPERATURE_THRESHOLD_SHUTDOWN", 0),
        ("temperature_gpu_max_c", "NVML_TEMPERATURE_THRESHOLD_GPU_MAX", 3),
        ("temperature_memory_max_c", "NVML_TEMPERATURE_THRESHOLD_MEM_MAX", 2),
    ):
        value = g.get(field, ("nvmlDeviceGetTemperatureThreshold", h, getattr(nvml, const, default)))
        gpu[field] = value or None  # 0 means "no threshold" on some boards

    power = g.get("power_w", ("nvmlDeviceGetPowerUsage", h))
    gpu["power_w"] = round(power / 1000, 3) if power is not None else None
    limit = g.get("power_limit_w", ("nvmlDeviceGetEnforcedPowerLimit", h))
    gpu["power_limit_w"] = round(limit / 1000, 3) if limit is not None else None

    # v2 separates the driver's reserved memory from "used"; drivers before r510 only have v1
    mem = g.get(
        "memory",
        ("nvmlDeviceGetMemoryInfo", h, getattr(nvml, "nvmlMemory_v2", None)),
        ("nvmlDeviceGetMemoryInfo", h),
    )
    gpu["memory_total_bytes"] = int(mem.total) if mem is not None else None
    gpu["memory_used_bytes"] = int(mem.used) if mem is not None else None
    reserved = getattr(mem, "reserved", None)  # v2 only
    gpu["memory_reserved_bytes"] = int(reserved) if reserved is not None else None

    util = g.get("utilization", ("nvmlDeviceGetUtilizationRates", h))
    gpu["utilization_gpu_percent"] = int(util.gpu) if util is not None else None
    gpu["utilization_memory_percent"] = int(util.memory) if util is not None else None

    clock_sm = getattr(nvml, "NVML_CLOCK_SM", 1)
    clock_mem = getattr(nvml, "NVML_CLOCK_MEM", 2)
    gpu["sm_clock_mhz"] = g.get("sm_clock_mhz", ("nvmlDeviceGetClockInfo", h, clock_sm))
    gpu["mem_clock_mhz"] = g.get("mem_clock_mhz", ("nvmlDeviceGetClockInfo", h, clock_mem))
    gpu["sm_clock_max_mhz"] = g.get("sm_clock_max_mhz", ("nvmlDeviceGetMaxClockInfo", h, clock_sm))
    gpu["mem_clock_max_mhz"] = g.get("mem_clock_max_mhz", ("nvmlDeviceGetMaxClockInfo", h, clock_mem))
    gpu["performance_state"] = g.get("performance_state", ("nvmlDeviceGetPerformanceState", h))

    reasons = g.get(
        "clocks_event_reasons",
        ("nvmlDeviceGetCurrentClocksEventReasons", h),  # r535 and later
        ("nvmlDeviceGetCurrentClocksThrottleReasons", h),
    )
    gpu["clocks_event_reasons"] = int(reasons) if reasons is not None else None
    gpu["clocks_event_reasons_decoded"] = decode_clock_events(reasons) if reasons is not None else None

    ecc = g.get("ecc_mode", ("nvmlDeviceGetEccMode", h))
    gpu["ecc_mode_current"] = bool(ecc[0]) if ecc is not None else None
    gpu["ecc_mode_pending"] = bool(ecc[1]) if ecc is not None else None
    for kind, err_const, err_default in (
        ("corrected", "NVML_MEMORY_ERROR_TYPE_CORRECTED", 0),
        ("uncorrected", "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1),
    ):
        for scope, cnt_const, cnt_default in (
            ("volatile", "NVML_VOLATILE_ECC", 0),
            ("aggregate", "NVML_AGGREGATE_ECC", 1),
        ):
            field = f"ecc_{kind}_{scope}"
            gpu[field] = g.get(
                field,
                (
                    "nvmlDeviceGetTotalEccErrors",
                    h,
                    getattr(nvml, err_const, err_default),
                    getattr(nvml, cnt_const, cnt_default),
                ),
            )

    for field, const, default in (
        ("retired_pages_single_bit", "NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS", 0),
        ("retired_pages_double_bit", "NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR", 1),
    ):
        pages = g.get(field, ("nvmlDeviceGetRetiredPages", h, getattr(nvml, const, default)))
        gpu[field] = len(pages) if pages is not None else None
    pending = g.get("retired_pages_pending", ("nvmlDeviceGetRetiredPagesPendingStatus", h))
    gpu["retired_pages_pending"] = bool(pending) if pending is not None else None

    rows = g.get("remapped_rows", ("nvmlDeviceGetRemappedRows", h))
    gpu["remapped_rows_correctable"] = int(rows[0]) if rows is not None else None
    gpu["remapped_rows_uncorrectable"] = int(rows[1]) if rows is not None else None
    gpu["remapped_rows_pending"] = bool(rows[2]) if rows is not None else None
    gpu["remapped_rows_failure"] = bool(rows[3]) if rows is not None else None

    # MaxPcieLinkGeneration is what this GPU *in this system* can reach; GpuMax is the GPU's own
    gpu["pcie_link_gen_current"] = g.get("pcie_link_gen_current", ("nvmlDeviceGetCurrPcieLinkGeneration", h))
    gpu["pcie_link_gen_max"] = g.get("pcie_link_gen_max", ("nvmlDeviceGetMaxPcieLinkGeneration", h))
    gpu["pcie_link_gen_gpu_max"] = g.get(
        "pcie_link_gen_gpu_max", ("nvmlDeviceGetGpuMaxPcieLinkGeneration", h)
    )
    gpu["pcie_link_width_current"] = g.get("pcie_link_width_current", ("nvmlDeviceGetCurrPcieLinkWidth", h))
    gpu["pcie_link_width_max"] = g.get("pcie_link_width_max", ("nvmlDeviceGetMaxPcieLinkWidth", h))

    persistence = g.get("persistence_mode", ("nvmlDeviceGetPersistenceMode", h))
    gpu["persistence_mode"] = bool(persistence) if persistence is not None else None
    gpu["fan_speed_percent"] = g.get("fan_speed_percent", ("nvmlDeviceGetFanSpeed", h))

    gpu["unsupported"] = sorted(g.errors)
    gpu["errors"] = g.errors
    return {field: gpu.get(field) for field in GPU_FIELDS}


def read_nvml() -> dict:
    """A raw snapshot of every NVIDIA GPU; {"available": False, "error": ...} without a driver."""
    try:
        import pynvml
    except ImportError as err:
        return {"available": False, "source": "nvml", "error": f"nvidia-ml-py is not installed ({err})"}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:  # LibraryNotFound, DriverNotLoaded, ...: the CPU-only machine
        return {"available": False, "source": "nvml", "error": f"{_error_name(err)}: {err}"}
    try:
        g = _Guard(pynvml)
        driver = g.get("driver_version", ("nvmlSystemGetDriverVersion",))
        cuda = g.get(
            "cuda_driver_version",
            ("nvmlSystemGetCudaDriverVersion_v2",),
            ("nvmlSystemGetCudaDriverVersion",),
        )
        nvml_version = g.get("nvml_version", ("nvmlSystemGetNVMLVersion",))
        count = g.get("gpu_count", ("nvmlDeviceGetCount",))
        return {
            "available": True,
            "source": "nvml",
            "os": platform.system(),
            "driver_version": _text(driver) if driver is not None else None,
            "cuda_driver_version": f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else None,
            "nvml_version": _text(nvml_version) if nvml_version is not None else None,
            "gpu_count": count,
            "gpus": [_read_gpu(pynvml, i) for i in range(count or 0)],
            "errors": g.errors,
        }
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def decode_clock_events(mask: int) -> list[str]:
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    unknown = mask & ~sum(CLOCK_EVENT_REASONS)
    if unknown:
        names.append(f"unknown_{unknown:#x}")
    return names


# --------------------------------------------------------------------------- rules


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def fmt_number(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def add(
    result: CollectorResult,
    name: str,
    status: Status,
    value: Any = None,
    unit: str | None = None,
    detail: str = "",
    metric: str | None = None,
    prom_value: float | None = None,
    labels: dict | None = None,
    **more: str,
) -> Check:
    """`CollectorResult.add` with the labels as a dict: a `name` label would clash with its argument."""
    check = result.add(name, status, value, unit, detail, metric, prom_value)
    check.labels = {k: str(v) for k, v in {**(labels or {}), **more}.items()}
    return check


def report_no_driver(result: CollectorResult, check: str, missing: str, error: str, expect_gpus: int | None):
    """`missing` says what is absent ("no NVIDIA driver"); the collector is down either way."""
    result.up = False
    result.detail = f"{missing} ({error})"
    if expect_gpus:
        detail = f"expected {expect_gpus} GPU(s), but {missing} ({error})"
        add(result, check, Status.CRITICAL, detail=detail)
    else:
        add(result, check, Status.OK, detail=result.detail)


def temperature_limits(
    slowdown: float | None, thresholds: dict | None, default_warning: float, default_critical: float
) -> tuple[float, float, str]:
    """(warning, critical, where the critical level comes from)."""
    t = thresholds or {}
    if slowdown:
        warning, critical, source = slowdown - SLOWDOWN_MARGIN_C, float(slowdown), "slowdown threshold"
    else:
        warning, critical, source = default_warning, default_critical, "default limit"
    if t.get("temperature_warning_c") is not None:
        warning = float(t["temperature_warning_c"])
    if t.get("temperature_critical_c") is not None:
        critical, source = float(t["temperature_critical_c"]), "configured limit"
    return warning, critical, source


def _temperature(result: CollectorResult, prefix: str, gpu: dict, thresholds: dict | None, labels: dict):
    temp = gpu.get("temperature_c")
    slowdown, shutdown = gpu.get("temperature_slowdown_c"), gpu.get("temperature_shutdown_c")
    warning, critical, source = temperature_limits(
        slowdown, thresholds, DEFAULT_WARNING_C, DEFAULT_CRITICAL_C
    )
    limits = f"warning at {fmt_number(warning)} °C, critical at {fmt_number(critical)} °C ({source})"
    if shutdown:
        limits += f", shutdown at {fmt_number(shutdown)} °C"
    if temp is None:
        status, detail = Status.OK, "temperature not supported"
    elif temp >= critical:
        status, detail = Status.CRITICAL, f"{fmt_number(temp)} °C: at or above the {source}; {limits}"
    elif temp >= warning:
        status, detail = Status.WARNING, f"{fmt_number(temp)} °C: near the {source}; {limits}"
    else:
        status, detail = Status.OK, limits
    add(
        result,
        f"{prefix}.temperature",
        status,
        temp,
        "°C",
        detail,
        "toolkit_gpu_temperature_celsius",
        labels=labels,
    )


def power_checks(
    result: CollectorResult,
    prefix: str,
    gpu: dict,
    labels: dict,
    limit_name="enforced power limit",
    source: str | None = None,
):
    """Power draw and limit (shared with the AMD collector, which names its limit "power cap")."""
    power, limit = gpu.get("power_w"), gpu.get("power_limit_w")
    if power is None:
        detail = "power draw not supported"
    elif limit:
        detail = f"{power:.0f} W of {limit:.0f} W limit ({100 * power / limit:.0f}%)"
    else:
        detail = f"{power:.0f} W (power limit not supported)"
    if power is not None and source:
        detail += f"; {source.replace('_', ' ')}"
    add(result, f"{prefix}.power", Status.OK, power, "W", detail, "toolkit_gpu_power_watts", labels=labels)
    add(
        result,
        f"{prefix}.power.limit",
        Status.OK,
        limit,
        "W",
        limit_name if limit is not None else "power limit not supported",
        "toolkit_gpu_power_limit_watts",
        labels=labels,
    )


def memory_checks(
    result: CollectorResult,
    prefix: str,
    gpu: dict,
    labels: dict,
    noun: str = "memory",
    total_note: str = "visible to applications",
):
    """Memory used and total (shared with the AMD collector, which says VRAM)."""
    used, total = gpu.get("memory_used_bytes"), gpu.get("memory_total_bytes")
    which = "" if noun == "memory" else f"{noun} "
    if used is None:
        detail = f"{noun} usage not supported"
    elif total:
        detail = f"{gib(used)} of {gib(total)} {which}used ({100 * used / total:.0f}%)"
    else:
        detail = f"{gib(used)} {which}used"
    add(
        result,
        f"{prefix}.memory",
        Status.OK,
        used,
        "bytes",
        detail,
        "toolkit_gpu_memory_used_bytes",
        labels=labels,
    )
    add(
        result,
        f"{prefix}.memory.total",
        Status.OK,
        total,
        "bytes",
        f"{gib(total)} {total_note}" if total is not None else f"{noun} size not supported",
        "toolkit_gpu_memory_total_bytes",
        labels=labels,
    )


def _utilization(result: CollectorResult, prefix: str, gpu: dict, labels: dict):
    util, mem = gpu.get("utilization_gpu_percent"), gpu.get("utilization_memory_percent")
    if util is None:
        detail = "utilisation not supported"
    else:
        detail = f"GPU busy {util}% of the last sample period, memory controller {mem}%"
    add(
        result,
        f"{prefix}.utilization",
        Status.OK,
        util,
        "%",
        detail,
        "toolkit_gpu_utilization_ratio",
        util / 100 if util is not None else None,
        labels=labels,
    )


def _clocks(result: CollectorResult, prefix: str, gpu: dict, labels: dict):
    sm, sm_max, mem = gpu.get("sm_clock_mhz"), gpu.get("sm_clock_max_mhz"), gpu.get("mem_clock_mhz")
    if sm is None:
        detail = "SM clock not supported"
    else:
        detail = f"SM {sm} MHz" + (f" of {sm_max} MHz max" if sm_max else "")
    if mem is not None:
        detail += f", memory {mem} MHz"
    if gpu.get("performance_state") in range(16):  # 32 is NVML's "unknown"
        detail += f", P{gpu['performance_state']}"
    add(
        result,
        f"{prefix}.clocks",
        Status.OK,
        sm,
        "MHz",
        detail,
        "toolkit_gpu_sm_clock_hertz",
        sm * 1e6 if sm is not None else None,
        labels=labels,
    )
    add(
        result,
        f"{prefix}.clocks.memory",
        Status.OK,
        mem,
        "MHz",
        "memory clock" if mem is not None else "memory clock not supported",
        "toolkit_gpu_memory_clock_hertz",
        mem * 1e6 if mem is not None else None,
        labels=labels,
    )


def _clock_events(result: CollectorResult, prefix: str, gpu: dict, labels: dict):
    mask = gpu.get("clocks_event_reasons")
    if mask is None:
        detail = "clock event reasons not supported"
        add(result, f"{prefix}.clock_events", Status.OK, None, None, detail, None, labels=labels)
        return
    active = decode_clock_events(mask)
    status = Status.OK
    for name in active:
        level = CLOCK_EVENT_STATUS.get(name, Status.OK)
        if level.severity > status.severity:
            status = level
    bad = [CLOCK_EVENT_TEXT[n] for n in active if n in CLOCK_EVENT_STATUS]
    normal = [CLOCK_EVENT_TEXT.get(n, n) for n in active if n not in CLOCK_EVENT_STATUS]
    if bad:
        detail = f"{', '.join(bad)} active: clocks held down by the board (cooling or power delivery)"
        if normal:
            detail += f"; also {', '.join(normal)}"
    elif normal:
        detail = f"{', '.join(normal)} (normal)"
    else:
        detail = "no clock event: running at full clocks"
    add(
        result,
        f"{prefix}.clock_events",
        status,
        ", ".join(active) or "none",
        None,
        detail,
        None,
        labels=labels,
    )
    for bit, name in CLOCK_EVENT_REASONS.items():
        add(
            result,
            f"{prefix}.clock_events.{name}",
            Status.OK,
            1 if mask & bit else 0,
            None,
            f"{CLOCK_EVENT_TEXT[name]} {'active' if mask & bit else 'inactive'}",
            "toolkit_gpu_clock_event_active",
            reason=name,
            labels=labels,
        )


def _ecc(result: CollectorResult, prefix: str, gpu: dict, labels: dict):
    counts = {
        (kind, scope): gpu.get(f"ecc_{kind}_{scope}")
        for kind in ("corrected", "uncorrected")
        for scope in ("volatile", "aggregate")
    }
    mode, pending = gpu.get("ecc_mode_current"), gpu.get("ecc_mode_pending")
    vol_unc, agg_unc = counts["uncorrected", "volatile"], counts["uncorrected", "aggregate"]
    corrected = counts["corrected", "aggregate"]
    if corrected is None:
        corrected = counts["corrected", "volatile"]
    if vol_unc:
        status = Status.CRITICAL
        detail = f"{vol_unc} uncorrectable ECC error(s) since the driver loaded: drain the GPU and reset it"
    elif agg_unc:
        status = Status.WARNING
        detail = f"{agg_unc} uncorrectable ECC error(s) in the GPU's lifetime (none since the driver loaded)"
    elif all(v is None for v in counts.values()):
        status = Status.OK
        detail = "ECC disabled" if mode is False else "ECC error counters not supported"
    else:
        status = Status.OK
        detail = f"no uncorrectable ECC errors, {corrected or 0} corrected"
    if pending is not None and mode is not None and pending != mode:
        detail += f"; ECC {'enable' if pending else 'disable'} pending a reboot"
    value = None if mode is None else ("enabled" if mode else "disabled")
    add(result, f"{prefix}.ecc", status, value, None, detail, None, labels=labels)
    for (kind, scope), count in counts.items():
        add(
            result,
            f"{prefix}.ecc.{scope}_{kind}",
            Status.OK,
            count,
            None,
            f"{kind} ECC errors, {scope}" if count is not None else "not supported",
            "toolkit_gpu_ecc_errors_total",
            type=kind,
            scope=scope,
            labels=labels,
        )


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _row_remapping(result: CollectorResult, prefix: str, gpu: dict, labels: dict):
    corr, unc = gpu.get("remapped_rows_correctable"), gpu.get("remapped_rows_uncorrectable")
    pending, failure = gpu.get("remapped_rows_pending"), gpu.get("remapped_rows_failure")
    counts = f"{corr or 0} row(s) remapped for correctable, {unc or 0} for uncorrectable errors"
    if failure:
        status, value = Status.CRITICAL, "failure"
        detail = f"row remapping failed: no spare rows left; replace the GPU ({counts})"
    elif pending:
        status, value = Status.WARNING, "pending"
        detail = f"a row remap is pending: reset the GPU to remap ({counts})"
    else:
        status, value = Status.OK, "ok"
        detail = counts
    add(result, f"{prefix}.row_remapping", status, value, None, detail, None, labels=labels)
    for kind, count in (("correctable", corr), ("uncorrectable", unc)):
        add(
            result,
            f"{prefix}.row_remapping.{kind}",
            Status.OK,
            count,
            None,
            f"rows remapped for {kind} errors",
            "toolkit_gpu_remapped_rows_total",
            type=kind,
            labels=labels,
        )
    add(
        result,
        f"{prefix}.row_remapping.pending",
        Status.OK,
        _flag(pending),
        None,
        "remap pending a GPU reset",
        "toolkit_gpu_row_remap_pending",
        labels=labels,
    )
    add(
        result,
        f"{prefix}.row_remapping.failure",
        Status.OK,
        _flag(failure),
        None,
        "remapping failure occurred",
        "toolkit_gpu_row_remap_failure",
        labels=labels,
    )


def _retired_pages(result: CollectorResult, prefix: str, gpu: dict, labels: dict):
    sbe, dbe = gpu.get("retired_pages_single_bit"), gpu.get("retired_pages_double_bit")
    pending = gpu.get("retired_pages_pending")
    if sbe is None and dbe is None and pending is None:
        add(
            result,
            f"{prefix}.retired_pages",
            Status.OK,
            None,
            None,
            "not supported (neither page retirement nor row remapping)",
            None,
            labels=labels,
        )
        return
    total = (sbe or 0) + (dbe or 0)
    counts = f"{total} page(s) retired ({sbe or 0} for single-bit, {dbe or 0} for double-bit errors)"
    if pending:
        status, detail = Status.WARNING, f"a page retirement is pending: reset the GPU to retire; {counts}"
    elif total >= RETIRED_PAGES_LIMIT:
        status, detail = Status.WARNING, f"{counts}: at NVIDIA's replacement threshold of 60"
    else:
        status, detail = Status.OK, counts
    add(result, f"{prefix}.retired_pages", status, total, None, detail, None, labels=labels)
    for cause, count in (("single_bit_ecc", sbe), ("double_bit_ecc", dbe)):
        add(
            result,
            f"{prefix}.retired_pages.{cause}",
            Status.OK,
            count,
            None,
            f"pages retired for {cause.replace('_', ' ')} errors" if count is not None else "not supported",
            "toolkit_gpu_retired_pages_total",
            cause=cause,
            labels=labels,
        )
    add(
        result,
        f"{prefix}.retired_pages.pending",
        Status.OK,
        _flag(pending),
        None,
        "retirement pending a GPU reset" if pending is not None else "not supported",
        "toolkit_gpu_retired_pages_pending",
        labels=labels,
    )


def _busy(gpu: dict) -> bool | None:
    util = gpu.get("utilization_gpu_percent")
    if util is None:
        return None
    idle = "gpu_idle" in (gpu.get("clocks_event_reasons_decoded") or [])
    return util > 0 and not idle


def _pcie(result: CollectorResult, prefix: str, gpu: dict, labels: dict):
    gen, gen_max = gpu.get("pcie_link_gen_current"), gpu.get("pcie_link_gen_max")
    width, width_max = gpu.get("pcie_link_width_current"), gpu.get("pcie_link_width_max")
    gpu_gen_max = gpu.get("pcie_link_gen_gpu_max")
    status, notes = Status.OK, []
    if width is not None and width_max and width < width_max:
        status = Status.WARNING
        notes.append(f"link degraded x{width} of x{width_max} (reseat the GPU or riser, check the slot)")
    if gen is not None and gen_max and gen < gen_max:
        busy = _busy(gpu)
        if busy:
            status = Status.WARNING
            notes.append(
                f"link at gen{gen} of gen{gen_max} while the GPU is busy "
                f"({gpu.get('utilization_gpu_percent')}%)"
            )
        elif busy is False:
            notes.append(f"gen{gen} of gen{gen_max} at idle (normal power saving)")
        else:
            notes.append(f"gen{gen} of gen{gen_max} (utilisation unknown: cannot tell idle from degraded)")
    if gpu_gen_max and gen_max and gpu_gen_max > gen_max:
        notes.append(f"the slot limits the link to gen{gen_max}; the GPU supports gen{gpu_gen_max}")
    if gen is None and width is None:
        value, detail = None, "PCIe link state not supported"
    else:
        value = f"gen{gen} x{width}"
        detail = "; ".join(notes) or f"gen{gen} x{width}, as fast as the slot allows"
    add(result, f"{prefix}.pcie", status, value, None, detail, None, labels=labels)
    for series, v, metric in (
        ("width", width, "toolkit_gpu_pcie_link_width"),
        ("width_max", width_max, "toolkit_gpu_pcie_link_width_max"),
        ("generation", gen, "toolkit_gpu_pcie_link_generation"),
        ("generation_max", gen_max, "toolkit_gpu_pcie_link_generation_max"),
    ):
        add(
            result,
            f"{prefix}.pcie.{series}",
            Status.OK,
            v,
            None,
            f"PCIe link {series.replace('_', ' ')}" if v is not None else "not supported",
            metric,
            labels=labels,
        )


def _persistence(result: CollectorResult, prefix: str, gpu: dict, os_name: str, labels: dict):
    mode = gpu.get("persistence_mode")
    if mode is None:
        status, value, detail = Status.OK, None, "persistence mode not supported"
    elif mode:
        status, value, detail = Status.OK, "on", "persistence mode on"
    elif os_name == "Linux":
        status, value = Status.WARNING, "off"
        detail = "persistence mode off: the driver is torn down between jobs; enable nvidia-persistenced"
    else:
        status, value, detail = Status.OK, "off", f"persistence mode off ({os_name})"
    add(
        result,
        f"{prefix}.persistence",
        status,
        value,
        None,
        detail,
        "toolkit_gpu_persistence_mode",
        _flag(mode),
        labels=labels,
    )


def _fan(result: CollectorResult, prefix: str, gpu: dict, labels: dict):
    fan = gpu.get("fan_speed_percent")
    add(
        result,
        f"{prefix}.fan",
        Status.OK,
        fan,
        "%",
        "fan speed, % of maximum" if fan is not None else "fan speed not supported (passively cooled board?)",
        "toolkit_gpu_fan_speed_ratio",
        fan / 100 if fan is not None else None,
        labels=labels,
    )


def checks_from_nvml(
    raw: dict, expect_gpus: int | None = None, thresholds: dict | None = None
) -> CollectorResult:
    """Judge a `read_nvml()` snapshot (live or recorded); see the module docstring for the rules."""
    result = CollectorResult(COLLECTOR)
    if not raw.get("available"):
        report_no_driver(
            result, "gpu.nvidia", "no NVIDIA driver", raw.get("error") or "NVML unavailable", expect_gpus
        )
        return result
    result.info = {
        "vendor": "nvidia",
        "driver_version": raw.get("driver_version"),
        "cuda_driver_version": raw.get("cuda_driver_version"),
        "nvml_version": raw.get("nvml_version"),
        "gpu_count": raw.get("gpu_count"),
    }
    gpus = raw.get("gpus") or []
    found = raw.get("gpu_count")
    if found is None:
        found = len(gpus)
    count_error = (raw.get("errors") or {}).get("gpu_count")
    if raw.get("gpu_count") is None and count_error:
        add(result, "gpu.count", Status.UNKNOWN, None, None, f"NVML cannot count the GPUs ({count_error})")
    elif expect_gpus is not None and found < expect_gpus:
        add(
            result,
            "gpu.count",
            Status.CRITICAL,
            found,
            None,
            f"expected {expect_gpus}, found {found}",
            "toolkit_gpu_count",
        )
    else:
        detail = f"{found} NVIDIA GPU(s) visible" + (f", {expect_gpus} expected" if expect_gpus else "")
        add(result, "gpu.count", Status.OK, found, None, detail, "toolkit_gpu_count")

    driver, cuda = raw.get("driver_version"), raw.get("cuda_driver_version")
    add(
        result,
        "gpu.driver",
        Status.OK,
        driver,
        None,
        f"CUDA {cuda}" if cuda else "CUDA version not reported",
        "toolkit_gpu_driver_info",
        1 if driver else None,
        driver_version=driver or "",
        cuda_version=cuda or "",
    )

    os_name = raw.get("os") or "Linux"
    for gpu in gpus:
        index = gpu.get("index")
        prefix = f"gpu{index}"
        labels = {"gpu": str(index), "name": gpu.get("name") or "", "uuid": gpu.get("uuid") or ""}
        errors = gpu.get("errors") or {}
        lost = sorted({e for e in errors.values() if e in LOST_ERRORS})
        if "handle" in errors or lost:
            why = errors.get("handle") or ", ".join(lost)
            add(
                result,
                f"{prefix}.device",
                Status.CRITICAL,
                None,
                None,
                f"NVML cannot read this GPU ({why}): check `dmesg` for Xid errors, reset or reboot",
                None,
                labels=labels,
            )
            if "handle" in errors:
                continue
        _temperature(result, prefix, gpu, thresholds, labels)
        power_checks(result, prefix, gpu, labels)
        memory_checks(result, prefix, gpu, labels)
        _utilization(result, prefix, gpu, labels)
        _clocks(result, prefix, gpu, labels)
        _clock_events(result, prefix, gpu, labels)
        _ecc(result, prefix, gpu, labels)
        remap_fields = ("remapped_rows_correctable", "remapped_rows_pending", "remapped_rows_failure")
        if any(gpu.get(f) is not None for f in remap_fields):
            _row_remapping(result, prefix, gpu, labels)
        else:
            _retired_pages(result, prefix, gpu, labels)
        _pcie(result, prefix, gpu, labels)
        _persistence(result, prefix, gpu, os_name, labels)
        _fan(result, prefix, gpu, labels)
    return result


def collect(expect_gpus: int | None = None, thresholds: dict | None = None) -> CollectorResult:
    return checks_from_nvml(read_nvml(), expect_gpus, thresholds)


if __name__ == "__main__":
    print(json.dumps(read_nvml(), indent=2))
