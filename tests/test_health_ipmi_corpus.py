"""The IPMI readers against real third-party ipmitool output (tests/fixtures/ipmi/, see PROVENANCE.md)
and, end to end, against OpenIPMI's ipmi_sim answering Debian 12's ipmitool 1.8.19.

Each case names the defect of issue 15 it pins; every "pins" case failed on the code before the fix.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path

import ipmi_sim
import pytest

from toolkit.health.bmc.ipmi import parse_ipmitool_sel, parse_ipmitool_sensor
from toolkit.health.bmc.model import BmcReading, Sensor, bmc_checks
from toolkit.health.model import Status

from conftest import BMC_ONLY, toolkit

CORPUS = Path(__file__).parent / "fixtures" / "ipmi"
UTC = dt.UTC


def checks_of(sensors, sel=None, clock=None):
    reading = BmcReading("ipmi", "t", sensors, sel=sel)
    reading.clock = clock
    return {c.name: c for c in bmc_checks(reading).checks}


def sdr_tools():
    """Imported per test, so that this file also runs against the code before the fix (see the note)."""
    from toolkit.health.bmc.ipmi_text import merge_sdr, parse_sdr_elist
    from toolkit.health.bmc.model import unique_names

    return merge_sdr, parse_sdr_elist, unique_names


def sel_of(name: str):
    return parse_ipmitool_sel((CORPUS / name).read_text())


# ---- `ipmitool sensor` ------------------------------------------------------------------------------


def test_supermicro_blocked_fan_na_nr_is_critical_not_absent():
    """pins: defect 2. A fan blocked by hand reads `FAN2 | na | RPM | nr`: a failed fan, not an
    unpopulated header."""
    checks = checks_of(parse_ipmitool_sensor((CORPUS / "supermicro-fan-blocked.sensor.txt").read_text()))
    fan2 = checks["bmc.fan.FAN2"]
    assert fan2.status is Status.CRITICAL and fan2.value is None
    assert "nr" in fan2.detail and "not present" not in fan2.detail
    assert checks["bmc.fan.FAN1"].status is Status.OK and checks["bmc.fan.FAN1"].value == 8700
    assert checks["bmc.fan.FAN3"].status is Status.OK


def test_supermicro_h11_temperatures_with_the_boards_own_limits():
    checks = checks_of(parse_ipmitool_sensor((CORPUS / "supermicro-h11-amd.sensor.txt").read_text()))
    temps = {n: c for n, c in checks.items() if n.startswith("bmc.temperature.")}
    assert len(temps) == 10 and all(c.status is Status.OK for c in temps.values())
    assert "upper critical 100" in temps["bmc.temperature.CPU1 Temp"].detail
    assert "lower critical -7" in temps["bmc.temperature.System Temp"].detail


def test_hpe_dl360p_discrete_leds_and_limits():
    """An HPE iLO 4 list: discrete LEDs (one not readable) beside temperatures with only some limits."""
    sensors = parse_ipmitool_sensor((CORPUS / "hpe-dl360p-g8.sensor.txt").read_text())
    checks = checks_of(sensors)
    assert len([n for n in checks if n.startswith("bmc.temperature.")]) == 8
    assert checks["bmc.temperature.01-Inlet Ambient"].status is Status.OK
    assert "upper critical 42" in checks["bmc.temperature.01-Inlet Ambient"].detail
    led = {s.name: s for s in sensors}
    assert led["UID Light"].kind == "discrete" and led["UID Light"].present
    assert not led["Sys. Health LED"].present  # `na | discrete | na`: not readable, not alarming
    assert all(c.status is Status.OK for c in checks.values())


def test_intel_s2600wt_discretes_are_reported():
    """pins: defect 8 (discrete sensors beyond PSUs). Each discrete sensor of an Intel board is a check."""
    checks = checks_of(parse_ipmitool_sensor((CORPUS / "intel-s2600wt.sensor.txt").read_text()))
    discrete = [n for n in checks if n.startswith("bmc.discrete.")]
    assert len(discrete) == 9
    assert all(checks[n].status is Status.OK for n in discrete)


# ---- `ipmitool sdr elist`: keys, places, discrete states ---------------------------------------------


def test_dell_same_named_temps_get_unique_readable_names_and_keys():
    """pins: defect 5. Dell's iDRAC names the sensors of both processors, both PSUs and the DIMMs `Temp`."""
    merge_sdr, parse_sdr_elist, unique_names = sdr_tools()
    rows = parse_sdr_elist((CORPUS / "dell-r710-idrac6.sdr-elist.txt").read_text())
    assert len(rows) == 24
    sensors = [Sensor(r["name"], "temperature") for r in rows if "Temp" in r["name"]]
    unique_names(merge_sdr(sensors, rows))
    names = [s.name for s in sensors]
    assert names[:4] == ["Temp (CPU1)", "Temp (CPU2)", "Temp (PSU1)", "Temp (PSU2)"]
    assert names[6:9] == ["Temp (DIMM1)", "Temp (DIMM1) #2", "Temp (DIMM1) #3"]
    assert "Ambient Temp (Board1)" in names and len(set(names)) == len(names)
    assert [s.key for s in sensors][:2] == ["ipmi:sensor:0x01", "ipmi:sensor:0x02"]
    checks = checks_of(sensors)
    assert len([n for n in checks if n.startswith("bmc.temperature.Temp")]) == 7  # none collapsed


def test_ibm_sdr_elist_power_supply_presence_and_states():
    merge_sdr, parse_sdr_elist, _ = sdr_tools()
    rows = parse_sdr_elist((CORPUS / "ibm-telegraf.sdr-elist.txt").read_text())
    sensors = [
        Sensor("Power Supply 1", "psu"),
        Sensor("USB Cable Pres", "discrete"),
        Sensor("SEL", "discrete"),
    ]
    merge_sdr(sensors, rows)
    psu, usb, sel = sensors
    assert psu.present and not psu.failed and psu.where == "PSU1" and psu.key == "ipmi:sensor:0x03"
    assert psu.states == ["Presence detected"]  # "110 Watts" is its reading, not a state
    assert usb.states == ["Connected"] and usb.state is Status.OK
    assert not sel.present  # status ns: no reading


def test_dell_power_good_discretes_are_ok():
    merge_sdr, parse_sdr_elist, unique_names = sdr_tools()
    rows = parse_sdr_elist((CORPUS / "dell-r710-idrac6.sdr-elist.txt").read_text())
    sensors = [Sensor(r["name"], "discrete") for r in rows if "PG" in r["name"] or "FAIL" in r["name"]]
    checks = checks_of(unique_names(merge_sdr(sensors, rows)))
    assert len(checks) == 11 and all(c.status is Status.OK for c in checks.values())
    assert checks["bmc.discrete.VCORE PG (CPU1)"].detail == "State Deasserted"


# ---- `ipmitool sel elist`: times -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "index", "expected"),
    [
        ("quanta-qct-1.8.19.sel-elist.txt", 0, dt.datetime(2022, 12, 14, 22, 9, 44, tzinfo=UTC)),  # CET
        ("quanta-qct-1.8.19.sel-elist.txt", 1, dt.datetime(2022, 6, 10, 17, 31, 43, tzinfo=UTC)),  # CEST
        ("openbmc-list-1.8.19.sel-elist.txt", 0, dt.datetime(2019, 10, 16, 18, 28, 41, tzinfo=UTC)),
        ("xcat-sel-pst.sel-list.txt", 0, dt.datetime(2020, 12, 21, 20, 40, 49, tzinfo=UTC)),  # PM PST
        ("intel-s2600-1.8.x.sel-elist.txt", 0, dt.datetime(2014, 6, 3, 17, 38, 5)),  # no zone: naive
        ("ipmitool-pr346.sel-elist.txt", 2, dt.datetime(2022, 5, 27, 18, 12, 15)),  # PM CST: ambiguous
        ("fboss-openbmc.sel-list.txt", 0, dt.datetime(2026, 5, 14, 20, 40, 26)),
    ],
)
def test_sel_times_in_every_form_ipmitool_prints(fixture, index, expected):
    """pins: defect 1. ipmitool >= 1.8.19 prints `%x` and `%X %Z`: two-digit years, zones, AM/PM."""
    when = sel_of(fixture)[index].when
    assert when == expected
    assert (when.tzinfo is None) == (expected.tzinfo is None)


def test_pre_init_entries_have_no_time_and_never_alarm():
    entries = sel_of("ipmitool-pr346.sel-elist.txt")
    assert [e.when for e in entries[:2]] == [None, None] and entries[0].timestamp is None
    assert entries[0].severity is None  # "reserved #0xff" with no event: no rule, no alarm


def test_bmc_clock_forms():
    from toolkit.health.bmc.ipmi_time import parse_clock

    assert parse_clock("12/03/26 13:53:23 UTC\n") == dt.datetime(2026, 12, 3, 13, 53, 23, tzinfo=UTC)
    assert parse_clock("06/14/2023 10:01:17") == dt.datetime(2023, 6, 14, 10, 1, 17)
    assert parse_clock("S+ 06:21:29") is None


def test_recent_event_is_judged_against_the_bmc_clock():
    """pins: defect 1. An event of 10/16/19 is recent for a BMC whose clock reads 10/16/19 20:00 UTC,
    whatever this host's clock says."""
    entries = sel_of("openbmc-list-1.8.19.sel-elist.txt")
    clock = dt.datetime(2019, 10, 16, 20, 0, tzinfo=UTC)
    sel = checks_of([], sel=entries, clock=clock)["bmc.sel"]
    assert sel.status is Status.WARNING and "nvme0" in sel.detail
    later = checks_of([], sel=entries, clock=clock + dt.timedelta(days=2))["bmc.sel"]
    assert later.status is Status.OK


# ---- `ipmitool sel elist`: severities ------------------------------------------------------------------


def _by_id(fixture):
    text = (CORPUS / fixture).read_text()
    ids = [line.split("|")[0].strip() for line in text.splitlines() if "|" in line]
    return dict(zip(ids, parse_ipmitool_sel(text), strict=True))


def test_non_critical_is_a_warning_not_critical():
    """pins: defect 8 ("Non-critical" matched critical)."""
    assert sel_of("openbmc-list-1.8.19.sel-elist.txt")[0].severity is Status.WARNING
    intel = _by_id("intel-s2600-1.8.x.sel-elist.txt")
    assert intel["b"].severity is Status.WARNING  # Lower Non-critical going low
    assert intel["c"].severity is Status.CRITICAL  # Lower Critical going low
    assert intel["19"].severity is Status.OK and intel["1a"].severity is Status.OK  # deasserted: over
    assert sel_of("ipmitool-pr346.sel-elist.txt")[2].severity is Status.OK  # Deasserted


def test_psu_pulled_out_thermal_trip_and_ecc_are_not_ok():
    """pins: defect 8 (a PSU pulled out, a Thermal Trip and correctable ECC were "ok")."""
    intel = _by_id("intel-s2600-1.8.x.sel-elist.txt")
    assert intel["2"].severity is Status.WARNING  # Power Supply | Presence detected | Deasserted
    assert intel["29"].severity is Status.CRITICAL  # Power Supply AC lost
    assert intel["4"].severity is Status.WARNING  # Redundancy Lost
    assert intel["5"].severity is Status.WARNING  # Non-Redundant: Insufficient Resources (fan)
    assert intel["63"].severity is Status.WARNING  # General Chassis intrusion
    assert intel["1"].severity is Status.OK and intel["2e"].severity is Status.OK  # log cleared, button
    assert intel["13"].severity is None  # "Unknown SPS FW Health": OEM, no rule
    assert sel_of("thermal-trip-notes.sel-list.txt")[0].severity is Status.CRITICAL
    assert all(e.severity is Status.WARNING for e in sel_of("quanta-qct-1.8.19.sel-elist.txt"))


def test_uncorrectable_machine_check_and_hardware_failure_are_critical():
    fboss = sel_of("fboss-openbmc.sel-list.txt")
    assert [e.severity for e in fboss[:3]] == [Status.CRITICAL] * 3
    assert fboss[3].severity is None  # "Temperature #0x17 |  |": nothing to judge
    everest = sel_of("ibm-everest.sel-elist.txt")
    assert [e.severity for e in everest] == [Status.OK, Status.OK, Status.CRITICAL, Status.CRITICAL]
    intel = sel_of("intel-sos.sel-elist.txt")
    assert intel[0].severity is Status.OK and intel[2].severity is None  # State Asserted: no meaning
    assert all(e.log == "SEL" for e in fboss + everest + intel)


# ---- end to end: ipmi_sim + Debian 12's ipmitool --------------------------------------------------------

PASSWORD = "Corpus-pass-5521"
needs_sim = pytest.mark.skipif(
    not (shutil.which("ipmi_sim") and shutil.which("sdrcomp") and shutil.which("ipmitool")),
    reason="needs OpenIPMI's ipmi_sim and ipmitool (apt install openipmi ipmitool)",
)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A 56-sensor board plus a processor status sensor with IERR asserted, whose BMC clock is three days
    behind this host's, with events logged now (BMC time): a PSU failure, a Thermal Trip, a memory
    Configuration Error and a PSU pulled out."""
    work = tmp_path_factory.mktemp("corpus-bmc")
    sim = ipmi_sim.Bmc(
        work, password=PASSWORD, sensors=[*ipmi_sim.board_56(), ipmi_sim.processor_status()], sel=[]
    )
    sim.start()
    sim.set_clock(time.time() - 3 * 86400)
    sim.set_bit("CPU1 Status", 0, 1)  # IERR
    sim.add_sel("PSU2 Status", 0x6F, 0x01)  # failure detected
    sim.add_event(0x07, 0x61, 0x6F, 0x01)  # processor Thermal Trip
    sim.add_event(0x0C, 0x70, 0x6F, 0x07)  # memory Configuration Error
    sim.add_event(0x08, 0x38, 0xEF, 0x00)  # power supply: Presence detected, deasserted
    yield sim
    sim.stop()


def health(sim, tool, cache: Path):
    env = {"TOOLKIT_BMC_PASSWORD": PASSWORD, "TOOLKIT_CACHE_DIR": str(cache)}
    proc = toolkit(
        "health", "--bmc", f"ipmi://ADMIN@127.0.0.1:{sim.port}", "--bmc-tool", tool, "--bmc-timeout", "60",
        *BMC_ONLY, "--json", env=env, timeout=120,
    )  # fmt: skip
    assert PASSWORD not in proc.stdout + proc.stderr
    return proc, json.loads(proc.stdout)


@needs_sim
def test_e2e_debian12_sel_times_against_the_bmc_clock_and_severities(board, tmp_path):
    """pins: defects 1 and 8. Debian 12's ipmitool prints `11/30/26 | 21:54:17 UTC`; the BMC's clock is
    three days behind this host's, so only its own clock makes these events recent."""
    proc, doc = health(board, "ipmitool", tmp_path / "cache")
    checks = {c["name"]: c for c in doc["checks"]}
    sel = checks["bmc.sel"]
    assert sel["status"] == "warning" and sel["value"] == 5, sel  # with the IERR the sensor logged
    recent = next(c for c in doc["collectors"] if c["name"] == "bmc")["info"]["sel_recent"]
    by_event = {e["message"].split(" | ")[0]: e for e in recent}
    severities = sorted(e["severity"] for e in recent)
    assert severities == ["critical"] * 4 + ["warning"], by_event
    assert all(e["log"] == "SEL" and e["timestamp"].endswith("UTC") for e in recent)
    # the discrete processor sensor with IERR asserted (defect 8: discretes beyond PSUs)
    cpu = checks["bmc.discrete.CPU1 Status"]
    assert cpu["status"] == "critical" and "IERR" in cpu["detail"]
    assert proc.returncode == 2


@needs_sim
def test_e2e_both_readers_name_sensors_alike_and_same_names_keep_their_limits(board, tmp_path):
    """pins: defect 5 (pyghmi keyed SDRs by name: the second `Temp` got the first one's limits) and
    defect 8 (the readers named the same sensors differently)."""
    names = {}
    for tool in ("pyghmi", "ipmitool"):
        _proc, doc = health(board, tool, tmp_path / f"cache-{tool}")
        checks = {
            c["name"]: c for c in doc["checks"] if c["name"].startswith("bmc.") and "." in c["name"][4:]
        }
        assert "upper critical 88" in checks["bmc.temperature.Temp (CPU1)"]["detail"], tool
        assert "upper critical 99" in checks["bmc.temperature.Temp (CPU2)"]["detail"], tool
        names[tool] = {
            n for n in checks if n.split(".")[1] in ("temperature", "fan", "voltage", "power", "psu")
        }
    assert names["pyghmi"] == names["ipmitool"]
    assert len(names["ipmitool"]) == 56


@needs_sim
def test_e2e_ipmitool_sdr_cache_is_written_then_used(board, tmp_path):
    cache = tmp_path / "cache"
    _proc, first = health(board, "ipmitool", cache)
    _proc, second = health(board, "ipmitool", cache)
    info = [next(c for c in d["collectors"] if c["name"] == "bmc")["info"] for d in (first, second)]
    assert [i["sdr_cache"] for i in info] == ["used", "used"]  # written by `sdr dump`, then read with -S
    files = list((cache / "ipmi-sdr").glob("sdr-127.0.0.1-*.bin"))
    assert len(files) == 1 and files[0].stat().st_size > 56 * 20
    assert oct(files[0].stat().st_mode & 0o777) == "0o600"
    assert {c["name"] for c in first["checks"]} == {c["name"] for c in second["checks"]}
