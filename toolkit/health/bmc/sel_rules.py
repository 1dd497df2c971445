"""The severity of an IPMI event from its own fields: the sensor type, the event (the offset's name as
IPMI defines it) and its direction (asserted or deasserted), not from words found anywhere in the line.

"Lower Non-critical going low" is a warning, "Upper Critical going high" critical; a processor IERR,
Thermal Trip or Configuration Error is critical, a correctable ECC error a warning; a power supply whose
"Presence detected" is deasserted has been pulled out. A deasserted condition has ended and is OK, except
where the deassertion itself is the problem (presence, full redundancy). An event no rule knows (OEM
records, "Unknown #0x49") gets no severity: it is listed, never alarming. The names follow the IPMI
2.0 specification's sensor-type and event-offset tables (table 42-3), as ipmitool and pyghmi print them.
"""

from __future__ import annotations

import re

from toolkit.health.model import Status

OK, WARN, CRIT = Status.OK, Status.WARNING, Status.CRITICAL

# ipmitool's and pyghmi's names of the IPMI sensor types (longest first when matched as a prefix)
SENSOR_TYPES = (
    "Temperature", "Voltage", "Current", "Fan", "Physical Security", "Platform Security", "Processor",
    "Power Supply", "Power Unit", "Cooling Device", "Other", "Memory", "Drive Slot / Bay", "Drive Slot",
    "POST Memory Resize", "System Firmwares", "System Firmware Progress", "System Firmware Error",
    "Event Logging Disabled", "Watchdog1", "Watchdog2", "System Event", "Critical Interrupt", "Button",
    "Module / Board", "Microcontroller", "Add-in Card", "Chassis", "Chip Set", "Other FRU",
    "Cable / Interconnect", "Terminator", "System Boot Initiated", "Boot Error", "OS Boot",
    "OS Critical Stop", "OS Stop/Shutdown", "Slot / Connector", "System ACPI Power State",
    "Platform Alert", "Entity Presence", "Monitor ASIC", "LAN", "Management Subsystem Health",
    "Management Subsys Health", "Battery", "Session Audit", "Version Change", "FRU State",
)  # fmt: skip

# (sensor types, event pattern, severity when asserted); the first match wins
_RULES: tuple[tuple[tuple[str, ...], str, Status], ...] = (
    ((), r"non-?recoverable", CRIT),
    ((), r"non-?critical", WARN),  # before "critical": "Lower Non-critical going low" is a warning
    ((), r"(lower|upper) critical going", CRIT),
    ((), r"transition to critical", CRIT),
    (("Processor",), r"ierr|thermal trip|frb[123]|configuration error|uncorrectable|disabled", CRIT),
    (("Processor",), r"throttled|correctable machine check", WARN),
    (("Memory",), r"uncorrectable|parity|scrub failed|configuration error|critical overtemperature", CRIT),
    (("Memory",), r"correctable ecc|logging limit|throttled|spare|device disabled", WARN),
    (("Power Supply",), r"failure detected|^failure$|ac lost|out-of-range|out of range|input lost", CRIT),
    (("Power Supply",), r"predictive failure|configuration error|inactive", WARN),
    (("Power Unit",), r"insufficient resources|failure|soft-power control", CRIT),
    (("Power Unit",), r"redundancy lost|redundancy degraded|non-redundant|ac lost|power input lost", WARN),
    ((), r"redundancy lost|non-redundant: insufficient", WARN),
    (("Critical Interrupt",), r"fatal|uncorrectable|serr", CRIT),
    (("Critical Interrupt",), r"perr|correctable|nmi|timeout", WARN),
    (("Drive Slot / Bay", "Drive Slot"), r"drive fault|failed array|critical array", CRIT),
    (("Drive Slot / Bay", "Drive Slot"), r"predictive failure|rebuild", WARN),
    (("System Event",), r"hardware failure", CRIT),
    (("OS Critical Stop", "OS Stop/Shutdown"), r"critical stop|run-time|kernel panic", CRIT),
    (("OS Critical Stop", "OS Stop/Shutdown"), r"error during", WARN),
    (("Watchdog2", "Watchdog1"), r"reset|power down|power cycle|expired", WARN),
    (("Event Logging Disabled",), r"log full|logging disabled|almost full", WARN),
    (("Management Subsystem Health", "Management Subsys Health"), r"failure|fault", WARN),
    (("Physical Security", "Platform Security"), r"intrusion|violation", WARN),
    (("Battery",), r"failed", CRIT),
    (("Battery",), r"low", WARN),
    (("Boot Error",), r"no bootable|boot error|pxe|invalid boot", WARN),
    (("System Firmwares", "System Firmware Error"), r"unrecoverable|no system memory|failure", CRIT),
    (("Temperature",), r"thermal trip", CRIT),
    (("Cable / Interconnect", "Add-in Card", "Module / Board", "Chip Set"), r"fault|failure|error", WARN),
)
# a state read without its sensor type (`ipmitool sdr elist` prints states, not types): the names
# that mean the same under every type
_UNTYPED: tuple[tuple[str, Status], ...] = (
    (
        r"failure detected|^failure$|ierr|thermal trip|uncorrectable|fatal|drive fault|ac lost|input lost",
        CRIT,
    ),
    (r"configuration error|critical overtemperature|insufficient resources", CRIT),
    (r"predictive failure|redundancy lost|redundancy degraded|correctable|throttled|intrusion", WARN),
)
# deasserting these means the part has gone (or redundancy with it)
_DEASSERT_BAD = ((r"presence detected|^present$|device present|entity present|device inserted|absent", WARN),
                 (r"fully redundant", WARN))  # fmt: skip
# events that say nothing wrong: known, so OK rather than "no severity"
_BENIGN = re.compile(
    r"presence detected|^present$|device present|device inserted|entity present|fully redundant|"
    r"power off/down|power button|reset button|sleep button|timestamp clock sync|boot event|"
    r"log area reset|s0/g0|"
    r"s5/g2|initiated by|system restart|oem system boot|state deasserted|firmware progress|"
    r"motherboard initialization|memory initialization|boot initiated|pci resource|graceful|"
    r"transition to ok|transition to idle|transition to running|monitor",
    re.I,
)


def split_sensor(column: str) -> tuple[str | None, str]:
    """ipmitool's sensor column "Power Supply PS2 Status" -> ("Power Supply", "PS2 Status"); a column
    that starts with no known type -> (None, column)."""
    for kind in sorted(SENSOR_TYPES, key=len, reverse=True):
        if column == kind or column.startswith(kind + " "):
            return kind, column[len(kind) :].strip()
    return None, column


def ipmi_event_severity(sensor_type: str | None, event: str, asserted: bool = True) -> Status | None:
    """The severity of one IPMI event (see the module doc); None when no rule knows it."""
    text = event.strip()
    if not asserted:
        for pattern, level in _DEASSERT_BAD:
            if re.search(pattern, text, re.I):
                return level
        return OK
    for types, pattern, level in _RULES:
        if (not types or sensor_type in types) and re.search(pattern, text, re.I):
            return level
    if sensor_type is None:
        for pattern, level in _UNTYPED:
            if re.search(pattern, text, re.I):
                return level
    if _BENIGN.search(text):
        return OK
    return None
