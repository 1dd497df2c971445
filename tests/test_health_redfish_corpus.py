"""The Redfish reader against real BMCs' trees (tests/fixtures/redfish/, PROVENANCE.md there): HPE iLO 5
(two servers), Gigabyte/AMI, Intel, OpenBMC, Cray EX and DMTF's reference server, each served over
HTTPS on loopback by tests/redfish_server.py as the capture has it.

The figures asserted here were read off the captures (the `Temperatures`, `Fans`, `Voltages` and
`PowerSupplies` arrays, the log entries and their `Severity`), not off the reader's output. Each test
names the defect of issue 15 it pins; every one of them failed with the reader before the fix.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from redfish_server import BmcState, RedfishServer, load_mockup, make_certificate

from toolkit.health.bmc.model import bmc_checks
from toolkit.health.bmc.redfish import read_redfish
from toolkit.health.bmc.target import BmcTarget
from toolkit.health.model import Status

from conftest import BMC_ONLY, toolkit

CORPUS = Path(__file__).parent / "fixtures" / "redfish"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("bmc-tls"))


@pytest.fixture(autouse=True)
def trusted_ca(monkeypatch, certificate):
    monkeypatch.setenv("TOOLKIT_BMC_CA_BUNDLE", str(certificate[0]))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())


@contextlib.contextmanager
def serve(certificate, system: str, tree: dict | None = None, **state):
    with RedfishServer(BmcState(tree=tree or load_mockup(CORPUS / system), **state), *certificate) as bmc:
        yield bmc


def read(bmc: RedfishServer, timeout: float = 10.0):
    target = BmcTarget(
        "redfish",
        bmc.host,
        bmc.port,
        username=bmc.state.username,
        password=bmc.state.password,
        timeout=timeout,
    )
    return read_redfish(target)


def checks_of(reading) -> dict:
    return {c.name: c for c in bmc_checks(reading).checks}


def doc(system: str, path: str) -> dict:
    """A document of the capture, read straight from the fixture (what the BMC says)."""
    return json.loads((CORPUS / system / path / "index.json").read_text())


# --- what `toolkit health` reports for each capture -------------------------------------------------

# system: (status, temperatures, fans, voltages, PSUs, power readings, currents, events, severities,
#          logs read, logs not read). Fans count RPM fans and duty-cycle fans ("... duty") together.
TABLE = {
    "hpe-ilo5-dl325": (
        "ok",
        35,
        8,
        0,
        2,
        3,
        0,
        361,
        {"ok": 340, "critical": 17, "warning": 4},
        {"IML", "IEL"},
        {"SL"},
    ),
    "hpe-ilo5-xl675d": (
        "ok",  # two of its six PSU bays are empty (State: Absent): four supplies work, so no warning
        65,
        15,
        0,
        6,
        5,
        0,
        30,
        {"ok": 24, "warning": 6},
        {"IML", "IEL", "Event"},
        {"SL"},
    ),
    "gigabyte-ami": ("ok", 20, 0, 28, 0, 1, 0, 30, {"ok": 30}, {"SEL", "EventLog", "BIOS"}, {"AuditLog"}),
    "intel-s2600": ("ok", 28, 6, 2, 2, 1, 0, 20, {"ok": 10, "none": 10}, {"SEL", "RedfishLog"}, set()),
    "openbmc": ("warning", 0, 0, 0, 0, 0, 0, 0, {}, {"EventLog"}, {"Journal", "HostLogger"}),
    "cray-ex235a": (
        "ok",
        53,
        0,
        59,
        0,
        5,
        5,
        24,
        {"ok": 19, "critical": 5},
        {"EventLog", "SEL"},
        {"AuditLog"},
    ),
    "dmtf-rackmount1": ("warning", 3, 2, 2, 1, 2, 0, 3, {"critical": 3}, {"Log", "Log1"}, set()),
}


@pytest.mark.parametrize("system", sorted(TABLE))
def test_toolkit_health_on_each_capture(certificate, system, tmp_path):
    """pins: defects 4, 5, 6, 7 (the closing note's table): `toolkit health --json --prom` end to end."""
    status, temps, fans, volts, psus, power, amps, events, severities, read_, not_read = TABLE[system]
    prom = tmp_path / "bmc.prom"
    with serve(certificate, system) as bmc:
        env = {"TOOLKIT_BMC_PASSWORD": bmc.state.password}
        url = f"redfish://{bmc.state.username}@127.0.0.1:{bmc.port}"
        proc = toolkit("health", "--bmc", url, *BMC_ONLY, "--json", "--prom", str(prom), env=env, timeout=60)
    report = json.loads(proc.stdout)
    info = next(c["info"] for c in report["collectors"] if c["name"] == "bmc")
    kinds = Counter(c["name"].split(".")[1] for c in report["checks"] if c["collector"] == "bmc")
    duty = sum(
        1 for c in report["checks"] if c["name"].startswith("bmc.other.") and c["name"].endswith(" duty")
    )
    sel = next((c for c in report["checks"] if c["name"] == "bmc.sel"), None)

    assert report["status"] == status, [
        (c["name"], c["detail"]) for c in report["checks"] if c["status"] != "ok"
    ]
    assert (kinds["temperature"], kinds["fan"] + duty, kinds["voltage"]) == (temps, fans, volts)
    assert (kinds["psu"], kinds["power"], kinds["current"]) == (psus, power, amps)
    assert sel is not None and sel["value"] == events
    assert info["events_by_severity"] == severities
    assert {entry.split(" (")[0] for entry in info["logs_read"]} == read_
    assert {entry.split(":")[0] for entry in info["logs_not_read"]} == not_read
    names = [c["name"] for c in report["checks"]]
    assert len(names) == len(set(names))  # one check per sensor: none collapsed into another
    series = [line for line in prom.read_text().splitlines() if line.startswith("toolkit_check_status{")]
    assert len(series) == len(names)  # every check its own Prometheus series
    assert sum('check="bmc.psu.' in line for line in series) == psus
    promtool = shutil.which(
        "promtool"
    )  # Debian's `prometheus` package; scripts/install.sh --test installs it
    if promtool:  # the textfile of every real BMC passes Prometheus's own linter
        lint = subprocess.run(
            [promtool, "check", "metrics"], input=prom.read_text(), capture_output=True, text=True, timeout=60
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr


# --- defect by defect -----------------------------------------------------------------------------


def test_gigabyte_power_capping_switched_off_is_not_critical(certificate):
    """pins: defect 4. AMI says `Health: Critical, State: Disabled` for power capping that is off."""
    control = doc("gigabyte-ami", "Chassis/Self/Power")["PowerControl"][0]
    assert control["Status"] == {"Health": "Critical", "State": "Disabled"}  # what the BMC says
    with serve(certificate, "gigabyte-ami") as bmc:
        reading = read(bmc)
    result = bmc_checks(reading)
    checks = {c.name: c for c in result.checks}

    assert checks["bmc.power.Chassis Power Control"].status is Status.OK
    assert checks["bmc.power.Chassis Power Control"].value == 100.0
    assert result.status is Status.OK
    # the two PSU slots the BMC lists as `"Name": "nil"` with nothing else are not reported as supplies
    assert not [name for name in checks if name.startswith("bmc.psu.")]


def test_hpe_power_supplies_of_the_same_name_stay_apart(certificate, tmp_path):
    """pins: defect 5. HPE names all four PSUs `HpeServerPowerSupply`; each keeps its own check, Prometheus
    series and stable key (its @odata.id), named after its bay."""
    supplies = doc("hpe-ilo5-xl675d", "Chassis/1/Power")["PowerSupplies"]
    assert [p.get("Name") for p in supplies[:4]] == ["HpeServerPowerSupply"] * 4
    with serve(certificate, "hpe-ilo5-xl675d") as bmc:
        reading = read(bmc)
    checks = checks_of(reading)  # bmc_checks makes the names unique
    psus = [s for s in reading.sensors if s.kind == "psu"]

    assert [s.key for s in psus] == [p["@odata.id"] for p in supplies]
    assert [s.name for s in psus[:4]] == [f"HpeServerPowerSupply (bay {n})" for n in range(1, 5)]
    assert all(checks[f"bmc.psu.HpeServerPowerSupply (bay {n})"].status is Status.OK for n in range(1, 5))
    for n in range(1, 5):  # the live output each one reports, not its 3000 W rating
        assert checks[f"bmc.power.HpeServerPowerSupply output (bay {n})"].value == 894.0


def test_hpe_iml_and_iel_are_read_and_named(certificate):
    """pins: defect 6. The IML (17 Critical entries) and the iLO Event Log are read; the security log is
    listed as not read, with why."""
    iml = doc("hpe-ilo5-dl325", "Systems/1/LogServices/IML/Entries")["Members"]
    assert sum(e["Severity"] == "Critical" for e in iml) == 17
    with serve(certificate, "hpe-ilo5-dl325") as bmc:
        reading = read(bmc)
    by_log = Counter(e.log for e in reading.sel)
    critical = [e for e in reading.sel if e.severity is Status.CRITICAL]

    assert by_log == {"IML": 143, "IEL": 218}
    assert len(critical) == 17 and {e.log for e in critical} == {"IML"}
    assert reading.info["logs_read"] == ["IML (143 entries)", "IEL (218 entries)"]
    assert reading.info["logs_not_read"] == ["SL: security log (logins)"]
    assert checks_of(reading)["bmc.sel"].value == 361
    assert reading.clock is not None and reading.clock.isoformat() == "2022-04-14T16:43:13+00:00"


def test_cray_event_log_is_read(certificate):
    """pins: defect 6. Cray keeps hardware faults in the Manager's `EventLog`, beside an empty SEL."""
    with serve(certificate, "cray-ex235a") as bmc:
        reading = read(bmc)
    critical = [e for e in reading.sel if e.severity is Status.CRITICAL]

    assert len(reading.sel) == 24 and {e.log for e in reading.sel} == {"EventLog"}
    assert len(critical) == 5 and all("critical fault" in e.message for e in critical)
    assert "AuditLog: audit log (user actions)" in reading.info["logs_not_read"]


def test_event_severity_comes_from_the_entry_not_its_words(certificate):
    """pins: defect 8 (Redfish). Intel's RedfishLog entries carry no Severity: listed, never judged."""
    with serve(certificate, "intel-s2600") as bmc:
        reading = read(bmc)
    logs = {log: [e for e in reading.sel if e.log == log] for log in ("SEL", "RedfishLog")}

    assert len(logs["SEL"]) == 10 and all(e.severity is Status.OK for e in logs["SEL"])
    assert len(logs["RedfishLog"]) == 10 and all(e.severity is None for e in logs["RedfishLog"])
    assert any("login failed" in e.message for e in logs["RedfishLog"])


@pytest.mark.parametrize(
    ("system", "log", "size", "count"), [("intel-s2600", "SEL", 3, 10), ("hpe-ilo5-dl325", "IEL", 50, 218)]
)
def test_log_paging_is_followed(certificate, system, log, size, count):
    """pins: defect 8 (Redfish paging). The same logs served a few entries a page, bmcweb-style."""
    with serve(certificate, system, page_size=size) as bmc:
        reading = read(bmc)
        pages = [p for p in bmc.paths("GET") if p.endswith(f"/{log}/Entries")]

    assert len(pages) == -(-count // size)  # every page, once
    assert sum(e.log == log for e in reading.sel) == count
    assert "partial" not in reading.info


def test_new_layout_gives_cpu_dimm_and_total_power(certificate):
    """pins: defect 7. DMTF's reference server with its legacy Thermal and Power withdrawn: the new layout
    alone still gives the CPU and DIMM temperatures and the chassis' total power. (DMTF's mockup is a
    reference, not one machine: its two layouts do not carry the same figures, so they are not compared
    value by value.)"""
    tree = load_mockup(CORPUS / "dmtf-rackmount1")
    for key in ("Thermal", "Power"):
        del tree["/redfish/v1/Chassis/1U"][key]
    with serve(certificate, "dmtf-rackmount1", tree=tree) as bmc:
        reading = read(bmc)
    checks = checks_of(reading)

    assert reading.info["layout"] == "thermal_subsystem"
    assert checks["bmc.temperature.CPU #1 Temperature"].value == 44.0
    assert checks["bmc.temperature.CPU #1 Temperature"].status is Status.WARNING  # Health: Warning
    assert [checks[f"bmc.temperature.DIMM #{n} Temperature"].value for n in (1, 2, 3)] == [44.0, 43.0, 45.0]
    assert checks["bmc.power.Total Power"].value == 374.0
    assert checks["bmc.psu.Power Supply Bay 1"].detail.endswith("input 937.4 W")  # Metrics.InputPowerWatts
    assert "partial" not in reading.info


def test_chassis_with_only_sensors_is_read(certificate):
    """pins: defect 7. Cray's mezzanine cards have a `Sensors` collection and an empty `Power`: each
    card's 20 sensors are read, and the two cards' same-named sensors stay apart."""
    members = doc("cray-ex235a", "Chassis/Mezz0/Sensors")["Members"]
    with serve(certificate, "cray-ex235a") as bmc:
        reading = read(bmc)
    checks = checks_of(reading)
    mezz0 = [s for s in reading.sensors if s.key.startswith("/redfish/v1/Chassis/Mezz0/")]

    assert len(mezz0) == len(members) == 20
    assert checks["bmc.temperature.Cassini 0 Temperature (Mezz0)"].value == 47.0
    assert "bmc.temperature.Cassini 0 Temperature (Mezz1)" in checks
    assert checks["bmc.current.0.85V S0 Current (Mezz0)"].value == 17.2


def test_rated_psu_capacity_is_never_a_reading(certificate):
    """pins: defect 7. DMTF's legacy PSU: 800 W rated (PowerCapacityWatts), 325 W live output."""
    supply = doc("dmtf-rackmount1", "Chassis/1U/Power")["PowerSupplies"][0]
    assert (supply["PowerCapacityWatts"], supply["LastPowerOutputWatts"]) == (800, 325)
    with serve(certificate, "dmtf-rackmount1") as bmc:
        reading = read(bmc)
    checks = checks_of(reading)
    values = {c.value for c in checks.values()}

    assert checks["bmc.power.Power Supply Bay output"].value == 325.0
    assert 800.0 not in values
    assert checks["bmc.psu.Power Supply Bay"].status is Status.WARNING  # Health: Warning (predicted failure)


def test_empty_psu_bays_warn_only_without_redundancy(certificate):
    """The XL675d capture has six PSU bays and four supplies: its empty bays are OK. The same reading with
    only one supply left (simulated: the capture's PSUs marked absent) warns for every empty bay."""
    with serve(certificate, "hpe-ilo5-xl675d") as bmc:
        reading = read(bmc)
    checks = checks_of(reading)
    empty = [c for n, c in checks.items() if n.startswith("bmc.psu.") and c.value == "absent"]
    assert len(empty) == 2 and all(c.status is Status.OK for c in empty)
    assert all(c.detail == "bay empty (4 other supplies working)" for c in empty)
    psus = [s for s in reading.sensors if s.kind == "psu"]
    for s in psus[1:]:
        s.present = False
    checks = checks_of(reading)
    absent = [c for n, c in checks.items() if n.startswith("bmc.psu.") and c.value == "absent"]
    assert len(absent) == 5 and all(c.status is Status.WARNING for c in absent)
    assert "no redundancy" in absent[0].detail


def test_log_paging_stops_at_the_deadline_and_keeps_what_it_read(certificate):
    """pins: defect 8 (paging within the deadline). HPE's IEL (218 entries) served two a page by a slow BMC
    (simulated latency): the read ends inside its deadline, keeps the pages it got and says the log is
    partial instead of running over or dropping the log."""
    timeout = 4.0
    with serve(certificate, "hpe-ilo5-dl325", page_size=2, delay=0.02) as bmc:
        started = time.monotonic()
        reading = read(bmc, timeout=timeout)
        elapsed = time.monotonic() - started
    iel = [e for e in reading.sel if e.log == "IEL"]

    assert elapsed < timeout + 1.0
    assert 0 < len(iel) < 218
    assert any(entry.startswith("IEL") and "partial" in entry for entry in reading.info["logs_read"])
