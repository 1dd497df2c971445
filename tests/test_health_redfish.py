"""The Redfish BMC reader against real HTTPS peers on loopback: a Supermicro-shaped test server
(tests/redfish_server.py, both layouts, sessions, SEL) and the third-party sushy-emulator."""

from __future__ import annotations

import dataclasses
import datetime
import http.server
import json
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import bcrypt
import pytest
import requests
import urllib3
from redfish_server import SESSIONS, BmcState, RedfishServer, make_certificate

from toolkit.health.bmc.model import BmcError, bmc_checks
from toolkit.health.bmc.redfish import read_redfish
from toolkit.health.bmc.target import BmcTarget
from toolkit.health.model import Status

from conftest import BMC_ONLY, toolkit

LAYOUTS = {"gen13": "thermal", "gen14": "thermal_subsystem"}


@pytest.fixture(scope="session")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("bmc-tls"))


@pytest.fixture(autouse=True)
def trusted_ca(monkeypatch, certificate):
    """Trust the test certificate the documented way; REQUESTS_CA_BUNDLE (which this machine exports)
    points elsewhere on purpose: the reader must not be steered by it."""
    monkeypatch.setenv("TOOLKIT_BMC_CA_BUNDLE", str(certificate[0]))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())


@pytest.fixture
def bmc(certificate):
    with RedfishServer(BmcState(), *certificate) as server:
        yield server


def target(server: RedfishServer, **changes) -> BmcTarget:
    fields = {"username": server.state.username, "password": server.state.password, "timeout": 2.0}
    return BmcTarget("redfish", server.host, server.port, **(fields | changes))


def checks_by_name(reading) -> dict:
    return {c.name: c for c in bmc_checks(reading).checks}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(("layout", "expand"), [("gen13", True), ("gen14", True), ("gen14", False)])
def test_nominal_bmc_is_all_ok_with_the_bmcs_own_thresholds(bmc, layout, expand):
    bmc.state.layout, bmc.state.expand = layout, expand
    reading = read_redfish(target(bmc))
    result = bmc_checks(reading)
    checks = {c.name: c for c in result.checks}

    assert result.status is Status.OK, [(c.name, c.detail) for c in result.checks if c.status]
    assert reading.info["layout"] == LAYOUTS[layout] and reading.info["vendor"] == "Supermicro"
    cpu = checks["bmc.temperature.CPU1 Temp"]
    assert cpu.value == 45.0
    assert "upper non critical 80" in cpu.detail and "upper critical 85" in cpu.detail
    assert checks["bmc.fan.FAN1"].value == 5600.0 and "lower critical 500" in checks["bmc.fan.FAN1"].detail
    assert checks["bmc.fan.FAN3"].detail == "no reading (sensor not present)"  # absent fan header
    assert checks["bmc.psu.PS2"].value == "present"
    assert checks["bmc.power.PS1"].value == 215.0
    assert checks["bmc.chassis.power"].value == "on"
    assert checks["bmc.sel"].value == 2
    if expand:  # gen14 voltages come only from an expanded Sensors collection
        assert "lower critical 10.5" in checks["bmc.voltage.12V"].detail


@pytest.mark.parametrize("layout", LAYOUTS)
def test_psu_failure_and_overheating_are_critical(bmc, layout):
    bmc.state.layout = layout
    bmc.state.psus["PS2"]["health"] = "Critical"
    bmc.state.temperatures["CPU1 Temp"] = 87.0

    checks = checks_by_name(read_redfish(target(bmc)))

    assert checks["bmc.psu.PS2"].status is Status.CRITICAL
    assert "PS2 failure" in checks["bmc.psu.PS2"].detail
    assert checks["bmc.temperature.CPU1 Temp"].status is Status.CRITICAL
    assert "at or above upper critical 85" in checks["bmc.temperature.CPU1 Temp"].detail
    assert checks["bmc.psu.PS1"].status is Status.OK


@pytest.mark.parametrize("layout", LAYOUTS)
def test_stopped_fan_is_critical(bmc, layout):
    bmc.state.layout = layout
    bmc.state.fans["FAN2"] = 0.0

    checks = checks_by_name(read_redfish(target(bmc)))

    assert checks["bmc.fan.FAN2"].status is Status.CRITICAL
    assert checks["bmc.fan.FAN2"].value == 0.0
    assert checks["bmc.fan.FAN1"].status is Status.OK


def test_sel_severity_and_power_off(bmc):
    bmc.state.power_state = "Off"
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    recent = {"Created": now.isoformat(), "Message": "CPU1 Temp Upper Critical - going high"}
    old = {
        "Created": "2025-01-11T09:30:00+00:00",
        "Message": "PS1 failure - Asserted",
        "Severity": "Critical",
    }
    bmc.state.sel[:0] = [recent | {"Severity": "Critical"}, old]

    reading = read_redfish(target(bmc))
    checks = checks_by_name(reading)

    assert reading.power_state == "off"
    assert checks["bmc.chassis.power"].status is Status.WARNING
    assert [e.severity for e in reading.sel] == [Status.CRITICAL, Status.OK, Status.OK, Status.CRITICAL]
    assert reading.sel[-1].message == recent["Message"]  # ordered by time, not by position in the log
    assert checks["bmc.sel"].status is Status.WARNING
    assert "CPU1 Temp Upper Critical" in checks["bmc.sel"].detail
    assert "PS1 failure" not in checks["bmc.sel"].detail  # a problem from long ago does not alarm


def test_session_is_opened_used_and_deleted(bmc):
    reading = read_redfish(target(bmc))

    requests_seen = bmc.state.requests
    assert reading.info["auth"] == "session"
    assert requests_seen[1][:2] == ("POST", SESSIONS)
    data = [r for r in requests_seen if r.method == "GET" and r.path != "/redfish/v1"]
    assert data and all(r.auth == "session" for r in data)
    assert requests_seen[-1][:3] == ("DELETE", f"{SESSIONS}/1", "session")
    assert bmc.state.deleted_sessions == ["1"] and bmc.state.sessions == {}


def test_basic_auth_mode_opens_no_session(bmc):
    reading = read_redfish(target(bmc, auth="basic"))

    assert reading.info["auth"] == "basic"
    assert "POST" not in {r.method for r in bmc.state.requests}
    assert all(r.auth == "basic" for r in bmc.state.requests)
    assert bmc_checks(reading).status is Status.OK


@pytest.mark.parametrize("advertised", [True, False])
def test_service_without_sessions_falls_back_to_basic(bmc, advertised):
    bmc.state.sessions_enabled, bmc.state.sessions_advertised = False, advertised

    reading = read_redfish(target(bmc))

    assert reading.info["auth"] == "basic"
    assert bmc.paths("POST") == ([SESSIONS] if advertised else [])
    assert bmc_checks(reading).status is Status.OK


@pytest.mark.parametrize("auth", ["session", "basic"])
def test_wrong_password_is_an_auth_error_without_the_password(bmc, auth):
    wrong = "Wr0ng-Secret-Pw!"
    bad = target(bmc, password=wrong, auth=auth)

    with pytest.raises(BmcError) as caught:
        read_redfish(bad)

    assert caught.value.kind == "auth"
    assert f"authentication failed for {bad.display}" in str(caught.value)
    for secret in (wrong, bmc.state.password):
        assert secret not in str(caught.value) and secret not in repr(caught.value)
    assert bmc.state.sessions == {}


def test_self_signed_certificate_is_refused_by_default(bmc, monkeypatch, certificate):
    monkeypatch.delenv("TOOLKIT_BMC_CA_BUNDLE")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate[0]))  # must not count as trust

    with pytest.raises(BmcError) as caught:
        read_redfish(target(bmc))

    assert caught.value.kind == "tls"
    assert "self-signed certificate" in str(caught.value)
    assert "--bmc-insecure" in str(caught.value)
    assert bmc.state.requests == []  # nothing, credentials least of all, went over the refused link


def test_insecure_tls_accepts_the_certificate_quietly(bmc, monkeypatch):
    monkeypatch.delenv("TOOLKIT_BMC_CA_BUNDLE")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reading = read_redfish(target(bmc, insecure_tls=True))

    assert reading.info["tls_verified"] is False
    assert bmc_checks(reading).status is Status.OK
    assert not [w for w in caught if issubclass(w.category, urllib3.exceptions.InsecureRequestWarning)]


def test_trusted_ca_bundle_verifies_the_certificate(bmc, certificate):
    # TOOLKIT_BMC_CA_BUNDLE is the test certificate (autouse fixture); REQUESTS_CA_BUNDLE is certifi's
    reading = read_redfish(target(bmc))

    assert reading.info["tls_verified"] is True
    assert bmc_checks(reading).status is Status.OK


def test_plain_http_port_is_a_tls_error_not_a_hang():
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    plain.log_message = lambda *args: None
    threading.Thread(target=plain.serve_forever, args=(0.05,), daemon=True).start()
    try:
        with pytest.raises(BmcError) as caught:
            read_redfish(BmcTarget("redfish", "127.0.0.1", plain.server_address[1], "ADMIN", "pw", timeout=2))
    finally:
        plain.shutdown()
        plain.server_close()

    assert caught.value.kind == "tls"
    assert "HTTPS port" in str(caught.value)


def test_ipv6_host_in_brackets(certificate):
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with RedfishServer(BmcState(), *certificate, host="::1") as server:
        reading = read_redfish(target(server))

    assert reading.target == f"redfish://ADMIN@[::1]:{server.port}"
    assert reading.info["tls_verified"] is True and reading.sensors


def test_closed_port_is_unreachable_at_once():
    with socket.socket() as closed:  # bound, never listening: the kernel refuses connections
        closed.bind(("127.0.0.1", 0))
        start = time.monotonic()
        with pytest.raises(BmcError) as caught:
            read_redfish(BmcTarget("redfish", "127.0.0.1", closed.getsockname()[1], "ADMIN", "pw", timeout=5))

    assert caught.value.kind == "unreachable"
    assert time.monotonic() - start < 1.0


def test_silent_server_times_out_within_bounds():
    with socket.socket() as silent:  # accepts TCP connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        start = time.monotonic()
        with pytest.raises(BmcError) as caught:
            read_redfish(BmcTarget("redfish", "127.0.0.1", silent.getsockname()[1], "ADMIN", "pw", timeout=1))

    assert caught.value.kind == "timeout"
    assert time.monotonic() - start < 3 * 1


def test_slow_bmc_is_cut_off_by_the_overall_deadline_and_still_logged_out(bmc):
    bmc.state.delay = 0.3  # each answer within the 1 s timeout, the whole read would take ~4 s

    start = time.monotonic()
    with pytest.raises(BmcError) as caught:
        read_redfish(target(bmc, timeout=1.0))
    elapsed = time.monotonic() - start

    assert caught.value.kind == "timeout"
    assert elapsed < 3 * 1.0 + 1.0  # the deadline, plus at most one logout request
    assert bmc.state.deleted_sessions == ["1"]


# --- sushy-emulator: a third-party Redfish service (Basic auth only, fixed Thermal readings) ---


@pytest.fixture(scope="module")
def sushy(tmp_path_factory, certificate):
    exe = Path(sys.executable).with_name("sushy-emulator")
    if not exe.exists():
        pytest.skip("sushy-emulator is not installed (pip install sushy-tools)")
    work = tmp_path_factory.mktemp("sushy")
    user, password = "operator", "Sushy-Passw0rd"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    (work / "htpasswd").write_text(f"{user}:{hashed}\n")
    port = free_port()
    (work / "emulator.conf").write_text(
        f"SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n"
        f"SUSHY_EMULATOR_LISTEN_PORT = {port}\n"
        f"SUSHY_EMULATOR_AUTH_FILE = {str(work / 'htpasswd')!r}\n"
        f"SUSHY_EMULATOR_STATE_DIR = {str(work / 'state')!r}\n"
        "SUSHY_EMULATOR_FAKE_DRIVER = True\n"
        "SUSHY_EMULATOR_FAKE_SYSTEMS = [{'uuid': '27946b59-9e44-4fa7-8e91-f3527a1ef094', 'name': 'node1',"
        " 'power_state': 'On', 'nics': []}]\n"
    )
    log = (work / "emulator.log").open("w")
    command = [exe, "--config", work / "emulator.conf", "--ssl-certificate", certificate[0]]
    proc = subprocess.Popen([*command, "--ssl-key", certificate[1]], stdout=log, stderr=subprocess.STDOUT)
    probe = requests.Session()
    probe.trust_env = False  # no proxy from the environment: loopback only
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sushy-emulator did not start: {(work / 'emulator.log').read_text()[-2000:]}")
            try:
                probe.get(f"https://127.0.0.1:{port}/redfish/v1", verify=str(certificate[0]), timeout=1)
                break
            except requests.exceptions.ConnectionError:
                time.sleep(0.1)
        yield BmcTarget("redfish", "127.0.0.1", port, user, password, timeout=5)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        probe.close()


@pytest.mark.parametrize("auth", ["basic", "session"])
def test_sushy_emulator_thermal_over_basic_auth(sushy, auth):
    reading = read_redfish(dataclasses.replace(sushy, auth=auth))
    result = bmc_checks(reading)
    checks = {c.name: c for c in result.checks}

    assert reading.info["auth"] == "basic"  # sushy has no session service: session mode falls back
    assert reading.info["layout"] == "thermal" and reading.info["tls_verified"] is True
    assert checks["bmc.temperature.CPU Temp"].value == 41.0
    assert "upper critical 45" in checks["bmc.temperature.CPU Temp"].detail
    assert checks["bmc.fan.BaseBoard System Fan"].value == 2100.0
    assert reading.power_state == "on"
    assert "bmc.sel" not in checks  # no log service there: no SEL check rather than "0 entries"
    assert result.status is Status.OK


def test_sushy_emulator_wrong_password(sushy):
    with pytest.raises(BmcError) as caught:
        read_redfish(dataclasses.replace(sushy, password="not-the-password"))

    assert caught.value.kind == "auth"
    assert "not-the-password" not in str(caught.value)


# --- the CLI end to end: `toolkit health --bmc redfish://…` --------------------------------------------


def cli(server, *args, ca=None):
    # "" overrides the trusted_ca fixture's bundle: only `ca` is trusted
    env = {"TOOLKIT_BMC_PASSWORD": server.state.password, "TOOLKIT_BMC_CA_BUNDLE": str(ca) if ca else ""}
    proc = toolkit(
        "health",
        "--bmc",
        f"redfish://ADMIN@127.0.0.1:{server.port}",
        *BMC_ONLY,
        "--json",
        *args,
        env=env,
        timeout=60,
    )
    assert server.state.password not in proc.stdout + proc.stderr
    return proc, json.loads(proc.stdout)


def test_cli_refuses_the_self_signed_certificate_and_says_how_to_accept_it(bmc):
    proc, doc = cli(bmc)
    conn = {c["name"]: c for c in doc["checks"]}["bmc.connection"]
    assert proc.returncode == 3 and conn["status"] == "unknown" and "--bmc-insecure" in conn["detail"]
    assert not bmc.paths("POST")  # no credentials were sent over the unverified connection


def test_cli_insecure_option_reads_the_bmc_and_the_report_says_so(bmc):
    bmc.state.psus["PS2"].update(health="Critical")
    proc, doc = cli(bmc, "--bmc-insecure")
    checks = {c["name"]: c for c in doc["checks"]}
    assert proc.returncode == 2
    assert checks["bmc.tls"]["value"] == "not verified" and "NOT verified" in checks["bmc.tls"]["detail"]
    assert [c for c in doc["checks"] if c["status"] == "critical" and "PS2" in c["name"]]


def test_cli_with_a_trusted_ca_is_ok(bmc, certificate):
    proc, doc = cli(bmc, ca=certificate[0])
    assert proc.returncode == 0, doc
    assert "bmc.tls" not in {c["name"] for c in doc["checks"]}
