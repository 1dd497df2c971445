"""ipmitool's text, read into the BMC model: `ipmitool sensor` (readings and thresholds), `ipmitool sdr
elist` (sensor numbers, entities and the states of discrete sensors) and `ipmitool sel elist`.

Both IPMI readers name a sensor alike: its SDR id string as the name, `ipmi:sensor:0x<number>` as the
key, and the entity it sits on ("CPU1", "PSU2") as the `where` that tells same-named sensors apart
(Dell names both processors' sensors `Temp`), so a dashboard does not split when the reader changes.
"""

from __future__ import annotations

import math
import re

from toolkit.health.bmc.ipmi_time import parse_sel_time
from toolkit.health.bmc.model import THRESHOLD_NAMES, SelEntry, Sensor
from toolkit.health.bmc.sel_rules import ipmi_event_severity, split_sensor
from toolkit.health.model import Status

_IPMITOOL_KINDS = {
    "degrees C": "temperature",
    "RPM": "fan",
    "Volts": "voltage",
    "Watts": "power",
    "Amps": "current",
}
# IPMI entity ids (IPMI 2.0 table 43-13) shown as the place of a sensor
_ENTITIES = {
    3: "CPU", 4: "Disk", 5: "Peripheral", 7: "Board", 8: "DIMM", 10: "PSU", 11: "Add-in", 15: "Backplane",
    17: "Drive", 19: "Power Unit", 20: "Power Module", 23: "Chassis", 26: "Drive Bay", 29: "Fan",
    30: "Cooling Unit", 32: "Memory", 34: "BIOS", 35: "OS",
}  # fmt: skip
_PSU_NAME = re.compile(r"\bps\s?\d|psu|power supply|pws", re.I)
_STATUS_LEVEL = {"cr": Status.CRITICAL, "nr": Status.CRITICAL, "nc": Status.WARNING}


def sensor_key(number: int, lun: int = 0) -> str:
    """The stable id of an IPMI sensor: its number (and LUN where not 0), the same in both readers."""
    return f"ipmi:sensor:{number:#04x}" + (f":lun{lun}" if lun else "")


def entity_where(entity: int | None, instance: int | None) -> str | None:
    """ "CPU1" for entity 3 instance 1; None when unknown. Device-relative instances (bit 7) keep their
    number."""
    if entity is None or instance is None or entity not in _ENTITIES:
        return None
    return f"{_ENTITIES[entity]}{instance & 0x7F}"


def discrete_severity(states: list[str], sensor_type: str | None = None) -> Status:
    """The worst asserted state of a discrete sensor, by the event rules (`sensor_type` None: the
    states that mean the same under every type, as `ipmitool sdr elist` prints no type)."""
    worst = Status.OK
    for state in states:
        level = ipmi_event_severity(sensor_type, state, True)
        if level is not None and level.severity > worst.severity:
            worst = level
    return worst


def _number(text: str) -> float | None:
    """A finite number, or None (`float()` also reads "nan" and "inf", which are no limit)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _reading(text: str):
    """A sensor's value column: a number, None for "na" (no reading), else the text itself, which the
    model reports as no reading (`bmc.model.reading_of`) instead of dropping it as absent."""
    if text in ("na", ""):
        return None
    value = _number(text)
    return value if value is not None else text


def parse_ipmitool_sensor(text: str) -> list[Sensor]:
    """`ipmitool sensor`: name | value | unit | status | lnr | lc | lnc | unc | uc | unr.

    The status is read before the value: `FAN2 | na | RPM | nr` is a fan that stopped reporting
    (a blocked or failed fan), not an absent one; `na` with status `na`/`ns` is a sensor not there."""
    sensors = []
    for line in text.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) < 4 or not cols[0]:
            continue
        name, value, unit, status = cols[:4]
        if unit == "discrete":
            sensors.append(_discrete_from_sensor(name, value, status))
            continue
        sensor = Sensor(name, _IPMITOOL_KINDS.get(unit, "other"), _reading(value))
        sensor.thresholds = {
            k: v
            for k, raw in zip(THRESHOLD_NAMES, cols[4:10], strict=False)
            if (v := _number(raw)) is not None
        }
        level = _STATUS_LEVEL.get(status)
        if level is not None:
            sensor.state, sensor.states = level, [f"ipmitool status {status}"]
            if value == "na":  # the BMC says it failed and has no reading: failed, not absent
                sensor.unreadable = f"na (status {status})"
        else:
            sensor.present = value != "na"
        sensors.append(sensor)
    return sensors


def _discrete_from_sensor(name: str, value: str, status: str) -> Sensor:
    sensor = Sensor(name, "psu" if _PSU_NAME.search(name) else "discrete")
    sensor.present = value != "na"
    bits = int(status, 16) >> 8 if status.startswith("0x") else 0
    if sensor.kind == "psu":
        # Power Supply offsets: 0 presence, 1 failure, 2 predictive failure, 3 AC lost
        sensor.present, sensor.failed = bool(bits & 0x01), bool(bits & 0x02 or bits & 0x08)
        if bits & 0x04:
            sensor.state, sensor.states = Status.WARNING, ["Predictive failure"]
    return sensor


def parse_sdr_elist(text: str) -> list[dict]:
    """`ipmitool sdr elist`: name | number | status | entity.instance | reading or states."""
    rows = []
    for line in text.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) < 5 or not re.fullmatch(r"[0-9A-Fa-f]{2}h", cols[1]):
            continue
        entity = re.fullmatch(r"(\d+)\.(\d+)", cols[3])
        rows.append(
            {
                "name": cols[0],
                "number": int(cols[1][:-1], 16),
                "status": cols[2],
                "entity": (int(entity[1]), int(entity[2])) if entity else None,
                "reading": "|".join(cols[4:]).strip(),
            }
        )
    return rows


def merge_sdr(sensors: list[Sensor], rows: list[dict]) -> list[Sensor]:
    """Give `ipmitool sensor`'s sensors their key, place and discrete states from `sdr elist`
    (matched by name and order: the n-th "Temp" of one is the n-th "Temp" of the other); a discrete
    sensor that only `sdr elist` lists is added."""
    by_name: dict[str, list[dict]] = {}
    for row in rows:
        by_name.setdefault(row["name"], []).append(row)
    for sensor in sensors:
        queue = by_name.get(sensor.name)
        if queue:
            _apply_row(sensor, queue.pop(0))
    return sensors


def _apply_row(sensor: Sensor, row: dict) -> None:
    sensor.key = sensor_key(row["number"])
    if row["entity"]:
        sensor.where = entity_where(*row["entity"])
        if sensor.kind == "discrete" and row["entity"][0] == 10:
            sensor.kind = "psu"
    if sensor.kind not in ("psu", "discrete"):
        return
    states = [s.strip() for s in row["reading"].split(",") if s.strip()]
    if row["status"] == "ns" or (not states and row["status"] in ("", "na")):
        sensor.present = sensor.kind == "psu" and sensor.present
        return
    apply_discrete_states(sensor, states)


def apply_discrete_states(sensor: Sensor, states: list[str], sensor_type: str | None = None) -> None:
    """A discrete sensor judged by its asserted states (both readers): a PSU's presence and failure,
    any sensor's worst state by the event rules."""
    states = [s for s in states if not re.fullmatch(r"[\d.]+ \w+", s)]  # "110 Watts" is a reading
    low = [s.lower() for s in states]
    if sensor.kind == "psu":
        sensor.present = any("presence" in s or s == "present" for s in low) or sensor.present
        sensor.failed = sensor.failed or any(
            re.search(r"failure detected|^failure$|ac lost|input lost", s) for s in low
        )
    level = discrete_severity(states, sensor_type)
    if level.severity > sensor.state.severity:
        sensor.state = level
    sensor.states = states


def _split_pipes(line: str) -> list[str]:
    """Split on "|" except inside parentheses: ipmitool's OEM decoding prints
    `Uncorrectable ECC (UnCorrectable ECC |  DIMMD7)`."""
    cols, depth, cur = [], 0, ""
    for ch in line:
        if ch == "|" and depth <= 0:
            cols.append(cur.strip())
            cur = ""
            continue
        depth += (ch == "(") - (ch == ")")
        cur += ch
    cols.append(cur.strip())
    return cols


def parse_ipmitool_sel(text: str, log: str = "SEL") -> list[SelEntry]:
    """`ipmitool sel elist`: id | date | time | sensor | event | direction [| reading]. The time is read
    in every form ipmitool prints (`ipmi_time`), the severity from the event's fields (`sel_rules`)."""
    entries = []
    for line in text.splitlines():
        cols = _split_pipes(line)
        if len(cols) < 5 or not re.fullmatch(r"[0-9A-Fa-f]{1,8}", cols[0]):
            continue
        date, time, sensor, event = cols[1], cols[2], cols[3], cols[4]
        direction = cols[5] if len(cols) > 5 else ""
        when = parse_sel_time(date, time)
        stamp = None if date.startswith(("Pre-Init", "S+")) else f"{date} {time}"
        sensor_type, _name = split_sensor(sensor)
        asserted = direction != "Deasserted"
        severity = ipmi_event_severity(sensor_type, event, asserted)
        message = " ".join(c for c in (sensor, event, direction, *cols[6:]) if c)
        entries.append(SelEntry(stamp, message, severity, log=log, when=when))
    return entries
