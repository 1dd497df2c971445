"""`toolkit health --bmc ipmi://…` against a real IPMI BMC: OpenIPMI's ipmi_sim with a Supermicro-like
sensor set (tests/ipmi_sim.py), readings changed through its console while it runs."""

from __future__ import annotations

import json
import shutil
import time

import ipmi_sim
import pytest

from conftest import BMC_ONLY, toolkit

PASSWORD = "Sim-BMC-pass-7391"
pytestmark = pytest.mark.skipif(
    not (shutil.which("ipmi_sim") and shutil.which("sdrcomp") and shutil.which("ipmitool")),
    reason="needs OpenIPMI's ipmi_sim and ipmitool (apt install openipmi ipmitool)",
)


@pytest.fixture
def bmc(tmp_path):
    sim = ipmi_sim.Bmc(tmp_path / "bmc", password=PASSWORD)
    sim.workdir.mkdir()
    sim.start()
    yield sim
    sim.stop()


def health(bmc_url, *args):
    proc = toolkit(
        "health",
        "--bmc",
        bmc_url,
        *BMC_ONLY,
        "--json",
        *args,
        env={"TOOLKIT_BMC_PASSWORD": PASSWORD},
        timeout=60,
    )
    assert PASSWORD not in proc.stdout + proc.stderr
    doc = json.loads(proc.stdout) if proc.stdout.startswith("{") else None
    return proc, doc


def by_name(doc):
    return {c["name"]: c for c in doc["checks"]}


@pytest.mark.parametrize("tool", ["pyghmi", "ipmitool"])
def test_nominal_bmc_is_ok_with_thresholds_from_the_bmc(bmc, tool):
    proc, doc = health(f"ipmi://ADMIN@127.0.0.1:{bmc.port}", "--bmc-tool", tool)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert doc["status"] == "ok"
    checks = by_name(doc)
    assert checks["bmc.temperature.CPU Temp"]["value"] == pytest.approx(45)
    assert "upper critical 90" in checks["bmc.temperature.CPU Temp"]["detail"]  # the BMC's threshold
    assert checks["bmc.fan.FAN1"]["value"] == pytest.approx(4200)
    assert checks["bmc.voltage.12V"]["value"] == pytest.approx(12.0, abs=0.1)
    assert checks["bmc.power.PSU1 Input Power"]["value"] == pytest.approx(620)
    assert checks["bmc.psu.PSU1 Status"]["value"] == "present"
    assert checks["bmc.psu.PSU2 Status"]["status"] == "ok"
    assert checks["bmc.chassis.power"]["value"] == "on"
    assert checks["bmc.sel"]["value"] == 2


@pytest.mark.parametrize("tool", ["pyghmi", "ipmitool"])
def test_psu_failure_and_hot_cpu_are_critical_and_named(bmc, tool):
    bmc.set_bit("PSU2 Status", 1, 1)  # bit 1: power supply failure detected
    bmc.set_value("CPU Temp", 92)  # over the upper critical threshold (90)
    proc, doc = health(f"ipmi://ADMIN@127.0.0.1:{bmc.port}", "--bmc-tool", tool)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    checks = by_name(doc)
    assert checks["bmc.psu.PSU2 Status"]["status"] == "critical"
    assert "PSU2 Status failure" in checks["bmc.psu.PSU2 Status"]["detail"]
    assert checks["bmc.temperature.CPU Temp"]["status"] == "critical"
    assert checks["bmc.temperature.CPU Temp"]["value"] == pytest.approx(92)
    assert checks["bmc.psu.PSU1 Status"]["status"] == "ok"
    # the table names both too
    table = toolkit(
        "health",
        "--bmc",
        f"ipmi://ADMIN@127.0.0.1:{bmc.port}",
        *BMC_ONLY,
        env={"TOOLKIT_BMC_PASSWORD": PASSWORD},
    )
    assert table.returncode == 2
    assert "PSU2 Status" in table.stdout and "CPU Temp" in table.stdout and "CRITICAL" in table.stdout


def test_stopped_fan_is_critical(bmc):
    bmc.set_value("FAN2", 0)
    proc, doc = health(f"ipmi://ADMIN@127.0.0.1:{bmc.port}")
    assert proc.returncode == 2
    fan = by_name(doc)["bmc.fan.FAN2"]
    assert fan["status"] == "critical" and fan["value"] == 0
    assert by_name(doc)["bmc.fan.FAN1"]["status"] == "ok"


def test_recent_failure_in_the_event_log_warns_and_power_off_is_reported(bmc):
    bmc.add_sel("PSU2 Status", 0x6F, 0x01)  # "failure detected", logged now
    bmc.set_power(False)
    proc, doc = health(f"ipmi://ADMIN@127.0.0.1:{bmc.port}")
    assert proc.returncode == 1, proc.stdout
    checks = by_name(doc)
    assert checks["bmc.sel"]["status"] == "warning" and "PSU2 Status" in checks["bmc.sel"]["detail"]
    assert checks["bmc.chassis.power"]["value"] == "off"


@pytest.mark.parametrize("tool", ["pyghmi", "ipmitool"])
def test_wrong_password_is_unknown_authentication_failed_and_never_printed(bmc, tool):
    wrong = "Wrong-pass-4471"
    proc = toolkit(
        "--debug",
        "health",
        "--bmc",
        f"ipmi://ADMIN@127.0.0.1:{bmc.port}",
        "--bmc-tool",
        tool,
        "--skip",
        "gpu",
        "--json",
        env={"TOOLKIT_BMC_PASSWORD": wrong},
        timeout=60,
    )
    doc = json.loads(proc.stdout)
    conn = by_name(doc)["bmc.connection"]
    assert conn["status"] == "unknown" and "authentication failed" in conn["detail"]
    assert proc.returncode == 3 or doc["status"] in ("warning", "critical")
    assert wrong not in proc.stdout + proc.stderr
    assert "system.memory" in by_name(doc)  # the rest of the report is still there


def test_bmc_not_running_costs_bounded_time_and_the_report_still_comes(bmc, tmp_path):
    bmc.stop()
    start = time.monotonic()
    prom = tmp_path / "node.prom"
    proc = toolkit(
        "health",
        "--bmc",
        f"ipmi://ADMIN@127.0.0.1:{bmc.port}",
        "--skip",
        "gpu",
        "--json",
        "--prom",
        str(prom),
        "--bmc-timeout",
        "5",
        env={"TOOLKIT_BMC_PASSWORD": PASSWORD},
        timeout=60,
    )
    elapsed = time.monotonic() - start
    assert elapsed < 8, f"took {elapsed:.1f} s"  # the 5 s BMC deadline given + start-up
    doc = json.loads(proc.stdout)
    checks = by_name(doc)
    assert checks["bmc.connection"]["status"] == "unknown"
    assert "no answer" in checks["bmc.connection"]["detail"]
    assert "system.disk./" in checks and "docker.daemon" in checks
    text = prom.read_text()
    assert 'toolkit_up{collector="bmc"} 0' in text and 'toolkit_up{collector="system"} 1' in text


def test_password_never_reaches_any_output(bmc, tmp_path):
    """Every output of a failing run — table, JSON, Prometheus file, stored report — is grepped."""
    bmc.set_bit("PSU2 Status", 1, 1)
    pw_file = tmp_path / "pw"
    pw_file.write_text(PASSWORD + "\n")
    outputs = []
    for extra in ([], ["--json"]):
        proc = toolkit(
            "--debug",
            "health",
            "--bmc",
            f"ipmi://ADMIN@127.0.0.1:{bmc.port}",
            "--bmc-password-file",
            str(pw_file),
            "--prom",
            str(tmp_path / "n.prom"),
            "--save-dir",
            str(tmp_path / "reports"),
            *extra,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stdout + proc.stderr
        outputs += [proc.stdout, proc.stderr]
    written = [tmp_path / "n.prom", *(tmp_path / "reports").glob("*.json")]
    outputs += [p.read_text() for p in written]
    assert len(outputs) >= 6
    assert not [o for o in outputs if PASSWORD in o]


def test_settings_file_gives_url_password_and_tool(bmc, tmp_path):
    cfg = tmp_path / "health.yml"
    cfg.write_text(
        f"bmc:\n  url: ipmi://ADMIN@127.0.0.1:{bmc.port}\n  password: {PASSWORD}\n  tool: ipmitool\n"
    )
    cfg.chmod(0o600)
    proc = toolkit(
        "health",
        "--config",
        str(cfg),
        *BMC_ONLY,
        "--json",
        env={"TOOLKIT_BMC_PASSWORD": ""},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    info = next(c for c in doc["collectors"] if c["name"] == "bmc")["info"]
    assert info["reader"] == "ipmitool"
