"""The pyghmi reader: one IPMI session over LAN, the SDR cached between runs, sensors keyed by their
SDR record (sensor number, entity) rather than by name, so that same-named sensors keep their own
thresholds and get the same names and keys as with ipmitool (`ipmi_text`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from pathlib import Path

from toolkit.atomic import write_text_atomic
from toolkit.health.bmc.ipmi_text import apply_discrete_states, entity_where, sensor_key
from toolkit.health.bmc.model import BmcReading, SelEntry, Sensor, unique_names
from toolkit.health.bmc.sel_rules import ipmi_event_severity
from toolkit.health.bmc.target import BmcTarget
from toolkit.health.model import Status

# pyghmi's sensor type names -> our kinds (threshold sensors)
_PYGHMI_KINDS = {
    "Temperature": "temperature",
    "Fan": "fan",
    "Voltage": "voltage",
    "Power": "power",
    "Current": "current",
}
# Get Sensor Thresholds (netfn 4, cmd 0x27): readable mask bit -> our threshold name
_THRESHOLD_BITS = (
    "lower_non_critical",
    "lower_critical",
    "lower_non_recoverable",
    "upper_non_critical",
    "upper_critical",
    "upper_non_recoverable",
)
THRESHOLD_CACHE_SECONDS = 3600  # thresholds change only when an admin edits them on the BMC
SEL_LIMIT = 50  # newest entries kept from the event log


def tagged_sdr(cmd, cachedir: str | None):
    """pyghmi's SDR with each entry tagged with its record id, entity id and entity instance (bytes 0-1,
    8 and 9 of the record, IPMI 2.0 table 43-1), which pyghmi reads but does not keep."""
    from pyghmi.ipmi import sdr

    class TaggedSDR(sdr.SDR):
        def make_sdr_entry(self, sdrbytes):
            entry = super().make_sdr_entry(sdrbytes)
            if len(sdrbytes) > 9:
                entry.toolkit_record = sdrbytes[0] | sdrbytes[1] << 8
                entry.toolkit_entity = (sdrbytes[8], sdrbytes[9])
            return entry

    return TaggedSDR(cmd, cachedir)


def pyghmi_reading(cmd, target: BmcTarget, cache: Path | None) -> BmcReading:
    reading = BmcReading("ipmi", target.display)
    cmd.oem_init()
    if cmd._sdr is None and not hasattr(cmd._oem, "init_sdr"):
        cmd._sdr = tagged_sdr(cmd, str(cache) if cache else None)
    sdr_obj = cmd.init_sdr()
    cache_path, cached = _threshold_cache(target, cache)
    fresh = {}
    for entry in list(sdr_obj.sensors.values()):
        if not getattr(entry, "readable", True):
            continue
        rsp = cmd.raw_command(command=0x2D, netfn=4, rslun=entry.sensor_lun, data=(entry.sensor_number,))
        if "error" in rsp:
            continue  # 0xCB: the sensor is not there (an optional device)
        sensor = _sensor_from_pyghmi(entry.decode_sensor_reading(cmd, rsp["data"]), entry, cmd, cached)
        fresh[sensor.key] = sensor.thresholds
        reading.sensors.append(sensor)
    unique_names(reading.sensors)
    if cache_path is not None and fresh != cached:
        with contextlib.suppress(OSError):
            write_text_atomic(cache_path, json.dumps({"time": time.time(), "values": fresh}), mode=0o600)
    reading.power_state = cmd.get_power().get("powerstate")
    reading.clock = _bmc_clock(cmd)
    for ev in list(cmd.get_event_log())[-SEL_LIMIT:]:
        reading.sel.append(_sel_entry(ev))
    reading.info["reader"] = "pyghmi"
    return reading


def _bmc_clock(cmd) -> dt.datetime | None:
    """Get SEL Time (netfn 0x0a, cmd 0x48): seconds since 1970 in the BMC's clock; values up to
    0x20000000 mean "not set" (seconds since the BMC started)."""
    with contextlib.suppress(Exception):
        rsp = cmd.raw_command(netfn=0x0A, command=0x48)
        data = bytes(rsp.get("data", b""))
        if "error" not in rsp and len(data) >= 4:
            stamp = int.from_bytes(data[:4], "little")
            if stamp > 0x20000000:
                return dt.datetime.fromtimestamp(stamp, dt.UTC)
    return None


def _sel_entry(ev: dict) -> SelEntry:
    asserted = not ev.get("deassertion")
    severity = ipmi_event_severity(ev.get("component_type"), str(ev.get("event") or ""), asserted)
    if severity is None and asserted and ev.get("severity") is not None:
        sev = ev.get("severity") or 0  # pyghmi's own reading of the event data
        severity = Status.CRITICAL if sev >= 2 else (Status.WARNING if sev == 1 else Status.OK)
    message = " ".join(str(x) for x in (ev.get("component_type"), ev.get("component"), ev.get("event")) if x)
    if not asserted:
        message += " (deasserted)"
    when = None
    stamp = ev.get("timestamp")
    if isinstance(stamp, str):
        with contextlib.suppress(ValueError):
            when = dt.datetime.fromisoformat(stamp)
    return SelEntry(stamp, message, severity, log="SEL", when=when)


def _threshold_cache(target: BmcTarget, folder: Path | None) -> tuple[Path | None, dict]:
    if folder is None:
        return None, {}
    path = folder / f"thresholds-{target.host}-{target.port}.json"
    try:
        doc = json.loads(path.read_text())
        if time.time() - doc["time"] < THRESHOLD_CACHE_SECONDS:
            return path, doc["values"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return path, {}


def _pyghmi_thresholds(cmd, entry) -> dict[str, float]:
    if not getattr(entry, "has_thresholds", False):
        return {}
    rsp = cmd.raw_command(netfn=4, command=0x27, rslun=entry.sensor_lun, data=(entry.sensor_number,))
    if "error" in rsp or len(rsp.get("data", b"")) < 7:
        return {}
    data = rsp["data"]
    found = {}
    for bit, name in enumerate(_THRESHOLD_BITS):
        if data[0] & (1 << bit):
            found[name] = round(entry.decode_value(cmd, data[1 + bit]), 3)
    return found


def _sensor_from_pyghmi(r, entry, cmd, cached: dict) -> Sensor:
    threshold_type = getattr(entry, "reading_type", 1) == 1
    if threshold_type:
        kind = _PYGHMI_KINDS.get(r.type, "other")
    else:
        kind = "psu" if r.type == "Power Supply" else "discrete"
    health = r.health or 0
    state = Status.CRITICAL if health >= 2 else (Status.WARNING if health == 1 else Status.OK)
    sensor = Sensor(str(r.name).strip(), kind, r.value, state, present=not r.unavailable)
    sensor.key = sensor_key(entry.sensor_number, entry.sensor_lun)
    entity = getattr(entry, "toolkit_entity", None)
    sensor.where = entity_where(*entity) if entity else None
    if kind in ("psu", "discrete"):
        apply_discrete_states(sensor, list(r.states), r.type)
        if kind == "psu":
            sensor.present = any("presence" in s.lower() for s in r.states) or "Present" in r.states
    else:
        sensor.states = list(r.states)
        if r.value is not None:
            hit = cached.get(sensor.key)
            sensor.thresholds = hit if hit is not None else _pyghmi_thresholds(cmd, entry)
    return sensor
