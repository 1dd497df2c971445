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
  WARNING; SW power cap, idle, application clocks, sync boost and display clock are normal (OK). The SW
  power cap is called "at the power limit" only with the draw within 10% of the limit; otherwise the
  detail gives the draw and its share of the limit.
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
- Temperature limits below 20 °C are T.Limit margins, never limits (`gpu_nvidia_smi` turns margins into
  limits where the current margin is known).
- `gpuN.temperature.memory`, `gpuN.pcie.replay`, `gpuN.fabric`, `gpuN.recovery_action`, `gpuN.nvlink`,
  `gpu.xid` / `gpuN.xid`, and row remapping on a GPU whose remap state is unreadable (MIG): see
  `gpu_nvidia_checks`.

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
toolkit_gpu_persistence_mode, toolkit_gpu_fan_speed_ratio, toolkit_gpus,
toolkit_gpu_driver_info{driver_version,cuda_version}, toolkit_gpu_memory_temperature_celsius,
toolkit_gpu_pcie_replay_total, toolkit_gpu_fabric_state, toolkit_gpu_recovery_action,
toolkit_gpu_nvlink_links_active, toolkit_gpu_xid_last_code.
"""

from __future__ import annotations

from toolkit.health.collectors.gpu_nvidia_checks import (
    fabric,
    has_row_remapping,
    memory_temperature,
    nvlink,
    pcie_replay,
    recovery_action,
    row_remapping_unread,
    xid_checks,
)
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
MIN_LIMIT_C = 20.0
POWER_CAP_NEAR = 0.9  # the SW power cap "at the limit" only when the draw is within 10% of it


def _temperature(result: CollectorResult, prefix: str, gpu: dict, thresholds: dict | None, labels: dict):
    temp = gpu.get("temperature_c")
    slowdown, shutdown = gpu.get("temperature_slowdown_c"), gpu.get("temperature_shutdown_c")
    # a "threshold" this low is a T.Limit margin (degrees past T.Limit), never a limit to compare with
    slowdown = slowdown if slowdown is None or slowdown >= MIN_LIMIT_C else None
    shutdown = shutdown if shutdown is None or shutdown >= MIN_LIMIT_C else None
    warning, critical, source = temperature_limits(
        slowdown, thresholds, DEFAULT_WARNING_C, DEFAULT_CRITICAL_C
    )
    if slowdown and gpu.get("temperature_limits") == "tlimit" and source == "slowdown threshold":
        source = "slowdown threshold (from the T.Limit margin)"
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
    normal = [_power_cap_text(gpu) if n == "sw_power_cap" else CLOCK_EVENT_TEXT.get(n, n)
              for n in active if n not in CLOCK_EVENT_STATUS]  # fmt: skip
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


def _power_cap_text(gpu: dict) -> str:
    """The SW power cap says the driver held clocks for power; only a draw near the limit is "at" it."""
    power, limit = gpu.get("power_w"), gpu.get("power_limit_w")
    if power is None or not limit:
        return "SW power cap (power draw unknown)"
    share = f"{power:.0f} of {limit:.0f} W, {100 * power / limit:.0f}%"
    if power >= POWER_CAP_NEAR * limit:
        return f"SW power cap: at the power limit ({share})"
    return (
        f"SW power cap flagged at {share} of the limit: not at the power limit (a short peak, or a lower cap)"
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
    raw: dict,
    expect_gpus: int | None = None,
    thresholds: dict | None = None,
    previous: dict | None = None,
    now: float | None = None,
) -> CollectorResult:
    """Judge a `read_nvml()` snapshot (live or recorded); see the module docstring for the rules.
    `previous`: the state the last run left (`gpu_nvidia_state`), for XID and PCIe replay growth."""
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
            "toolkit_gpus",
        )
    else:
        detail = f"{found} NVIDIA GPU(s) visible" + (f", {expect_gpus} expected" if expect_gpus else "")
        add(result, "gpu.count", Status.OK, found, None, detail, "toolkit_gpus")

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

    previous = previous or {}
    same_boot = bool(previous) and previous.get("boot_id") == raw.get("boot_id")
    events = xid_checks(result, raw, previous, same_boot)
    replays = (previous.get("pcie_replay") or {}) if same_boot else {}
    now = raw.get("collected_at") if now is None else now
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
        memory_temperature(result, prefix, gpu, labels)
        power_checks(result, prefix, gpu, labels)
        memory_checks(result, prefix, gpu, labels)
        _utilization(result, prefix, gpu, labels)
        _clocks(result, prefix, gpu, labels)
        _clock_events(result, prefix, gpu, labels)
        ecc_checks(result, prefix, gpu, labels)
        remap_fields = ("remapped_rows_correctable", "remapped_rows_pending", "remapped_rows_failure")
        if any(gpu.get(f) is not None for f in remap_fields):
            row_remapping_checks(result, prefix, gpu, labels)
        elif has_row_remapping(gpu):  # MIG mode hides the remap state; it is not "no remapping"
            row_remapping_unread(result, prefix, gpu, events, labels)
        else:
            retired_pages_checks(result, prefix, gpu, labels)
        _pcie(result, prefix, gpu, labels)
        pcie_replay(result, prefix, gpu, replays.get(gpu.get("uuid")), now or 0.0, labels)
        _persistence(result, prefix, gpu, os_name, labels)
        _fan(result, prefix, gpu, labels)
        fabric(result, prefix, gpu, labels)
        recovery_action(result, prefix, gpu, labels)
        nvlink(result, prefix, gpu, labels)
    return result
