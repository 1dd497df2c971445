"""Outputs that hold against a hostile world (issue 14): a disk that fills during `toolkit bench`, a stop
signal in the middle of a run, and a BMC that names its sensors `[/]…` or reads NaN, "Infinity" or "abc".

Peers are real: a small tmpfs that the test fills while the run goes on, the real `toolkit` command, and
the loopback Redfish server of tests/redfish_server.py (docs/TESTING.md §3) serving a tree the test edits.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
import redfish_server
from redfish_server import BmcState, RedfishServer, make_certificate

from toolkit.health.bmc.ipmi import parse_ipmitool_sensor
from toolkit.health.bmc.model import BmcReading, bmc_checks
from toolkit.health.model import Status

from conftest import BMC_ONLY, REPO, load_schema, toolkit

# ---- bench: a full disk, a stop signal ---------------------------------------------------------------


def _bench(results: Path, *extra: str) -> subprocess.Popen:
    """`toolkit bench` on the CPU at tiny scale: matmul, then a memory_bandwidth load slow enough (a few
    seconds) for the test to act between the two."""
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "toolkit", "bench", "--scale", "tiny", "--threads", "1"),
            *("--workloads", "matmul,memory_bandwidth", "--set", "memory_bandwidth.repeats=600"),
            *("--results-dir", str(results), *extra),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as in a terminal: SIGINT not ignored (a shell without job control would start us with it ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_first_load(proc: subprocess.Popen, results: Path, timeout: float = 180) -> Path:
    """The result file once it holds the first finished load."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in results.glob("bench-*.json"):
            try:
                doc = json.loads(path.read_text())
            except ValueError:  # never: the file is replaced atomically
                pytest.fail(f"{path} is not whole JSON while the run goes on")
            if doc["results"]:
                return path
        if proc.poll() is not None:
            pytest.fail(f"the run ended before its first load was saved: {proc.communicate()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("the first load was never saved")


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs, which the test fills when it wants the disk full."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> None:
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def test_full_disk_during_bench_marks_the_load_names_the_file_and_prints_the_table(tiny_disk):
    """Before: the first save after the disk filled ended the run with `toolkit: error: cannot write:
    No space left on device` (no file named, exit 2): no table, the second load's figures lost."""
    proc = _bench(tiny_disk)
    saved = _wait_first_load(proc, tiny_disk)
    _fill(tiny_disk)  # the disk is full while memory_bandwidth runs
    out, err = proc.communicate(timeout=300)

    assert "Traceback" not in err
    assert proc.returncode == 1, err  # the loads passed, but the result is not on disk
    # every load ran and the table shows both
    assert " pass memory_bandwidth:" in err
    assert "Verdict: pass" in out and "│ matmul" in out and "│ memory_bandwidth" in out
    # the failed save names the load and the file, with a hint
    assert f"toolkit: error: memory_bandwidth's result was not saved: cannot write {saved}" in err
    assert "No space left on device" in err and "  hint: free space in" in err
    assert f"memory_bandwidth: result not saved when the load finished: cannot write {saved}" in out
    # the file on disk is its last whole version: the first load, never half written
    doc = json.loads(saved.read_text())
    jsonschema.validate(doc, load_schema())
    assert [r["workload"] for r in doc["results"]] == ["matmul"]
    assert not list(tiny_disk.glob(".*.tmp"))
    assert f"Saved {saved}" not in err


def test_sigterm_after_the_first_load_keeps_it_on_disk_and_exits_130(tmp_path):
    """A fleet controller stops its nodes with SIGTERM: the finished load stays in a whole file."""
    results = tmp_path / "results"
    proc = _bench(results)
    saved = _wait_first_load(proc, results)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)

    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Interrupted" in err
    doc = json.loads(saved.read_text())
    jsonschema.validate(doc, load_schema())
    assert doc["verdict"] == "interrupted" and doc["complete"] is False
    assert doc["results"][0]["workload"] == "matmul" and doc["results"][0]["status"] == "pass"
    assert not list(results.glob(".*.tmp"))


def _catches_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def test_sigterm_before_the_loads_start_exits_130_not_by_signal(tmp_path):
    """Before: a SIGTERM while torch loaded (before any load ran) killed the process by the signal
    (returncode -15) with nothing said; now it ends as an interrupted run, 130 and one line."""
    results = tmp_path / "results"
    proc = _bench(results)
    deadline = time.monotonic() + 60
    while not _catches_sigterm(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    # before the fix, SIGTERM was caught only once the loads ran (the results file exists by then)
    assert not list(results.glob("bench-*.json")), "SIGTERM is not caught before the loads start"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)

    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err.lower()


def test_sigint_on_a_full_disk_still_exits_130_with_the_finished_load_kept(tiny_disk):
    """Before: the interrupted load's save hit the full disk and the run ended with exit 2 and an
    unnamed `cannot write` instead of 130."""
    proc = _bench(tiny_disk)
    saved = _wait_first_load(proc, tiny_disk)
    _fill(tiny_disk)
    time.sleep(0.5)  # memory_bandwidth is running
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)

    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert f"cannot write {saved}: No space left on device" in err
    doc = json.loads(saved.read_text())
    assert [r["workload"] for r in doc["results"]] == ["matmul"]
    assert not list(tiny_disk.glob(".*.tmp"))


# ---- health: hostile sensor names and non-finite readings ------------------------------------------

# values the test server is given, swapped for what a broken BMC sends once the tree is built
GARBAGE = {1111.0: float("nan"), 2222.0: "Infinity", 3333.0: "abc", 4444.0: float("inf")}


def _swap_garbage(node) -> None:
    """Replace the marker readings; the BMC still calls such a sensor healthy (its own verdict is OK)."""
    if isinstance(node, dict):
        hit = False
        for key, value in list(node.items()):
            if isinstance(value, float) and value in GARBAGE:
                node[key], hit = GARBAGE[value], True
            else:
                _swap_garbage(value)
        if hit and "Status" in node:
            node["Status"] = {"State": "Enabled", "Health": "OK"}
    elif isinstance(node, list):
        for value in node:
            _swap_garbage(value)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("bmc-tls"))


@pytest.fixture
def garbage_tree(monkeypatch):
    built = redfish_server.resources

    def resources(state):
        tree = built(state)
        _swap_garbage(tree)
        return tree

    monkeypatch.setattr(redfish_server, "resources", resources)


def _health(server: RedfishServer, certificate, store: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"TOOLKIT_BMC_PASSWORD": server.state.password, "TOOLKIT_BMC_CA_BUNDLE": str(certificate[0])}
    url = f"redfish://ADMIN@127.0.0.1:{server.port}"
    return toolkit("health", "--bmc", url, *BMC_ONLY, "--save-dir", str(store), *args, env=env, timeout=120)


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"bare {constant} in JSON")

    return json.loads(text, parse_constant=refuse)


def test_sensor_names_from_the_bmc_are_text_never_markup(certificate, tmp_path):
    """Before: `[/]bad` crashed the table with rich's MarkupError (a traceback, exit 1 = WARNING while
    the real state was CRITICAL), and every later `--history` crashed the same way. (The gen13 layout:
    its Thermal resource carries the names as they are; gen14 puts them in resource paths.)"""
    state = BmcState(layout="gen13")
    state.temperatures["[/]bad"] = 95.0  # above its critical limit: the node is CRITICAL
    state.temperatures["[bold red]x[/]"] = 40.0
    store = tmp_path / "store"
    with RedfishServer(state, *certificate) as bmc:
        table = _health(bmc, certificate, store)
        as_json = _health(bmc, certificate, store, "--json")

    assert "Traceback" not in table.stderr + as_json.stderr
    assert table.returncode == 2 == as_json.returncode, table.stderr  # CRITICAL, as the state is
    assert "bmc.temperature.[/]bad" in table.stdout
    assert "bmc.temperature.[bold red]x[/]" in table.stdout
    assert "CRITICAL" in table.stdout
    checks = {c["name"]: c for c in _strict(as_json.stdout)["checks"]}
    assert checks["bmc.temperature.[/]bad"]["status"] == "critical"

    history = toolkit("health", "--history", "--save-dir", str(store))
    assert history.returncode == 0, history.stderr
    assert "Traceback" not in history.stderr
    assert "bmc.temperature.[/]bad" in history.stdout and "bmc.temperature.[bold red]x[/]" in history.stdout


@pytest.mark.parametrize("layout", ["gen13", "gen14"])
def test_non_finite_and_text_readings_are_no_reading_never_ok(certificate, tmp_path, layout, garbage_tree):
    """Before: NaN was judged "ok, within limits" and printed as a bare `NaN` (Infinity for inf) that
    strict JSON parsers reject; "Infinity" and "abc" were "ok, no reading (sensor not present)"."""
    state = BmcState(layout=layout)
    state.temperatures.update({"Nan Temp": 1111.0, "Inf Temp": 2222.0, "Abc Temp": 3333.0})
    state.fans["FAN2"] = 4444.0
    store, prom = tmp_path / "store", tmp_path / "node.prom"
    with RedfishServer(state, *certificate) as bmc:
        proc = _health(bmc, certificate, store, "--json", "--prom", str(prom))
        table = _health(bmc, certificate, store)

    assert "Traceback" not in proc.stderr + table.stderr
    doc = _strict(proc.stdout)  # no bare NaN / Infinity
    checks = {c["name"]: c for c in doc["checks"]}
    for name, sent in [
        ("bmc.temperature.Nan Temp", "nan"),
        ("bmc.temperature.Inf Temp", "'Infinity'"),
        ("bmc.temperature.Abc Temp", "'abc'"),
        ("bmc.fan.FAN2", "inf"),
    ]:
        check = checks[name]
        assert check["status"] == "unknown" and check["value"] is None, check
        assert check["detail"] == f"no reading: the BMC sent {sent} in place of a number"
    assert checks["bmc.temperature.CPU1 Temp"]["status"] == "ok"  # the good readings are untouched
    assert proc.returncode == 3 == table.returncode  # UNKNOWN: nothing is worse
    assert "within limits" not in table.stdout.split("Nan Temp")[1].splitlines()[0]
    for stored in store.glob("health-*.json"):
        _strict(stored.read_text())
    samples = [line.rsplit(" ", 1) for line in prom.read_text().splitlines() if not line.startswith("#")]
    assert all(math.isfinite(float(value)) for _, value in samples)
    assert not [
        series for series, _ in samples if "Nan Temp" in series and series.startswith("toolkit_bmc_temp")
    ]
    history = toolkit("health", "--history", "--json", "--save-dir", str(store))
    assert history.returncode == 0 and _strict(history.stdout)["reports"] >= 1


def test_ipmitool_nan_reading_and_limits_are_not_numbers():
    """`ipmitool sensor` text: `float()` reads "nan" and "inf", which were a value judged OK and limits
    that compare false with everything."""
    text = (
        "CPU Temp    | nan    | degrees C | ok | 0.000 | 0.000 | 0.000 | 85.000 | 90.000 | 95.000\n"
        "System Temp | 31.000 | degrees C | ok | na    | na    | na    | inf    | nan    | 90.000\n"
        "FAN1        | na     | RPM       | na | na    | na    | na    | na     | na     | na\n"
    )  # fmt: skip
    checks = {
        c.name: c for c in bmc_checks(BmcReading("ipmi", "t", parse_ipmitool_sensor(text), sel=None)).checks
    }
    assert checks["bmc.temperature.CPU Temp"].status is Status.UNKNOWN
    assert checks["bmc.temperature.CPU Temp"].value is None
    assert "no reading" in checks["bmc.temperature.CPU Temp"].detail
    system = checks["bmc.temperature.System Temp"]
    assert system.status is Status.OK and system.value == 31.0
    assert (
        "nan" not in system.detail
        and "inf" not in system.detail
        and "upper non recoverable 90" in system.detail
    )
    assert checks["bmc.fan.FAN1"].status is Status.OK  # an absent sensor stays quiet
    assert checks["bmc.fan.FAN1"].detail == "no reading (sensor not present)"
