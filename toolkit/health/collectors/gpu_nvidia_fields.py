"""The fields of one NVIDIA GPU in a snapshot, and the NVML reads of the fields operators watch beyond
the basics (as dcgm-exporter and `dcgmi health` do): the architecture and MIG mode (which say whether the
board has row remapping), the memory (HBM) temperature, the T.Limit margin, the PCIe replay counter,
the NVSwitch fabric state, the driver's recovery action and the NVLink link states.

Every read is guarded (`NvmlGuard`): a driver or nvidia-ml-py without it leaves the field None.
"""

from __future__ import annotations

import ctypes
from typing import Any

from toolkit.nvml import NvmlGuard, error_name

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
# read by both readers (NVML and nvidia-smi captures) after GPU_FIELDS; snapshots recorded before they
# existed lack them, and the rules read them with .get()
EXTRA_FIELDS = (
    "architecture", "mig_mode_current",
    "temperature_memory_c", "temperature_margin_c", "temperature_limits",
    "pcie_replay_count", "pcie_replay_rollovers",
    "fabric_state", "fabric_status", "recovery_action", "nvlink_active",
)  # fmt: skip

ARCHITECTURES = {2: "kepler", 3: "maxwell", 4: "pascal", 5: "volta", 6: "turing", 7: "ampere", 8: "ada",
                 9: "hopper", 10: "blackwell"}  # fmt: skip
FABRIC_STATES = {0: "not_supported", 1: "not_started", 2: "in_progress", 3: "completed"}
RECOVERY_ACTIONS = {0: "none", 1: "gpu_reset", 2: "node_reboot", 3: "drain_p2p", 4: "drain_and_reset",
                    5: "recover_imex_domain", 6: "bus_reset", 7: "system_reboot"}  # fmt: skip
FI_MEMORY_TEMP = 82  # NVML_FI_DEV_MEMORY_TEMP
FI_REPLAY_ROLLOVERS = 95  # NVML_FI_DEV_PCIE_REPLAY_ROLLOVER_COUNTER
FI_RECOVERY_ACTION = 230  # NVML_FI_DEV_GET_GPU_RECOVERY_ACTION (r570 and later)
_VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")


def _field_value(g: NvmlGuard, field: str, h, field_id: int) -> Any:
    values = g.get(field, ("nvmlDeviceGetFieldValues", h, [field_id]))
    if values is None:
        return None
    value = values[0]
    if value.nvmlReturn != 0:
        g.errors[field] = f"NVMLError({value.nvmlReturn})"
        return None
    member = _VALUE_MEMBERS[value.valueType] if value.valueType < len(_VALUE_MEMBERS) else "ullVal"
    return getattr(value.value, member)


def _fabric(nvml, g: NvmlGuard, h) -> tuple[str | None, str | None]:
    info_type = getattr(nvml, "c_nvmlGpuFabricInfo_t", None)
    if info_type is None:
        g.errors["fabric_state"] = "FunctionNotFound (no fabric info in nvidia-ml-py)"
        return None, None
    info = info_type()
    if g.get("fabric_state", ("nvmlDeviceGetGpuFabricInfo", h, ctypes.byref(info))) is None:
        return None, None
    state = FABRIC_STATES.get(int(info.state), f"unknown_{int(info.state)}")
    if state != "completed":
        return state, None  # NVML: the status is meaningful only once the state is "completed"
    status = int(info.status)
    return state, "Success" if status == 0 else _return_name(nvml, status)


def _return_name(nvml, code: int) -> str:
    try:
        return error_name(nvml.NVMLError(code))
    except Exception:  # an nvidia-ml-py without that error class
        return f"NVMLError({code})"


def _nvlinks(nvml, g: NvmlGuard, h) -> list[bool] | None:
    """Each link's state, in link order, up to the first link the GPU does not have; None without NVLink."""
    links: list[bool] = []
    for link in range(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18)):
        probe = NvmlGuard(nvml)
        state = probe.get("nvlink", ("nvmlDeviceGetNvLinkState", h, link))
        if state is None:
            if not links:
                g.errors["nvlink_active"] = probe.errors["nvlink"]
            break
        links.append(bool(state))
    return links or None


def read_extra(nvml, g: NvmlGuard, h) -> dict:
    arch = g.get("architecture", ("nvmlDeviceGetArchitecture", h))
    mig = g.get("mig_mode_current", ("nvmlDeviceGetMigMode", h))
    replay = g.get("pcie_replay_count", ("nvmlDeviceGetPcieReplayCounter", h))
    fabric_state, fabric_status = _fabric(nvml, g, h)
    action = _field_value(g, "recovery_action", h, FI_RECOVERY_ACTION)
    return {
        "architecture": ARCHITECTURES.get(arch) if arch is not None else None,
        "mig_mode_current": bool(mig[0]) if mig is not None else None,
        "temperature_memory_c": _field_value(g, "temperature_memory_c", h, FI_MEMORY_TEMP) or None,
        "temperature_margin_c": g.get("temperature_margin_c", ("nvmlDeviceGetMarginTemperature", h)),
        "temperature_limits": "absolute",
        "pcie_replay_count": int(replay) if replay is not None else None,
        "pcie_replay_rollovers": _field_value(g, "pcie_replay_rollovers", h, FI_REPLAY_ROLLOVERS),
        "fabric_state": fabric_state,
        "fabric_status": fabric_status,
        "recovery_action": RECOVERY_ACTIONS.get(action, f"unknown_{action}") if action is not None else None,
        "nvlink_active": _nvlinks(nvml, g, h),
    }
