"""NVIDIA GPU rules: `checks_from_nvml()` judges a `read_nvml()` snapshot as a pure function, so the rules
are tested on recorded snapshots (tests/fixtures/health/) as well as on the live GPUs.

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
"""

from __future__ import annotations

from toolkit.health.collectors.gpu_nvidia_memory import ecc_checks, retired_pages_checks, row_remapping_checks
from toolkit.health.collectors.gpu_rules import (
    COLLECTOR,
    add,
    flag,
    judge_temperature,
    memory_checks,
    power_checks,
    report_no_driver,
    temperature_limits,
)
from toolkit.health.model import CollectorResult, Status
from toolkit.nvml import CLOCK_EVENT_REASONS, CLOCK_EVENT_STATUS, CLOCK_EVENT_TEXT, decode_clock_events

DEFAULT_WARNING_C = 83.0
DEFAULT_CRITICAL_C = 90.0
LOST_ERRORS = {"GpuIsLost", "ResetRequired"}


def _temperature(result: CollectorResult, prefix: str, gpu: dict, thresholds: dict | None, labels: dict):
    temp = gpu.get("temperature_c")
    slowdown, shutdown = gpu.get("temperature_slowdown_c"), gpu.get("temperature_shutdown_c")
    warning, critical, source = temperature_limits(
        slowdown, thresholds, DEFAULT_WARNING_C, DEFAULT_CRITICAL_C
    )
    if temp is None:
        status, detail = Status.OK, "temperature not supported"
    else:
        status, detail = judge_temperature(temp, warning, critical, source, shutdown)
    add(
        result,
        f"{prefix}.temperature",
        status,
        temp,
        "°C",
        detail,
        "toolkit_gpu_temperature_celsius",
        **labels,
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
        **labels,
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
        **labels,
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
        **labels,
    )


def _clock_events(result: CollectorResult, prefix: str, gpu: dict, labels: dict):
    mask = gpu.get("clocks_event_reasons")
    if mask is None:
        detail = "clock event reasons not supported"
        add(result, f"{prefix}.clock_events", Status.OK, None, None, detail, None, **labels)
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
        **labels,
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
            **labels,
            reason=name,
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
    add(result, f"{prefix}.pcie", status, value, None, detail, None, **labels)
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
            **labels,
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
        flag(mode),
        **labels,
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
        **labels,
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
                **labels,
            )
            if "handle" in errors:
                continue
        _temperature(result, prefix, gpu, thresholds, labels)
        power_checks(result, prefix, gpu, labels)
        memory_checks(result, prefix, gpu, labels)
        _utilization(result, prefix, gpu, labels)
        _clocks(result, prefix, gpu, labels)
        _clock_events(result, prefix, gpu, labels)
        ecc_checks(result, prefix, gpu, labels)
        remap_fields = ("remapped_rows_correctable", "remapped_rows_pending", "remapped_rows_failure")
        if any(gpu.get(f) is not None for f in remap_fields):
            row_remapping_checks(result, prefix, gpu, labels)
        else:
            retired_pages_checks(result, prefix, gpu, labels)
        _pcie(result, prefix, gpu, labels)
        _persistence(result, prefix, gpu, os_name, labels)
        _fan(result, prefix, gpu, labels)
    return result
