"""NVIDIA GPUs from an `nvidia-smi -q` capture, in either of its two forms (`-q -x` XML or the `-q` text),
read into the same snapshot `gpu_nvidia.read_nvml()` takes, so the same rules judge a live node, a node
without nvidia-ml-py and the real captures of tests/fixtures/nvidia/.

The two forms name a field differently (`<gpu_temp>` / `GPU Current Temp`) and drivers renamed fields
over the years (`clocks_throttle_reasons` before r535, `clocks_event_reasons` after; `power_readings`
before, `gpu_power_readings` after; ECC counters by bit count before Ampere, by SRAM/DRAM after): every
field lists the paths it has had in both forms, first found wins. "N/A", "[Not Supported]" and the like
leave the field None, never a number, as on the NVML path.

Temperature limits: drivers from r535 report them on some boards only as T.Limit margins (degrees left
before the limit: `GPU Slowdown T.Limit Temp: -2 C` means "slows down 2 °C past T.Limit"). With the
current margin (`GPU T.Limit Temp`) the absolute limits follow (limit = current + margin − threshold
margin) and `temperature_limits` says "tlimit"; a margin is never taken as an absolute limit.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from toolkit.health.collectors.gpu_nvidia_fields import EXTRA_FIELDS, GPU_FIELDS
from toolkit.nvml import CLOCK_EVENT_REASONS, decode_clock_events

_MISSING = re.compile(
    r"^\[?(n/a|not supported|unknown error|requested functionality has been deprecated|no data)\]?$",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"^(-?\d+(?:\.\d+)?)\s*([a-zA-Z%/]*)")
_UNITS = {"kib": 2**10, "mib": 2**20, "gib": 2**30}

# bit of the clock-event mask -> the name its row has in the XML (after the prefix) and the text
_REASON_KEYS = {
    "gpu_idle": ("gpu_idle", "idle"),
    "applications_clocks_setting": ("applications_clocks_setting",),
    "sw_power_cap": ("sw_power_cap",),
    "hw_slowdown": ("hw_slowdown",),
    "sync_boost": ("sync_boost",),
    "sw_thermal_slowdown": ("sw_thermal_slowdown",),
    "hw_thermal_slowdown": ("hw_thermal_slowdown",),
    "hw_power_brake_slowdown": ("hw_power_brake_slowdown",),
    "display_clock_setting": ("display_clocks_setting", "display_clock_setting"),
}
_ARCH = {"kepler", "maxwell", "pascal", "volta", "turing", "ampere", "ada", "hopper", "blackwell"}
_FABRIC = {"not supported": "not_supported", "not started": "not_started",
           "in progress": "in_progress", "completed": "completed"}  # fmt: skip


class CaptureError(ValueError):
    """The text is no `nvidia-smi -q` capture (neither form)."""


def _key(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def _xml_tree(element: ET.Element) -> Any:
    children = list(element)
    if not children:
        return (element.text or "").strip()
    tree: dict[str, Any] = {}
    for child in children:
        tree.setdefault(child.tag, _xml_tree(child))  # repeated tags (MIG devices): the first one
    return tree


def _parse_xml(text: str) -> dict:
    if "<!ENTITY" in text:
        raise CaptureError("the XML declares entities, which nvidia-smi never writes")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise CaptureError(f"not well-formed XML ({err})") from err
    if root.tag != "nvidia_smi_log":
        raise CaptureError(f"XML root is <{root.tag}>, not <nvidia_smi_log>")
    doc: dict[str, Any] = {"gpus": []}
    for child in root:
        if child.tag == "gpu":
            gpu = _xml_tree(child)
            gpu = gpu if isinstance(gpu, dict) else {}
            gpu["id"] = child.get("id")
            doc["gpus"].append(gpu)
        else:
            doc[child.tag] = _xml_tree(child)
    return doc


_LINE = re.compile(r"^(\s*)(\S.*?)\s+:\s?(.*)$")


def _parse_text(text: str) -> dict:
    doc: dict[str, Any] = {"gpus": []}
    stack: list[tuple[int, dict]] = [(-1, doc)]
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("="):
            continue
        indent = len(raw) - len(raw.lstrip())
        if indent == 0 and re.match(r"^GPU [0-9A-Fa-f]+:[0-9A-Fa-f]+:", raw):
            gpu: dict[str, Any] = {"id": raw.split()[1]}
            doc["gpus"].append(gpu)
            stack = [(-1, doc), (0, gpu)]
            continue
        while len(stack) > 1 and indent <= stack[-1][0]:
            stack.pop()
        parent = stack[-1][1]
        match = _LINE.match(raw)
        if match:
            parent.setdefault(_key(match.group(2)), match.group(3).strip())
        else:
            section: dict[str, Any] = {}
            parent.setdefault(_key(raw.strip()), section)
            stack.append((indent, section))
    if not doc["gpus"] and "driver_version" not in doc:
        raise CaptureError(
            "no `Driver Version` and no `GPU <bus id>` section: not an `nvidia-smi -q` capture"
        )
    return doc


def parse_capture(text: str) -> dict:
    """The capture as nested dicts (XML tags or the text's labels, lower-cased): {"gpus": [...], ...}."""
    stripped = text.lstrip()
    if stripped.startswith("<?xml") or stripped.startswith("<nvidia_smi_log"):
        return _parse_xml(text)
    return _parse_text(text)


def _get(tree: dict, *paths: str) -> str | None:
    """The first present, meaningful value of `paths` ("a/b/c")."""
    for path in paths:
        node: Any = tree
        for part in path.split("/"):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, str):
            value = node.strip()
            if value and not _MISSING.match(value):
                return value
    return None


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    match = _NUMBER.match(value.replace(",", ""))
    if not match:
        return None
    number = float(match.group(1))
    return number * _UNITS.get(match.group(2).lower(), 1)


def _int(value: str | None) -> int | None:
    number = _number(value)
    return None if number is None else round(number)


def _yes(value: str | None) -> bool | None:
    if value is None:
        return None
    word = value.strip().lower()
    if word in ("yes", "enabled", "active", "true"):
        return True
    if word in ("no", "disabled", "not active", "false", "none"):
        return False
    return None


def _clock_mask(gpu: dict) -> int | None:
    section = (
        gpu.get("clocks_event_reasons") or gpu.get("clocks_throttle_reasons") or gpu.get("clocks_throttle")
    )
    if not isinstance(section, dict):
        return None
    flat = {re.sub(r"^clocks_(event|throttle)_reason_", "", k): v for k, v in section.items()}
    mask, seen = 0, False
    for bit, name in CLOCK_EVENT_REASONS.items():
        for key in _REASON_KEYS[name]:
            state = _yes(flat.get(key)) if isinstance(flat.get(key), str) else None
            if state is not None:
                seen = True
                mask |= bit if state else 0
                break
    return mask if seen else None


def _ecc(gpu: dict, scope: str, kind: str) -> int | None:
    """Corrected (single-bit / *_correctable) or uncorrected (double-bit / *_uncorrectable) errors."""
    counts = gpu.get("ecc_errors", {}).get(scope) if isinstance(gpu.get("ecc_errors"), dict) else None
    if not isinstance(counts, dict):
        return None
    old = "single_bit" if kind == "corrected" else "double_bit"
    if isinstance(counts.get(old), dict):
        return _int(_get(counts, f"{old}/total"))
    want = "_correctable" if kind == "corrected" else "_uncorrectable"
    values = [_int(v) for k, v in counts.items() if isinstance(v, str) and k.endswith(want)]
    values = [v for v in values if v is not None]
    return sum(values) if values else None


def _temperatures(gpu: dict) -> dict:
    t = "temperature/"
    temp = _number(_get(gpu, t + "gpu_temp", t + "gpu_current_temp"))
    fields = {
        "temperature_c": temp,
        "temperature_slowdown_c": _number(_get(gpu, t + "gpu_temp_slow_threshold", t + "gpu_slowdown_temp")),
        "temperature_shutdown_c": _number(_get(gpu, t + "gpu_temp_max_threshold", t + "gpu_shutdown_temp")),
        "temperature_gpu_max_c": _number(
            _get(gpu, t + "gpu_temp_max_gpu_threshold", t + "gpu_max_operating_temp")
        ),
        "temperature_memory_max_c": _number(
            _get(gpu, t + "gpu_temp_max_mem_threshold", t + "memory_max_operating_temp")
        ),
        "temperature_memory_c": _number(_get(gpu, t + "memory_temp", t + "memory_current_temp")),
        "temperature_margin_c": _number(_get(gpu, t + "gpu_temp_tlimit", t + "gpu_t_limit_temp")),
        "temperature_limits": "absolute",
    }
    margins = {
        "temperature_slowdown_c": _number(
            _get(gpu, t + "gpu_temp_slow_tlimit_threshold", t + "gpu_slowdown_t_limit_temp")
        ),
        "temperature_shutdown_c": _number(
            _get(gpu, t + "gpu_temp_max_tlimit_threshold", t + "gpu_shutdown_t_limit_temp")
        ),
        "temperature_gpu_max_c": _number(
            _get(gpu, t + "gpu_temp_max_gpu_tlimit_threshold", t + "gpu_max_operating_t_limit_temp")
        ),
    }
    if any(v is not None for v in margins.values()) and fields["temperature_slowdown_c"] is None:
        margin = fields["temperature_margin_c"]
        for name, threshold in margins.items():  # absolute = current + margin now - threshold margin
            ok = None not in (temp, margin, threshold)
            fields[name] = temp + margin - threshold if ok else None  # type: ignore[operator]
        fields["temperature_limits"] = "tlimit"
    return fields


def _recovery(gpu: dict) -> str | None:
    action = _get(gpu, "gpu_recovery_action")
    if action is not None:
        return _key(action)
    if _yes(_get(gpu, "gpu_reset_status/reset_required")):
        return "gpu_reset"
    if _yes(_get(gpu, "gpu_reset_status/drain_and_reset_recommended")):
        return "drain_and_reset"
    required = _get(gpu, "gpu_reset_status/reset_required")
    return "none" if required is not None else None


_DRAW = ("power_draw", "average_power_draw", "instant_power_draw")


def _gpu(index: int, gpu: dict) -> dict:
    link = "pci/pci_gpu_link_info/"
    tlink = "pci/gpu_link_info/"
    power = ("gpu_power_readings/", "power_readings/")
    mask = _clock_mask(gpu)
    arch = (_get(gpu, "product_architecture") or "").split()[0].lower() or None
    mode = _get(gpu, "mig_mode/current_mig", "mig_mode/current")
    fabric = _get(gpu, "fabric/state")
    snap: dict[str, Any] = {
        "index": index,
        "name": _get(gpu, "product_name"),
        "uuid": _get(gpu, "uuid", "gpu_uuid"),
        "pci_bus_id": _get(gpu, "pci/pci_bus_id", "pci/bus_id") or gpu.get("id"),
        **_temperatures(gpu),
        # R535 prints "Power Draw"; R550+ "Average Power Draw" (NVML's 1 s average) and "Instantaneous ..."
        "power_w": _number(
            _get(
                gpu,
                *(p + k for k in ("power_draw", "average_power_draw", "instant_power_draw") for p in power),
            )
        ),
        "power_limit_w": _number(
            _get(
                gpu,
                *(
                    p + k
                    for p in power
                    for k in ("current_power_limit", "enforced_power_limit", "power_limit")
                ),
            )
        ),
        "memory_total_bytes": _int(_get(gpu, "fb_memory_usage/total")),
        "memory_used_bytes": _int(_get(gpu, "fb_memory_usage/used")),
        "memory_reserved_bytes": _int(_get(gpu, "fb_memory_usage/reserved")),
        "utilization_gpu_percent": _int(_get(gpu, "utilization/gpu_util", "utilization/gpu")),
        "utilization_memory_percent": _int(_get(gpu, "utilization/memory_util", "utilization/memory")),
        "sm_clock_mhz": _int(_get(gpu, "clocks/sm_clock", "clocks/sm")),
        "mem_clock_mhz": _int(_get(gpu, "clocks/mem_clock", "clocks/memory")),
        "sm_clock_max_mhz": _int(_get(gpu, "max_clocks/sm_clock", "max_clocks/sm")),
        "mem_clock_max_mhz": _int(_get(gpu, "max_clocks/mem_clock", "max_clocks/memory")),
        "performance_state": _int((_get(gpu, "performance_state") or "").lstrip("P") or None),
        "clocks_event_reasons": mask,
        "clocks_event_reasons_decoded": decode_clock_events(mask) if mask is not None else None,
        "ecc_mode_current": _yes(_get(gpu, "ecc_mode/current_ecc", "ecc_mode/current")),
        "ecc_mode_pending": _yes(_get(gpu, "ecc_mode/pending_ecc", "ecc_mode/pending")),
        "retired_pages_single_bit": _int(
            _get(
                gpu,
                "retired_pages/multiple_single_bit_retirement/retired_count",
                "retired_pages/single_bit_ecc",
            )
        ),
        "retired_pages_double_bit": _int(
            _get(gpu, "retired_pages/double_bit_retirement/retired_count", "retired_pages/double_bit_ecc")
        ),
        "retired_pages_pending": _yes(
            _get(
                gpu,
                "retired_pages/pending_retirement",
                "retired_pages/pending_blacklist",
                "retired_pages/pending_page_blacklist",
            )
        ),
        "remapped_rows_correctable": _int(
            _get(gpu, "remapped_rows/remapped_row_corr", "remapped_rows/correctable_error")
        ),
        "remapped_rows_uncorrectable": _int(
            _get(gpu, "remapped_rows/remapped_row_unc", "remapped_rows/uncorrectable_error")
        ),
        "remapped_rows_pending": _yes(
            _get(gpu, "remapped_rows/remapped_row_pending", "remapped_rows/pending")
        ),
        "remapped_rows_failure": _yes(
            _get(gpu, "remapped_rows/remapped_row_failure", "remapped_rows/remapping_failure_occurred")
        ),
        "pcie_link_gen_current": _int(
            _get(gpu, link + "pcie_gen/current_link_gen", tlink + "pcie_generation/current")
        ),
        "pcie_link_gen_max": _int(_get(gpu, link + "pcie_gen/max_link_gen", tlink + "pcie_generation/max")),
        "pcie_link_gen_gpu_max": _int(
            _get(gpu, link + "pcie_gen/max_device_link_gen", tlink + "pcie_generation/device_max")
        ),
        "pcie_link_width_current": _int(
            _get(gpu, link + "link_widths/current_link_width", tlink + "link_width/current")
        ),
        "pcie_link_width_max": _int(_get(gpu, link + "link_widths/max_link_width", tlink + "link_width/max")),
        "persistence_mode": _yes(_get(gpu, "persistence_mode")),
        "fan_speed_percent": _int(_get(gpu, "fan_speed")),
        "architecture": arch if arch in _ARCH else None,
        "mig_mode_current": _yes(mode),
        "pcie_replay_count": _int(_get(gpu, "pci/replay_counter", "pci/replays_since_reset")),
        "pcie_replay_rollovers": _int(
            _get(gpu, "pci/replay_rollover_counter", "pci/replay_number_rollovers")
        ),
        "fabric_state": _FABRIC.get(fabric.lower(), _key(fabric)) if fabric else None,
        "fabric_status": _get(gpu, "fabric/status"),
        "recovery_action": _recovery(gpu),
        "nvlink_active": None,  # `nvidia-smi -q` has no link state (that is `nvidia-smi nvlink -s`)
    }
    for kind in ("corrected", "uncorrected"):
        for scope in ("volatile", "aggregate"):
            snap[f"ecc_{kind}_{scope}"] = _ecc(gpu, scope, kind)
    errors = {
        f: "not in the capture"
        for f in GPU_FIELDS
        if f not in ("unsupported", "errors") and snap.get(f) is None
    }
    snap["unsupported"] = sorted(errors)
    snap["errors"] = errors
    return {field: snap.get(field) for field in (*GPU_FIELDS, *EXTRA_FIELDS)}


def snapshot_from_capture(text: str, os_name: str = "Linux") -> dict:
    """A `read_nvml()`-shaped snapshot of an `nvidia-smi -q` / `-q -x` capture; raises CaptureError."""
    doc = parse_capture(text)
    gpus = [_gpu(i, g) for i, g in enumerate(doc["gpus"])]
    return {
        "available": True,
        "source": "nvidia-smi",
        "os": os_name,
        "driver_version": _get(doc, "driver_version"),
        "cuda_driver_version": _get(doc, "cuda_version"),
        "nvml_version": None,
        "gpu_count": len(gpus),
        "gpus": gpus,
        "errors": {},
    }
