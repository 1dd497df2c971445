"""A Redfish chassis' readings in either layout: the legacy `Thermal` and `Power` resources, or the
newer `ThermalSubsystem`, `PowerSubsystem`, `EnvironmentMetrics` and `Sensors` collection. A chassis
with only a `Sensors` collection (NVIDIA HGX GPU boards, Cray mezzanine cards) is read too.

Where a chassis has the legacy `Thermal`, it wins: one request instead of one per sensor, and BMCs answer
slowly. Without it, every temperature, fan, voltage, power and current sensor of the `Sensors`
collection is read, so the new layout gives what the legacy one gives (CPU and DIMM temperatures, total
power), not only the few readings `ThermalMetrics` excerpts.

Every sensor gets a stable `key` (its `@odata.id`, fragment included) and a `where` (its MemberId or
Id, a power supply's bay) that tells same-named sensors apart: HPE names every PSU
`HpeServerPowerSupply`, Dell both CPU temperatures `Temp`.
"""

from __future__ import annotations

from typing import Protocol

from toolkit.health.bmc.model import THRESHOLD_NAMES, Sensor
from toolkit.health.bmc.redfish_links import link_of, name_of, number_of, path_of, tail_of
from toolkit.health.model import Status

HEALTH = {"OK": Status.OK, "Warning": Status.WARNING, "Critical": Status.CRITICAL}
# In these states Status.Health says nothing about the hardware: Gigabyte/AMI report power capping that
# is switched off as `Health: Critical, State: Disabled`.
IDLE_STATES = {"Disabled", "Absent", "StandbyOffline"}
# (Thermal/Power property level, Sensor `Thresholds` level, THRESHOLD_NAMES suffix)
LEVELS = [("NonCritical", "Caution", "non_critical"), ("Critical", "Critical", "critical")]
LEVELS += [("Fatal", "Fatal", "non_recoverable")]
# a Sensor resource's kind, by ReadingType or else by ReadingUnits (DMTF's own mockups omit the type)
READING_TYPES = {"Temperature": "temperature", "Rotational": "fan", "Voltage": "voltage"}
READING_TYPES |= {"Power": "power", "Current": "current"}
READING_UNITS = {"Cel": "temperature", "RPM": "fan", "V": "voltage", "W": "power", "A": "current"}


class Walker(Protocol):
    """What the readers need of the HTTP client (redfish._Client)."""

    def get(self, path: str | None) -> dict | None: ...

    def get_link(self, doc: dict, key: str) -> dict | None: ...

    def members(self, path: str | None) -> list[dict]: ...

    def spare(self) -> bool: ...


def read_chassis(client: Walker, root: dict, chassis: dict) -> tuple[str | None, list[Sensor]]:
    """(layout, sensors) of one chassis; layout is "thermal", "thermal_subsystem", "sensors" or None."""
    base = link_of(chassis) or str(chassis.get("Id") or "?")
    thermal, power = client.get_link(chassis, "Thermal"), client.get_link(chassis, "Power")
    sensors = {} if thermal is not None else _expanded_sensors(client, root, chassis)
    expanded = set(sensors)  # what the one expanded request gave; excerpts' sources join `sensors`
    covered: set[str] = set()  # Sensor resources already read through an excerpt
    if thermal is not None:
        layout, found = "thermal", _legacy_thermal(thermal, base)
    elif (subsystem := client.get_link(chassis, "ThermalSubsystem")) is not None:
        layout, found = "thermal_subsystem", _thermal_subsystem(client, subsystem, sensors, covered)
    else:
        layout, found = ("sensors" if link_of(chassis, "Sensors") else None), []
    if power is not None:
        found += _legacy_power(power, base)
    else:
        found += _power_subsystem(client, chassis, sensors, covered)
    if thermal is None:
        found += _total_power(client, chassis, covered)
        covered |= {s.key for s in found}
        legacy = {"voltage"} if power and power.get("Voltages") else set()  # Cray lists them twice
        found += _sensor_collection(client, chassis, sensors, covered, bool(expanded), legacy)
    return layout, found


def _legacy_thermal(thermal: dict, base: str) -> list[Sensor]:
    found = []
    for i, doc in enumerate(thermal.get("Temperatures") or []):
        found.append(_sensor(doc, "temperature", doc.get("ReadingCelsius"), key=_key(doc, base, "t", i)))
    for i, doc in enumerate(thermal.get("Fans") or []):
        key = _key(doc, base, "f", i)
        if doc.get("ReadingUnits", "RPM") == "RPM":
            found.append(_sensor(doc, "fan", doc.get("Reading"), key=key))
        else:
            found.append(_duty_fan(name_of(doc), doc.get("Reading"), _thresholds(doc), key, doc))
    return found


def _legacy_power(power: dict, base: str) -> list[Sensor]:
    found = [
        _sensor(v, "voltage", v.get("ReadingVolts"), key=_key(v, base, "v", i))
        for i, v in enumerate(power.get("Voltages") or [])
    ]
    for i, doc in enumerate(power.get("PowerSupplies") or []):
        found += _psu(
            doc, _key(doc, base, "p", i), doc.get("PowerInputWatts"), doc.get("LastPowerOutputWatts")
        )
    for i, control in enumerate(power.get("PowerControl") or []):
        if number_of(control.get("PowerConsumedWatts")) is not None:
            name = control.get("Name") or "Total Power"
            key = _key(control, base, "c", i)
            found.append(_sensor(control, "power", control["PowerConsumedWatts"], name=name, key=key))
    return found


def _power_subsystem(client: Walker, chassis: dict, sensors: dict, covered: set[str]) -> list[Sensor]:
    found = []
    for psu in client.members(link_of(client.get_link(chassis, "PowerSubsystem") or {}, "PowerSupplies")):
        metrics = (client.get_link(psu, "Metrics") if client.spare() else None) or {}
        watts_in, watts_out = metrics.get("InputPowerWatts") or {}, metrics.get("OutputPowerWatts") or {}
        covered.update(path_of(m["DataSourceUri"]) for m in metrics.values() if _has_source(m))
        found += _psu(
            psu, link_of(psu) or f"psu/{tail_of(psu)}", watts_in.get("Reading"), watts_out.get("Reading")
        )
    return found


def _total_power(client: Walker, chassis: dict, covered: set[str]) -> list[Sensor]:
    """The chassis' total power from EnvironmentMetrics (the new layout's PowerControl)."""
    metrics = (client.get_link(chassis, "EnvironmentMetrics") if client.spare() else None) or {}
    excerpt = metrics.get("PowerWatts") or {}
    if number_of(excerpt.get("Reading")) is None:
        return []
    key = path_of(excerpt["DataSourceUri"]) if _has_source(excerpt) else f"{link_of(metrics)}#PowerWatts"
    covered.add(key)
    return [_sensor({}, "power", excerpt["Reading"], name="Total Power", key=key)]


def _expanded_sensors(client: Walker, root: dict, chassis: dict) -> dict[str, dict]:
    """The chassis' Sensors collection in one request, where the BMC can expand it; else none."""
    expand = (root.get("ProtocolFeaturesSupported") or {}).get("ExpandQuery") or {}
    mark = "." if expand.get("NoLinks") else "*" if expand.get("ExpandAll") else None
    path = link_of(chassis, "Sensors")
    if not (path and mark):
        return {}
    collection = client.get(f"{path}?$expand={mark}" + ("($levels=1)" if expand.get("Levels") else "")) or {}
    members = [m for m in collection.get("Members") or [] if isinstance(m, dict)]
    return {link: m for m in members if "Reading" in m and (link := link_of(m))}


def _sensor_collection(
    client: Walker, chassis: dict, sensors: dict, covered: set[str], expanded: bool, legacy: set[str]
) -> list[Sensor]:
    """Every reading of the Sensors collection not yet read through an excerpt or of a kind the legacy
    `Power` already gave: expanded where the BMC could, else one request per sensor while the deadline
    allows (the client marks a partial read)."""
    path = link_of(chassis, "Sensors")
    collection = (client.get(path) if path and not expanded else None) or {}
    links = [link for m in collection.get("Members") or [] if isinstance(m, dict) and (link := link_of(m))]
    found = []
    for link in [*sensors, *(link for link in links if link not in sensors)]:
        if link in covered or (link not in sensors and not client.spare()):
            continue
        doc = sensors.get(link) or client.get(link) or {}
        kind = READING_TYPES.get(doc.get("ReadingType")) or READING_UNITS.get(doc.get("ReadingUnits"))
        if kind and kind not in legacy:
            found.append(_sensor(doc, kind, doc.get("Reading"), key=link))
    return found


def _thermal_subsystem(client: Walker, subsystem: dict, sensors: dict, covered: set[str]) -> list[Sensor]:
    def source(excerpt: dict) -> dict:  # the Sensor resource behind an excerpt: its limits and health
        path = path_of(excerpt["DataSourceUri"]) if _has_source(excerpt) else ""
        if path and path not in sensors and client.spare():
            sensors[path] = client.get(path) or {}
        covered.add(path)
        return sensors.get(path) or {}

    found = []
    for excerpt in (client.get_link(subsystem, "ThermalMetrics") or {}).get(
        "TemperatureReadingsCelsius"
    ) or []:
        doc, where = source(excerpt), path_of(excerpt.get("DataSourceUri") or "?")
        name = doc.get("Name") or excerpt.get("DeviceName") or where.rsplit("/", 1)[-1]
        found.append(_sensor(doc, "temperature", excerpt.get("Reading"), name=name, key=where))
    for fan in client.members(link_of(subsystem, "Fans")):
        speed = fan.get("SpeedPercent") or {}
        doc, rpm, key = source(speed), speed.get("SpeedRPM"), link_of(fan) or f"fan/{tail_of(fan)}"
        if doc.get("ReadingUnits") == "RPM":
            value = rpm if rpm is not None else doc.get("Reading")
            found.append(_sensor(doc, "fan", value, fan, name=name_of(fan), key=key))
        elif rpm is not None:  # the data source is a percent sensor: its limits are not in RPM
            found.append(_sensor(fan, "fan", rpm, doc, thresholds={}, key=key))
        else:
            found.append(_duty_fan(name_of(fan), speed.get("Reading"), _thresholds(doc), key, fan, doc))
    return found


def _duty_fan(name: str, percent, thresholds: dict, key: str, *docs: dict) -> Sensor:
    """A fan known only by its duty cycle: not an RPM figure, so it stays out of the RPM metric."""
    if number_of(percent) is None:  # no reading at all: an empty fan header
        return _sensor(docs[0], "fan", None, *docs[1:], name=name, thresholds=thresholds, key=key)
    sensor = _sensor(
        docs[0], "other", percent, *docs[1:], name=f"{name} duty", thresholds=thresholds, key=key
    )
    if sensor.present and percent <= 0:
        sensor.state, sensor.states = Status.CRITICAL, ["fan stopped (0 %)"]
    return sensor


def _psu(doc: dict, key: str, watts_in, watts_out) -> list[Sensor]:
    """A power supply, and its live output as a power reading where it reports no live input. Its rated
    capacity (PowerCapacityWatts, InputRanges) is never taken for a reading. A slot listed with neither
    a status nor a reading (Gigabyte/AMI's `"Name": "nil"`) says nothing and is left out."""
    status = doc.get("Status") or {}
    if not status and number_of(watts_in) is None and number_of(watts_out) is None:
        return []
    where = _bay(doc)
    name = doc.get("Name") or f"PSU {tail_of(doc)}"
    sensor = _sensor(doc, "psu", None, name=name, thresholds={}, key=key, where=where)
    health = status.get("Health") if status.get("State") not in IDLE_STATES else None
    offline = status.get("State") == "UnavailableOffline"
    sensor.failed = health == "Critical" or (offline and health not in (None, "OK"))
    sensor.power_watts = number_of(watts_in) if sensor.present else None
    found = [sensor]
    if sensor.present and sensor.power_watts is None and number_of(watts_out) is not None:
        name = f"{sensor.name} output"
        found.append(_sensor({}, "power", watts_out, name=name, key=f"{key}#output", where=where))
    return found


def _bay(doc: dict) -> str:
    """A power supply's place, readable: the vendor's bay number where it gives one, else its id."""
    for oem in (doc.get("Oem") or {}).values():
        if isinstance(oem, dict) and number_of(oem.get("BayNumber")) is not None:
            return f"bay {oem['BayNumber']}"
    return f"PSU {tail_of(doc)}"


def _sensor(
    doc: dict, kind: str, value, *more: dict, name=None, thresholds=None, key="", where=None
) -> Sensor:
    """A sensor named after and limited by `doc`, judged by the worst Status.Health of `doc` and `more`
    (the BMC's own verdict) where their State says the part is working; any State "Absent" means not
    present."""
    sensor = Sensor(name or name_of(doc), kind, value, key=key, where=where or tail_of(doc))
    sensor.thresholds = _thresholds(doc) if thresholds is None else thresholds
    for resource in (doc, *more):
        status = resource.get("Status") or {}
        sensor.present &= status.get("State") != "Absent"
        if status.get("State") in IDLE_STATES:
            continue
        level = HEALTH.get(status.get("Health"), Status.OK)
        if level is not Status.OK:
            sensor.states.append(f"BMC reports health {status['Health']}")
            sensor.state = level if level.severity > sensor.state.severity else sensor.state
    return sensor


def _thresholds(doc: dict) -> dict[str, float]:
    """Limits in either style: `UpperThresholdCritical: 85` (Thermal, Power) or
    `Thresholds: {UpperCritical: {Reading: 85}}` (Sensor resources)."""
    limits = doc.get("Thresholds") or {}
    found = {}
    for side in ("Upper", "Lower"):
        for legacy, current, suffix in LEVELS:
            value = doc.get(f"{side}Threshold{legacy}")
            if value is None:
                value = (limits.get(f"{side}{current}") or {}).get("Reading")
            found[f"{side.lower()}_{suffix}"] = value
    return {name: float(found[name]) for name in THRESHOLD_NAMES if number_of(found[name]) is not None}


def _key(doc: dict, base: str, kind: str, index: int) -> str:
    """A member's stable id: its @odata.id (fragment included), else the chassis, kind and position."""
    uri = doc.get("@odata.id")
    return uri if isinstance(uri, str) and uri else f"{base}#{kind}/{doc.get('MemberId', index)}"


def _has_source(excerpt) -> bool:
    return isinstance(excerpt, dict) and isinstance(excerpt.get("DataSourceUri"), str)
