"""AMD GPUs through amdsmi (the Python binding that ships with ROCm 6+, not on PyPI): `read_amdsmi()`
takes a raw, JSON-serialisable snapshot, `checks_from_amdsmi()` judges it as a pure function.

Each amdsmi query is guarded on its own; a failure leaves its field None and names the field in the
GPU's `unsupported` list. amdsmi marks values it cannot read with "N/A" or an all-ones integer
(0xFFFF, UINT32_MAX, UINT64_MAX) depending on the version: both become None, never a number.
Units are converted where read: VRAM MB -> bytes; power W, or µW where a release reports µW
(ROCm 7 documents `power_limit` in µW: any "watts" above 5,000 is taken as µW).

Rules (check names carry amdsmi's processor index: `amd0.temperature`):

- amdsmi missing, failing to initialise, or no AMD GPU: one check `gpu.amd`, OK unless `expect_gpus`
  > 0 (then CRITICAL); the collector is down.
- `amd.count`: CRITICAL when fewer GPUs are visible than `expect_gpus`. `amd.driver`: OK, the version.
- `amdN.temperature`: the hotspot (junction) sensor, the one the GPU throttles on, else the edge
  sensor. WARNING from the sensor's critical limit − 5 °C, CRITICAL at that limit (amdsmi's CRITICAL
  metric; defaults 105/110 °C hotspot, 95/100 °C edge); `thresholds` keys `temperature_warning_c` /
  `temperature_critical_c` override. `amdN.temperature_edge` / `amdN.temperature_vram` (when read
  beside a hotspot) are judged against their own critical limit when amdsmi gives one, else OK.
- `amdN.power`, `amdN.memory`, `amdN.utilization`: measurements, OK.

Metric names are the NVIDIA collector's, with labels gpu, name, uuid, vendor="amd" (and sensor= on
temperatures): toolkit_gpu_temperature_celsius, toolkit_gpu_power_watts, toolkit_gpu_power_limit_watts,
toolkit_gpu_memory_used_bytes, toolkit_gpu_memory_total_bytes, toolkit_gpu_utilization_ratio,
toolkit_gpus, toolkit_gpu_driver_info.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from toolkit.health.collector import Context
from toolkit.health.collectors.gpu_rules import (
    COLLECTOR,
    SLOWDOWN_MARGIN_C,
    add,
    fmt_number,
    gpu_settings,
    judge_temperature,
    memory_checks,
    power_checks,
    report_no_driver,
    temperature_limits,
)
from toolkit.health.model import CollectorResult, Status

SENTINELS = {0xFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF}
MAX_PLAUSIBLE_WATTS = 5_000
# sensor -> (default warning, default critical) when amdsmi gives no critical limit
DEFAULT_LIMITS_C = {"hotspot": (105.0, 110.0), "edge": (95.0, 100.0)}
GPU_FIELDS = (
    "index", "name", "uuid", "pci_bus_id", "driver_version",
    "temperature_edge_c", "temperature_edge_critical_c",
    "temperature_hotspot_c", "temperature_hotspot_critical_c",
    "temperature_vram_c", "temperature_vram_critical_c",
    "power_w", "power_source", "power_limit_w",
    "memory_used_bytes", "memory_total_bytes",
    "utilization_gfx_percent", "utilization_umc_percent",
    "unsupported", "errors",
)  # fmt: skip


def number(value: Any) -> float | int | None:
    """A reading, or None for amdsmi's "N/A" and all-ones "not supported" markers."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip().split()[0])
        except (ValueError, IndexError):
            return None
    if not isinstance(value, int | float) or value in SENTINELS or value < 0:
        return None
    return value


def watts(value: Any) -> float | None:
    n = number(value)
    if n is None:
        return None
    return round(n / 1e6, 3) if n > MAX_PLAUSIBLE_WATTS else float(n)


def celsius(value: Any) -> float | None:
    n = number(value)
    if n is None:
        return None
    return n / 1000 if n > 1000 else n  # millidegrees from a hwmon-style source


class _Guard:
    def __init__(self):
        self.errors: dict[str, str] = {}

    def get(self, field: str, fn, *args):
        if fn is None:
            self.errors[field] = "not in this amdsmi"
            return None
        try:
            return fn(*args)
        except Exception as err:  # amdsmi raises AmdSmiLibraryException & co per call
            self.errors[field] = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
            return None


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _enum(amdsmi, enum_name: str, *members: str):
    enum = getattr(amdsmi, enum_name, None)
    for member in members:
        if enum is not None and hasattr(enum, member):
            return getattr(enum, member)
    return None


def _read_gpu(amdsmi, index: int, h) -> dict:
    g = _Guard()

    def call(name: str):
        return getattr(amdsmi, name, None)

    gpu: dict[str, Any] = {"index": index}
    asic = _dict(g.get("name", call("amdsmi_get_gpu_asic_info"), h))
    gpu["name"] = str(asic.get("market_name") or "") or None
    uuid = g.get("uuid", call("amdsmi_get_gpu_device_uuid"), h)
    gpu["uuid"] = str(uuid) if uuid is not None else None
    bdf = g.get("pci_bus_id", call("amdsmi_get_gpu_device_bdf"), h)
    gpu["pci_bus_id"] = str(bdf) if bdf is not None else None
    driver = _dict(g.get("driver_version", call("amdsmi_get_gpu_driver_info"), h))
    gpu["driver_version"] = str(driver.get("driver_version") or "") or None

    current = _enum(amdsmi, "AmdSmiTemperatureMetric", "CURRENT")
    critical = _enum(amdsmi, "AmdSmiTemperatureMetric", "CRITICAL")
    for sensor, members in (("edge", ("EDGE",)), ("hotspot", ("HOTSPOT", "JUNCTION")), ("vram", ("VRAM",))):
        kind = _enum(amdsmi, "AmdSmiTemperatureType", *members)
        fn = call("amdsmi_get_temp_metric") if kind is not None and current is not None else None
        gpu[f"temperature_{sensor}_c"] = celsius(g.get(f"temperature_{sensor}_c", fn, h, kind, current))
        crit_fn = fn if critical is not None else None
        field = f"temperature_{sensor}_critical_c"
        gpu[field] = celsius(g.get(field, crit_fn, h, kind, critical))

    power = _dict(g.get("power", call("amdsmi_get_power_info"), h))
    gpu["power_w"], gpu["power_source"] = None, None
    # socket_power: ROCm 7; current_socket_power: MI300 and later; average_socket_power: Navi, MI200
    for key in ("socket_power", "current_socket_power", "average_socket_power"):
        if watts(power.get(key)) is not None:
            gpu["power_w"], gpu["power_source"] = watts(power.get(key)), key
            break
    gpu["power_limit_w"] = watts(power.get("power_limit"))
    if gpu["power_limit_w"] is None:
        cap = _dict(g.get("power_cap", call("amdsmi_get_power_cap_info"), h))
        gpu["power_limit_w"] = watts(cap.get("power_cap"))  # µW

    vram = _dict(g.get("memory", call("amdsmi_get_gpu_vram_usage"), h))
    used, total = number(vram.get("vram_used")), number(vram.get("vram_total"))
    gpu["memory_used_bytes"] = int(used * 2**20) if used is not None else None
    gpu["memory_total_bytes"] = int(total * 2**20) if total is not None else None

    activity = _dict(g.get("utilization", call("amdsmi_get_gpu_activity"), h))
    gpu["utilization_gfx_percent"] = number(activity.get("gfx_activity"))
    gpu["utilization_umc_percent"] = number(activity.get("umc_activity"))

    missing = [k for k, v in gpu.items() if v is None and k != "power_source"]
    gpu["unsupported"] = sorted(set(missing) | set(g.errors))
    gpu["errors"] = g.errors
    return {field: gpu.get(field) for field in GPU_FIELDS}


def read_amdsmi() -> dict:
    """A raw snapshot of every AMD GPU; {"available": False, "error": ...} without amdsmi or a GPU."""
    try:
        import amdsmi
    except ImportError as err:
        return {
            "available": False,
            "source": "amdsmi",
            "error": f"amdsmi is not installed; it ships with ROCm ({err})",
        }
    flag = _enum(amdsmi, "AmdSmiInitFlags", "INIT_AMD_GPUS", "AMD_GPUS")
    try:
        amdsmi.amdsmi_init(*([flag] if flag is not None else []))
    except Exception as err:  # no amdgpu driver loaded, no permission on /dev/kfd ...
        return {"available": False, "source": "amdsmi", "error": f"amdsmi_init failed: {err}"}
    try:
        try:
            handles = list(amdsmi.amdsmi_get_processor_handles())
        except Exception as err:
            return {"available": False, "source": "amdsmi", "error": f"no AMD GPU handles: {err}"}
        if not handles:
            return {"available": False, "source": "amdsmi", "error": "amdsmi found no AMD GPU"}
        gpus = [_read_gpu(amdsmi, i, h) for i, h in enumerate(handles)]
        return {
            "available": True,
            "source": "amdsmi",
            "driver_version": next((g["driver_version"] for g in gpus if g.get("driver_version")), None),
            "gpu_count": len(gpus),
            "gpus": gpus,
        }
    finally:
        with contextlib.suppress(Exception):
            amdsmi.amdsmi_shut_down()


# --------------------------------------------------------------------------- rules


def _temperatures(result: CollectorResult, prefix: str, gpu: dict, thresholds: dict | None, labels: dict):
    primary = "hotspot" if gpu.get("temperature_hotspot_c") is not None else "edge"
    temp = gpu.get(f"temperature_{primary}_c")
    crit = gpu.get(f"temperature_{primary}_critical_c")
    default_warning, default_critical = DEFAULT_LIMITS_C[primary]
    # amdsmi's critical limit plays the part NVML's slowdown threshold plays for NVIDIA
    warning, critical, source = temperature_limits(crit, thresholds, default_warning, default_critical)
    source = source.replace("slowdown threshold", f"{primary} critical limit")
    if temp is None:
        status, detail = Status.OK, "temperature not supported"
    else:
        status, detail = judge_temperature(temp, warning, critical, source)
        detail = f"{primary} sensor; {detail}"
    add(
        result,
        f"{prefix}.temperature",
        status,
        temp,
        "°C",
        detail,
        "toolkit_gpu_temperature_celsius",
        **labels,
        sensor=primary,
    )
    for sensor in ("edge", "vram"):
        value = gpu.get(f"temperature_{sensor}_c")
        if sensor == primary or value is None:
            continue
        crit = gpu.get(f"temperature_{sensor}_critical_c")
        if crit:
            status, detail = judge_temperature(
                value, crit - SLOWDOWN_MARGIN_C, crit, f"{sensor} critical limit"
            )
        else:
            status, detail = Status.OK, f"{sensor} sensor (no critical limit reported)"
        add(
            result,
            f"{prefix}.temperature_{sensor}",
            status,
            value,
            "°C",
            detail,
            "toolkit_gpu_temperature_celsius",
            **labels,
            sensor=sensor,
        )


def checks_from_amdsmi(
    raw: dict, expect_gpus: int | None = None, thresholds: dict | None = None
) -> CollectorResult:
    """Judge a `read_amdsmi()` snapshot (live or recorded); see the module docstring for the rules."""
    result = CollectorResult(COLLECTOR)
    if not raw.get("available"):
        report_no_driver(
            result,
            "gpu.amd",
            "no AMD GPU through amdsmi",
            raw.get("error") or "amdsmi unavailable",
            expect_gpus,
        )
        return result
    gpus = raw.get("gpus") or []
    found = raw.get("gpu_count")
    if found is None:
        found = len(gpus)
    result.info = {"vendor": "amd", "driver_version": raw.get("driver_version"), "gpu_count": found}
    if expect_gpus is not None and found < expect_gpus:
        add(
            result,
            "amd.count",
            Status.CRITICAL,
            found,
            None,
            f"expected {expect_gpus}, found {found}",
            "toolkit_gpus",
            vendor="amd",
        )
    else:
        detail = f"{found} AMD GPU(s) visible" + (f", {expect_gpus} expected" if expect_gpus else "")
        add(result, "amd.count", Status.OK, found, None, detail, "toolkit_gpus", vendor="amd")
    driver = raw.get("driver_version")
    add(
        result,
        "amd.driver",
        Status.OK,
        driver,
        None,
        "amdgpu driver" if driver else "driver version not reported",
        "toolkit_gpu_driver_info",
        1 if driver else None,
        driver_version=driver or "",
        vendor="amd",
    )

    for gpu in gpus:
        prefix = f"amd{gpu.get('index')}"
        labels = {
            "gpu": str(gpu.get("index")),
            "name": gpu.get("name") or "",
            "uuid": gpu.get("uuid") or "",
            "vendor": "amd",
        }
        _temperatures(result, prefix, gpu, thresholds, labels)

        power_checks(result, prefix, gpu, labels, limit_name="power cap", source=gpu.get("power_source"))
        memory_checks(result, prefix, gpu, labels, noun="VRAM", total_note="VRAM")

        gfx, umc = gpu.get("utilization_gfx_percent"), gpu.get("utilization_umc_percent")
        if gfx is None:
            detail = "GFX activity not supported"
        else:
            detail = f"GFX busy {fmt_number(gfx)}%" + (
                f", memory controller {fmt_number(umc)}%" if umc is not None else ""
            )
        add(
            result,
            f"{prefix}.utilization",
            Status.OK,
            gfx,
            "%",
            detail,
            "toolkit_gpu_utilization_ratio",
            gfx / 100 if gfx is not None else None,
            **labels,
        )
    return result


def collect(expect_gpus: int | None = None, thresholds: dict | None = None) -> CollectorResult:
    return checks_from_amdsmi(read_amdsmi(), expect_gpus, thresholds)


class AmdCollector:
    name = COLLECTOR

    def collect(self, ctx: Context) -> CollectorResult:
        return collect(*gpu_settings(ctx))


if __name__ == "__main__":
    print(json.dumps(read_amdsmi(), indent=2))
