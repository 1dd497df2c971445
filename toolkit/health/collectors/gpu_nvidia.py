"""NVIDIA GPUs through NVML: `read_nvml()` takes a raw, JSON-serialisable snapshot, which the rules in
`gpu_nvidia_rules` judge as a pure function, so they are tested on recorded snapshots.

Every NVML query is guarded on its own: a query the GPU, the driver or nvidia-ml-py does not support
(NotSupported, FunctionNotFound, NoPermission, a GPU fallen off the bus...) leaves its field None and
names the field in the GPU's `unsupported` list (`errors` maps it to the NVML error). A None field is
reported with value None and "not supported", never as a number.

`python -m toolkit.health.collectors.gpu_nvidia` prints a snapshot: the way to record a fixture.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import time
from typing import Any

from toolkit.health.collector import Context
from toolkit.health.collectors import gpu_nvidia_state as state
from toolkit.health.collectors.gpu_nvidia_fields import EXTRA_FIELDS, GPU_FIELDS, read_extra
from toolkit.health.collectors.gpu_nvidia_rules import checks_from_nvml
from toolkit.health.collectors.gpu_nvidia_smi import CaptureError, snapshot_from_capture
from toolkit.health.collectors.gpu_rules import COLLECTOR, gpu_settings
from toolkit.health.collectors.gpu_xid import boot_id, read_kernel_xids
from toolkit.health.model import CollectorResult
from toolkit.nvml import (
    NvmlGuard,
    NvmlUnavailable,
    decode_clock_events,
    init,
    shutdown,
    text,
)


def _read_gpu(nvml, index: int) -> dict:
    gpu: dict[str, Any] = {"index": index}
    g = NvmlGuard(nvml)
    h = g.get("handle", ("nvmlDeviceGetHandleByIndex", index))
    if h is None:  # every other field stays None; the rules report the GPU as unreadable
        unreadable = dict.fromkeys((*GPU_FIELDS, *EXTRA_FIELDS))
        unreadable.update(index=index, unsupported=["handle"], errors=g.errors)
        return unreadable

    name = g.get("name", ("nvmlDeviceGetName", h))
    uuid = g.get("uuid", ("nvmlDeviceGetUUID", h))
    pci = g.get("pci_bus_id", ("nvmlDeviceGetPciInfo", h))
    gpu["name"] = text(name) if name is not None else None
    gpu["uuid"] = text(uuid) if uuid is not None else None
    gpu["pci_bus_id"] = text(pci.busId) if pci is not None else None

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
    gpu.update(read_extra(nvml, g, h))

    gpu["unsupported"] = sorted(g.errors)
    gpu["errors"] = g.errors
    return {field: gpu.get(field) for field in (*GPU_FIELDS, *EXTRA_FIELDS)}


def read_nvml() -> dict:
    """A raw snapshot of every NVIDIA GPU; {"available": False, "error": ...} without a driver."""
    try:
        pynvml = init()
    except NvmlUnavailable as err:
        error = str(err) if err.installed else f"nvidia-ml-py is not installed ({err})"
        return {"available": False, "source": "nvml", "error": error}
    try:
        g = NvmlGuard(pynvml)
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
            "driver_version": text(driver) if driver is not None else None,
            "cuda_driver_version": f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else None,
            "nvml_version": text(nvml_version) if nvml_version is not None else None,
            "gpu_count": count,
            "gpus": [_read_gpu(pynvml, i) for i in range(count or 0)],
            "errors": g.errors,
        }
    finally:
        shutdown(pynvml)


def read_nvidia_smi(timeout: float = 30.0) -> dict | None:
    """`nvidia-smi -q -x` read as a snapshot, for a node without nvidia-ml-py; None without nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "-q", "-x"], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"available": False, "source": "nvidia-smi", "error": f"nvidia-smi: {type(err).__name__}"}
    if done.returncode != 0:
        why = (done.stdout.strip() or done.stderr.strip() or f"exit {done.returncode}").splitlines()[0]
        return {"available": False, "source": "nvidia-smi", "error": f"nvidia-smi: {why}"}
    try:
        return snapshot_from_capture(done.stdout, platform.system())
    except CaptureError as err:
        return {"available": False, "source": "nvidia-smi", "error": f"nvidia-smi -q -x: {err}"}


def read_node() -> dict:
    """NVML, else `nvidia-smi -q -x` where nvidia-ml-py is missing; with the kernel's XID events."""
    raw = read_nvml()
    if not raw["available"] and raw["error"].startswith("nvidia-ml-py is not installed"):
        raw = read_nvidia_smi() or raw
    if raw["available"]:
        raw["collected_at"] = time.time()
        raw["boot_id"] = boot_id()
        if raw.get("os") == "Linux":
            raw["xid"] = read_kernel_xids()
    return raw


def collect(
    expect_gpus: int | None = None, thresholds: dict | None = None, state_dir: str | None = None
) -> CollectorResult:
    """The GPU section; with `state_dir`, XID events and PCIe replay growth are judged since the last run."""
    previous = state.load(state_dir)
    raw = read_node()
    result = checks_from_nvml(raw, expect_gpus, thresholds, previous)
    if raw["available"]:
        result.info["source"] = raw.get("source")
        problem = state.save(state_dir, state.next_state(raw, raw.get("boot_id"), raw["collected_at"]))
        if problem:
            result.info["state"] = problem
    return result


class NvidiaCollector:
    name = COLLECTOR

    def collect(self, ctx: Context) -> CollectorResult:
        # the health store's folder keeps the GPU state: --save-dir when the run passes it, else report_dir
        state_dir = getattr(ctx.opts, "state_dir", None) or ctx.config.get("report_dir")
        return collect(*gpu_settings(ctx), state_dir)


if __name__ == "__main__":
    print(json.dumps(read_nvml(), indent=2))
