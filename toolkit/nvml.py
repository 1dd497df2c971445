"""NVML access shared by `toolkit health` and `toolkit bench --burn-in`, so both read NVIDIA GPUs the same
way and name the same failures the same: loading nvidia-ml-py, one guarded call per query, and the
clock-event ("throttle") reasons NVML reports.

A leaf: pynvml is imported only by `init()`, when a GPU is actually read, because importing it costs time
that `--help` must not pay and loads libnvidia-ml where it exists.
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any

from toolkit.glossary import Status

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
# the reasons that mean trouble (the board pulling its clocks down): the health rule and the burn-in's
# warning judge them alike; every other reason is normal operation
CLOCK_EVENT_STATUS: dict[str, Status] = {
    "hw_slowdown": Status.CRITICAL,
    "hw_thermal_slowdown": Status.CRITICAL,
    "hw_power_brake_slowdown": Status.CRITICAL,
    "sw_thermal_slowdown": Status.WARNING,
}
CLOCK_EVENT_TEXT: dict[str, str] = {
    "gpu_idle": "idle",
    "applications_clocks_setting": "application clocks setting",
    "sw_power_cap": "SW power cap",  # at the limit only when the draw is near it: the health rule says which
    "hw_slowdown": "HW slowdown",
    "sync_boost": "sync boost",
    "sw_thermal_slowdown": "SW thermal slowdown",
    "hw_thermal_slowdown": "HW thermal slowdown",
    "hw_power_brake_slowdown": "HW power brake slowdown",
    "display_clock_setting": "display clock setting",
}


class NvmlUnavailable(Exception):
    """NVML cannot be read on this machine. Each caller words it in its own output, so the reason is
    kept apart from whether nvidia-ml-py is missing (`installed` False) or the driver is."""

    def __init__(self, reason: str, installed: bool):
        super().__init__(reason)
        self.installed = installed


def init() -> ModuleType:
    """pynvml, initialised; the caller hands it back to `shutdown()`."""
    try:
        import pynvml
    except ImportError as err:
        raise NvmlUnavailable(str(err), installed=False) from err
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:  # LibraryNotFound, DriverNotLoaded, ...: the CPU-only machine
        raise NvmlUnavailable(f"{error_name(err)}: {err}", installed=True) from err
    return pynvml


def shutdown(nvml: ModuleType) -> None:
    with contextlib.suppress(nvml.NVMLError):
        nvml.nvmlShutdown()


def error_name(err: Exception) -> str:
    """NVML's own name for a failure (`GpuIsLost`): the rules and the reports match on it."""
    name = type(err).__name__
    return name.removeprefix("NVMLError_") if name != "NVMLError" else f"NVMLError({err})"


def text(value: Any) -> str:
    """nvidia-ml-py returns bytes or str depending on its version."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def decode_clock_events(mask: int) -> list[str]:
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    unknown = mask & ~sum(CLOCK_EVENT_REASONS)
    if unknown:
        names.append(f"unknown_{unknown:#x}")
    return names


class NvmlGuard:
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
                last = error_name(err)
            except Exception as err:  # a binding that does not fit this driver must not sink the rest
                last = f"{type(err).__name__}: {err}"
        self.errors[field] = last
        return None
