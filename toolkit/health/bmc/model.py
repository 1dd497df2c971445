"""What every BMC reader returns, whatever the protocol: sensors, chassis power and the event log.

IPMI (LAN or in-band) and Redfish readers fill a `BmcReading`; `bmc_checks()` turns it into
checks with one set of rules, so a fan at 0 RPM means the same over either protocol.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from numbers import Real

from toolkit.health.model import Check, CollectorResult, Status

# sensor kind -> (Prometheus value metric, unit shown in reports)
KINDS: dict[str, tuple[str, str]] = {
    "temperature": ("toolkit_bmc_temperature_celsius", "°C"),
    "fan": ("toolkit_bmc_fan_speed_rpm", "RPM"),
    "voltage": ("toolkit_bmc_voltage_volts", "V"),
    "power": ("toolkit_bmc_power_watts", "W"),
    "current": ("toolkit_bmc_current_amperes", "A"),
    "psu": ("", ""),  # discrete: presence/failure, no value metric
    "discrete": ("", ""),  # any other discrete sensor: judged by its asserted states
    "other": ("", ""),
}

THRESHOLD_NAMES = (
    "lower_non_recoverable",
    "lower_critical",
    "lower_non_critical",
    "upper_non_critical",
    "upper_critical",
    "upper_non_recoverable",
)


def reading_of(raw) -> tuple[float | None, str | None]:
    """(value, unreadable) of what a BMC sent as a reading: a finite number is the reading, None (or a
    missing field) is no reading, and anything else (NaN, ±Infinity, text) is no reading either, with
    what was sent kept in `unreadable` so that it is reported, never judged "within limits"."""
    if raw is None:
        return None, None
    if isinstance(raw, Real) and not isinstance(raw, bool):
        value = float(raw)
        if math.isfinite(value):
            return value, None
        return None, str(value)  # nan, inf, -inf
    return None, repr(raw)[:40] if isinstance(raw, str) else type(raw).__name__


def finite_limits(thresholds: dict) -> dict[str, float]:
    """The thresholds that are finite numbers (a NaN limit compares false with everything)."""
    return {k: v for k, v in thresholds.items() if reading_of(v)[0] is not None}


@dataclass
class Sensor:
    """One BMC sensor. `state` is the BMC's own verdict where it gives one (threshold events,
    Redfish Status.Health); `thresholds` are the BMC's limits, keyed by THRESHOLD_NAMES.

    `value` is a finite number or None whatever the reader passes: a NaN, an infinity or text becomes
    None with `unreadable` saying what the BMC sent (every reader gets this, IPMI and Redfish alike)."""

    name: str
    kind: str
    value: float | None = None
    state: Status = Status.OK
    states: list[str] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    present: bool = True
    failed: bool = False  # PSU failure asserted
    power_watts: float | None = None  # PSU input power, when a PSU reports it
    unreadable: str | None = None  # what the BMC sent in place of a number (NaN, "Infinity", "abc")
    # A stable id for this sensor within its BMC: IPMI "sdr:<record id>" / "sensor:<number>", Redfish the
    # resource's @odata.id (or MemberId). Empty at construction means "name:<name>" (older callers).
    key: str = ""
    # Where the sensor is, readable ("CPU1", "Processor 1", "PSU 2"): used to tell apart sensors that
    # share a name ("Temp (CPU1)"), see unique_names().
    where: str | None = None

    def __post_init__(self) -> None:
        self.name = str(self.name)
        self.key = str(self.key) if self.key else f"name:{self.name}"
        self.value, unreadable = reading_of(self.value)
        self.unreadable = self.unreadable or unreadable


def unique_names(sensors: list[Sensor]) -> list[Sensor]:
    """Make names and keys unique within one reading, in place (and return the list). Sensors that
    share a name get their `where` appended ("Temp (CPU1)"), and a number where that still clashes
    ("Temp (DIMM1) #2", or "Temp #2" without a place); keys that clash get "#2", "#3"... Names follow
    the BMC's record order, so the same sensor gets the same name on every run and with every reader."""
    counts: dict[str, int] = {}
    for s in sensors:
        counts[s.name] = counts.get(s.name, 0) + 1
    taken: set[str] = set()
    for s in sensors:
        if counts[s.name] > 1 and s.where:
            s.name = f"{s.name} ({s.where})"
        base, n = s.name, 1
        while s.name in taken:
            n += 1
            s.name = f"{base} #{n}"
        taken.add(s.name)
    keys: set[str] = set()
    for s in sensors:
        base, n = s.key, 1
        while s.key in keys:
            n += 1
            s.key = f"{base}#{n}"
        keys.add(s.key)
    return sensors


SEVERITY_WORDS = {"ok": Status.OK, "warning": Status.WARNING, "critical": Status.CRITICAL}


@dataclass
class SelEntry:
    """One event-log entry. `severity` is the entry's verdict: a Status, or the text "ok" / "warning" /
    "critical" (any case; turned into the Status), or None when the log carries no severity of its own
    and no rule could give one (listed, never alarming). `log` names the log it came from ("SEL",
    "IML", "IEL", "EventLog"...). `when` is the parsed time, timezone-aware where the log says its zone
    (readers that know better than `timestamp`'s text set it; sel_check parses `timestamp` otherwise)."""

    timestamp: str | None
    message: str
    severity: Status | None = Status.OK
    log: str = ""
    when: dt.datetime | None = None

    def __post_init__(self) -> None:
        if isinstance(self.severity, str) and not isinstance(self.severity, Status):
            self.severity = SEVERITY_WORDS.get(self.severity.strip().lower())

    @property
    def severity_label(self) -> str | None:
        return self.severity.label if self.severity is not None else None


@dataclass
class BmcReading:
    protocol: str  # ipmi, ipmi-inband, redfish
    target: str  # display form, never with a password
    sensors: list[Sensor] = field(default_factory=list)
    power_state: str | None = None  # "on" / "off"
    sel: list[SelEntry] | None = field(default_factory=list)  # None: the BMC has no event log
    info: dict = field(default_factory=dict)
    # The BMC's own clock when the reader could read it (IPMI "SEL time", Redfish Manager DateTime):
    # recent events are judged against it, not against this host's clock (a BMC clock may be off by
    # hours or set to local time).
    clock: dt.datetime | None = None


def threshold_status(sensor: Sensor) -> tuple[Status, str]:
    """Compare a numeric reading with the BMC's thresholds; the BMC's own assertion also counts."""
    t, v = finite_limits(sensor.thresholds), reading_of(sensor.value)[0]
    status, why = Status.OK, ""
    if v is not None:
        for name, level in (
            ("upper_non_recoverable", Status.CRITICAL),
            ("upper_critical", Status.CRITICAL),
            ("upper_non_critical", Status.WARNING),
        ):
            if name in t and v >= t[name]:
                status, why = level, f"at or above {name.replace('_', ' ')} {t[name]:g}"
                break
        else:
            for name, level in (
                ("lower_non_recoverable", Status.CRITICAL),
                ("lower_critical", Status.CRITICAL),
                ("lower_non_critical", Status.WARNING),
            ):
                if name in t and v <= t[name]:
                    status, why = level, f"at or below {name.replace('_', ' ')} {t[name]:g}"
                    break
    if sensor.state.severity > status.severity:
        status, why = sensor.state, ", ".join(sensor.states) or "BMC reports it unhealthy"
    return status, why


def _parse_time(stamp: str | None) -> dt.datetime | None:
    if not stamp:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%m/%d/%Y %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return dt.datetime.strptime(stamp[:25], fmt)
        except ValueError:
            continue
    try:
        return dt.datetime.fromisoformat(stamp)
    except ValueError:
        return None


def _comparable(when: dt.datetime, now: dt.datetime) -> dt.datetime:
    """`when` on the same footing as `now`: an aware time in `now`'s zone (or this host's local time
    when `now` is naive); a naive time is taken to be in `now`'s zone (a BMC stamps local time)."""
    if when.tzinfo is None:
        return when.replace(tzinfo=now.tzinfo) if now.tzinfo is not None else when
    if now.tzinfo is None:
        return when.astimezone().replace(tzinfo=None)
    return when


def sel_check(entries: list[SelEntry], window_hours: float = 24.0, now: dt.datetime | None = None) -> Check:
    """WARNING when an entry of the last `window_hours` reports a problem; older entries (and entries
    without a usable time, like IPMI "Pre-Init") are listed but do not alarm forever. `now` is the
    BMC's clock where the reader read it (BmcReading.clock), else this host's."""
    now = now or dt.datetime.now()
    recent_bad = []
    for e in entries:
        when = e.when or _parse_time(e.timestamp)
        if when is not None:
            when = _comparable(when, now)
        if (
            e.severity is not None
            and e.severity is not Status.OK
            and when is not None
            and (now - when).total_seconds() < window_hours * 3600
        ):
            recent_bad.append(e)
    detail = f"{len(entries)} entries"
    if recent_bad:
        detail += f"; {len(recent_bad)} problem(s) in the last {window_hours:g} h: " + " | ".join(
            f"{e.timestamp} {e.message}" for e in recent_bad[-3:]
        )
    elif entries:
        detail += "; latest: " + " | ".join(f"{e.timestamp or '?'} {e.message}" for e in entries[-2:])
    status = Status.WARNING if recent_bad else Status.OK
    return Check("bmc.sel", status, len(entries), "entries", detail, "toolkit_bmc_sel_entries")


def bmc_checks(reading: BmcReading, sel_limit: int = 10, sel_window_hours: float = 24.0) -> CollectorResult:
    result = CollectorResult(
        "bmc", info={"protocol": reading.protocol, "target": reading.target, **reading.info}
    )
    unique_names(reading.sensors)
    working = sum(1 for s in reading.sensors if s.kind == "psu" and s.present and not s.failed)
    for s in reading.sensors:
        if s.kind == "psu":
            _psu_checks(result, s, working)
        else:
            _sensor_check(result, s)
    if reading.power_state is not None:
        on = reading.power_state == "on"
        result.add(
            "bmc.chassis.power",
            Status.OK if on else Status.WARNING,
            reading.power_state,
            None,
            "chassis power is " + reading.power_state,
            "toolkit_bmc_chassis_power_on",
            prom_value=1.0 if on else 0.0,
        )
    if reading.sel is not None:
        result.checks.append(sel_check(reading.sel, sel_window_hours, reading.clock))
        result.checks[-1].collector = "bmc"
        result.info["sel_recent"] = [
            {"timestamp": e.timestamp, "message": e.message, "severity": e.severity_label, "log": e.log}
            for e in reading.sel[-sel_limit:]
        ]
    return result


def _psu_checks(result: CollectorResult, s: Sensor, working: int) -> None:
    """A power supply: present, failed or absent, and its input power where it reports one. An empty bay
    warns only while fewer than two supplies work (no redundancy left): a chassis with six bays and four
    supplies fitted is healthy, and a supply pulled out of a pair warns (its removal is also a SEL event)."""
    if s.failed:
        status, detail = Status.CRITICAL, f"power supply {s.name} failure asserted"
    elif not s.present and working < 2:
        status, detail = (
            Status.WARNING,
            f"power supply {s.name} not present ({working} working: no redundancy)",
        )
    elif not s.present:
        status, detail = Status.OK, f"bay empty ({working} other supplies working)"
    else:
        status, why = threshold_status(s)
        detail = why or "present, no failure"
    watts, unreadable = reading_of(s.power_watts)
    if watts is not None:
        detail += f"; input {watts:g} W"
        result.add(
            f"bmc.power.{s.name}",
            Status.OK,
            watts,
            "W",
            f"{s.name} input power",
            "toolkit_bmc_power_watts",
            sensor=s.name,
            type="psu_input",
        )
    elif unreadable:
        detail += f"; input power unreadable (the BMC sent {unreadable})"
    state = "failed" if s.failed else ("present" if s.present else "absent")
    result.add(f"bmc.psu.{s.name}", status, state, None, detail, None, sensor=s.name, type=s.kind)


def _sensor_check(result: CollectorResult, s: Sensor) -> None:
    """A reading judged by the BMC's thresholds and its own verdict. No reading from a sensor that is
    not there is OK; a reading that is not a finite number is "no reading" and never OK."""
    metric, unit = KINDS.get(s.kind, ("", ""))
    labels = {"sensor": s.name, "type": s.kind}
    name = f"bmc.{s.kind}.{s.name}"
    value, unreadable = reading_of(s.value)  # a reader may have set `value` after construction
    unreadable = unreadable or s.unreadable
    if s.present and unreadable:
        status, why = threshold_status(s)  # the BMC's own verdict still counts when it is worse
        status = status if status.severity > Status.UNKNOWN.severity else Status.UNKNOWN
        detail = f"no reading: the BMC sent {unreadable} in place of a number"
        if why:
            detail += f"; {why}"
        result.add(name, status, None, unit or None, detail, metric or None, **labels)
        return
    if s.kind == "discrete" and s.present:
        status, why = threshold_status(s)
        detail = why if status is not Status.OK else (", ".join(s.states) or "no state asserted")
        result.add(name, status, None, None, detail, None, **labels)
        return
    if not s.present or (value is None and s.state is Status.OK and not s.states):
        # an unpopulated fan header / not-installed sensor: report it, don't alarm
        detail = "no reading (sensor not present)"
        result.add(name, Status.OK, None, unit or None, detail, metric or None, **labels)
        return
    status, why = threshold_status(s)
    if s.kind == "fan" and value is not None and value <= 0 and status is Status.OK:
        status, why = Status.CRITICAL, "fan stopped (0 RPM)"
    limits = ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in finite_limits(s.thresholds).items())
    detail = why or "within limits"
    if limits:
        detail += f" ({limits})"
    result.add(name, status, value, unit or None, detail, metric or None, **labels)


class BmcError(Exception):
    """A BMC that could not be read. `kind`: auth, unreachable, timeout, tls, protocol. The message
    names the target's display form and never a password."""

    def __init__(self, message: str, kind: str = "protocol"):
        super().__init__(message)
        self.kind = kind
