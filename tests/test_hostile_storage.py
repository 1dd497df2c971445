"""Issue 14, stored results and provision: a node's answer never names a path outside the results folder,
an empty provision target is a usage error, an interrupted provision stops ansible-playbook and all it
started, stored health reports never overwrite one another and retention is range-checked, and corrupt,
future-schema or looping stored files are skipped with a reason, never a traceback nor "the latest run"."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from toolkit.bench.document import SCHEMA_VERSION as BENCH_SCHEMA
from toolkit.history import KNOWN_SCHEMA

from conftest import REPO, toolkit

SYSTEM_ONLY = ("--skip", "gpu", "--skip", "docker", "--skip", "bmc", "--skip", "qdrant")


def bench_doc(started: str, flops: float, schema: int = BENCH_SCHEMA, host: str = "n1") -> dict:
    return {
        "schema_version": schema,
        "host": host,
        "started_at": started,
        "gpu_class": {"name": "cpu"},
        "complete": True,
        "verdict": "pass",
        "results": [{"workload": "matmul", "status": "ok", "metrics": {"flops_per_second": flops}}],
    }


def test_history_knows_the_schema_the_toolkit_writes():
    assert KNOWN_SCHEMA["bench"] == BENCH_SCHEMA


# -- a hostile fleet node -----------------------------------------------------------------------------


def hostile_node(folder: Path, doc: dict) -> str:
    """A node whose `toolkit` answers with `doc` whatever it is asked."""
    answer = folder / "answer.json"
    answer.write_text(json.dumps(doc))
    script = folder / "node-toolkit"
    script.write_text(f"#!/bin/sh\ncat {answer}\nexit 0\n")
    script.chmod(0o755)
    return str(script)


def fleet_inventory(folder: Path, node: str) -> Path:
    inv = folder / "inventory.yml"
    host = {"ansible_connection": "local", "toolkit_path": node, "gpu_profile": "cpu"}
    inv.write_text(yaml.safe_dump({"all": {"children": {"gpu_nodes": {"hosts": {"alpha": host}}}}}))
    return inv


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "doc",
    [
        bench_doc("2026-01-01T00:00:00Z", 1e9) | {"gpu_class": {"name": "../../../escaped"}},
        bench_doc("../../../escaped/x", 1e9),
    ],
    ids=["gpu-class", "started-at"],
)
def test_bench_fleet_keeps_a_nodes_names_inside_the_results_folder(tmp_path, doc):
    # before: gpu_class "../../../escaped" wrote tmp/escaped-alpha.json, two folders above --results-dir
    base = tmp_path / "a" / "b"
    results = base / "results"
    inv = fleet_inventory(tmp_path, hostile_node(tmp_path, doc))
    before = files_under(tmp_path)
    proc = toolkit("bench", "-i", str(inv), "--results-dir", str(results))
    assert proc.returncode == 0, proc.stderr
    new = files_under(tmp_path) - before
    assert new and all(p.parent == results for p in new), sorted(map(str, new))
    stored = [p for p in new if p.name.startswith("bench-")]
    assert len(stored) == 1 and "/" not in stored[0].name
    assert json.loads(stored[0].read_text())["fleet"]["inventory_host"] == "alpha"


def test_health_fleet_keeps_a_nodes_time_inside_the_results_folder(tmp_path):
    doc = {"host": "n", "collected_at": "../../../escaped/x", "status": "ok", "checks": []}
    results = tmp_path / "a" / "b" / "results"
    inv = fleet_inventory(tmp_path, hostile_node(tmp_path, doc))
    before = files_under(tmp_path)
    proc = toolkit("health", "-i", str(inv), "--results-dir", str(results))
    new = files_under(tmp_path) - before
    assert new and all(p.parent == results for p in new), (proc.stderr, sorted(map(str, new)))
    assert any(p.name.startswith("health-") for p in new)


# -- toolkit report and --history over hostile stored files -------------------------------------------


def hostile_folder(folder: Path) -> Path:
    folder.mkdir()
    (folder / "bench-20260101T000000Z-n1-cpu-1.json").write_text(
        json.dumps(bench_doc("2026-01-01T00:00:00Z", 1e9))
    )
    # a newer toolkit's result, later and ten times faster: never the latest run nor compared
    (folder / "bench-20260102T000000Z-n1-cpu-2.json").write_text(
        json.dumps(bench_doc("2026-01-02T00:00:00Z", 1e10, schema=BENCH_SCHEMA + 1))
    )
    (folder / "bench-20260103T000000Z-n1-cpu-3.json").write_text('{"host": "n1", "started_')
    (folder / "bench-20260104T000000Z-n1-cpu-4.json").write_text(
        json.dumps(bench_doc("2026-01-04T00:00:00Z", 1e9) | {"results": "oops"})
    )
    os.symlink("bench-loop-b.json", folder / "bench-loop-a.json")
    os.symlink("bench-loop-a.json", folder / "bench-loop-b.json")
    return folder


def test_report_names_each_skipped_file_and_never_shows_a_future_schema_as_latest(tmp_path):
    # before: a traceback (RuntimeError: Symlink loop); without the loop, the corrupt file vanished
    # without a word and the schema-3 file was "latest run 2026-01-02"
    folder = hostile_folder(tmp_path / "results")
    out = tmp_path / "r.html"
    proc = toolkit("report", "--results-dir", str(folder), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = {line for line in proc.stderr.splitlines() if line.startswith("toolkit report: skipped")}
    assert len(lines) == 5, proc.stderr
    reasons = "\n".join(lines)
    assert "cpu-2.json: schema_version 3 is newer than this toolkit reads (2)" in reasons
    assert "cpu-3.json: not valid JSON" in reasons
    assert "cpu-4.json: `results` is not a list" in reasons
    assert "bench-loop-a.json: unreadable (a symlink loop)" in reasons
    assert "1 bench run(s), 0 health report(s), 5 file(s) skipped" in proc.stderr
    page = out.read_text()
    assert (
        "latest run 2026-01-01T00:00:00Z" in page
        and "2026-01-02T00:00:00Z" not in page.split("Files left out")[0]
    )
    assert "Files left out" in page and "schema_version 3 is newer" in page


def test_compare_refuses_a_future_schema_result(tmp_path):
    folder = hostile_folder(tmp_path / "results")
    proc = toolkit(
        "bench",
        "--compare",
        str(folder / "bench-20260102T000000Z-n1-cpu-2.json"),
        "--scale",
        "tiny",
        "--workloads",
        "matmul",
        "--results-dir",
        str(tmp_path / "out"),
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "cannot be compared: schema_version 3 is newer" in proc.stderr


def test_health_history_skips_corrupt_future_and_looping_reports(tmp_path):
    # before: a traceback (KeyError 'status' on the future-schema file); the corrupt one counted silently
    folder = tmp_path / "h"
    assert toolkit("health", "--save-dir", str(folder), *SYSTEM_ONLY).returncode in (0, 1, 2)
    (folder / "health-20990101T000000Z.json").write_text(
        json.dumps({"schema_version": 99, "host": "n", "collected_at": "2099-01-01T00:00:00Z", "checks": {}})
    )
    (folder / "health-20990102T000000Z.json").write_text("{trunc")
    os.symlink("health-x.json", folder / "health-y.json")
    os.symlink("health-y.json", folder / "health-x.json")
    proc = toolkit("health", "--history", "--save-dir", str(folder), "--json")
    assert "Traceback" not in proc.stderr and proc.returncode in (0, 1, 2), proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["reports"] == 1 and summary["last"] != "2099-01-01T00:00:00Z"
    why = {Path(s["file"]).name: s["reason"] for s in summary["skipped"]}
    assert "newer than this toolkit reads" in why["health-20990101T000000Z.json"]
    assert why["health-20990102T000000Z.json"].startswith("not valid JSON")
    assert "symbolic links" in why["health-x.json"]
    table = toolkit("health", "--history", "--save-dir", str(folder), env={"COLUMNS": "300"})
    assert "Traceback" not in table.stderr, table.stderr
    assert "skipped" in table.stdout and "health-20990101T000000Z.json: schema_version 99" in table.stdout


# -- stored health reports: retention and names ---------------------------------------------------------


@pytest.mark.parametrize("days", ["-1", "nan", "-0.5"])
def test_keep_days_out_of_range_is_a_usage_error(tmp_path, days):
    # before: --keep-days -1 ran, wrote the report and deleted every stored report, the new one included
    folder = tmp_path / "h"
    folder.mkdir()
    old = folder / "health-20260101T000000Z.json"
    old.write_text("{}")
    proc = toolkit("health", "--save-dir", str(folder), f"--keep-days={days}", *SYSTEM_ONLY)
    assert proc.returncode == 3 and "--keep-days" in proc.stderr and "at least 0" in proc.stderr
    assert [p.name for p in folder.iterdir()] == [old.name]


def test_keep_days_zero_keeps_the_report_just_written(tmp_path):
    # before: --keep-days 0 left the folder empty
    folder = tmp_path / "h"
    for _ in range(2):
        proc = toolkit("health", "--save-dir", str(folder), "--keep-days", "0", "--json", *SYSTEM_ONLY)
        assert proc.returncode in (0, 1, 2), proc.stderr
    stored = list(folder.glob("health-*.json"))
    assert len(stored) == 1 and json.loads(stored[0].read_text()) == json.loads(proc.stdout)


def test_reports_of_the_same_second_never_overwrite_each_other(tmp_path):
    # before: two reports stamped the same second shared one name: the second replaced the first
    from toolkit.health import store

    folder = tmp_path / "h"
    doc = {"host": "n", "collected_at": "2026-01-01T00:00:00Z", "status": "ok", "checks": []}
    paths = [store.save(folder, doc | {"n": i}, keep_days=36500) for i in range(3)]
    assert len(set(paths)) == 3
    assert sorted(json.loads(p.read_text())["n"] for p in paths) == [0, 1, 2]
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


# -- provision: empty target and interruption ------------------------------------------------------------


def sleepy_project(folder: Path) -> tuple[Path, Path]:
    """A playbooks folder (TOOLKIT_PLAYBOOKS) whose site.yml runs a quick task on every host, then sleeps
    on `slow`; and an inventory of two local hosts."""
    project = folder / "playbooks"
    project.mkdir()
    (project / "site.yml").write_text(
        "---\n- name: Sleepy\n  hosts: gpu_nodes\n  gather_facts: false\n  tasks:\n"
        "    - name: Quick\n      ansible.builtin.command: 'true'\n      changed_when: false\n"
        "    - name: Nap\n      ansible.builtin.command: \"sleep {{ 0 if inventory_hostname == 'fast' "
        'else 120 }}"\n      changed_when: false\n'
    )
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inv = folder / "inventory.yml"
    inv.write_text(
        yaml.safe_dump({"all": {"children": {"gpu_nodes": {"hosts": {"fast": local, "slow": local}}}}})
    )
    return project, inv


def provision_env(folder: Path, project: Path) -> dict:
    return {"TOOLKIT_PLAYBOOKS": str(project), "TOOLKIT_STATE_DIR": str(folder / "state")}


@pytest.mark.parametrize("target", ["", "   "])
def test_empty_provision_target_is_a_usage_error(tmp_path, target):
    # before: '' provisioned every host of the inventory
    project, inv = sleepy_project(tmp_path)
    proc = toolkit("provision", target, "-i", str(inv), env=provision_env(tmp_path, project), timeout=120)
    assert proc.returncode == 2 and "TARGET is empty" in proc.stderr and "hint:" in proc.stderr
    assert not (tmp_path / "state" / "provision").exists()  # ansible-playbook never started


def _sleepers(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if marker in cmd and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_provision_stops_every_process_and_says_where_hosts_stood(tmp_path, sig):
    # before: exit 130 while ansible-playbook's worker and its `sleep 120` kept running (the worker calls
    # setsid(), so runner's killpg of ansible-playbook's group never reached it)
    project, inv = sleepy_project(tmp_path)
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **provision_env(tmp_path, project)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "provision", "all", "-i", str(inv)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not _sleepers("sleep 120") and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        started = _sleepers("sleep 120") + _sleepers(str(inv))
        assert started, "the playbook never reached its sleep"
        time.sleep(1)  # `fast` ends its Nap
        sent = time.monotonic()
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    # the grace before SIGKILL is 5 s and runner looks every second: generous bound for 2 busy cores
    assert took < 5 + 1 + 6, took
    _, alive = psutil.wait_procs(started, timeout=3)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [p.cmdline() for p in alive]
    assert "fast: finished" in stderr and "slow: interrupted during task 'Nap'" in stderr, stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(("command", "code"), [("bench", 2), ("health", 3)])
def test_empty_fleet_limit_is_a_usage_error_not_every_host(tmp_path, command, code):
    # before: `--limit ''` (an unset shell variable) was read as no --limit, i.e. every host
    _, inv = sleepy_project(tmp_path)
    proc = toolkit(command, "--inventory", str(inv), "--limit", "", timeout=120)
    assert proc.returncode == code, proc.stderr
    assert "empty host pattern" in proc.stderr and "hint:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_report_draws_names_with_dollar_signs_as_text(tmp_path):
    # before: a host named like TeX math (`$\bogus{$`) reached matplotlib's mathtext and the report died
    # with ParseFatalException while drawing the throughput chart
    folder = tmp_path / "results"
    folder.mkdir()
    for i, flops in enumerate((1e9, 1.1e9)):
        doc = bench_doc(f"2026-01-0{i + 1}T00:00:00Z", flops, host="$\\bogus{$")
        (folder / f"bench-2026010{i + 1}T000000Z-cpu.json").write_text(json.dumps(doc))
    out = tmp_path / "r.html"
    proc = toolkit("report", "--results-dir", str(folder), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "2 bench run(s)" in proc.stderr
    assert "$\\bogus{$" in out.read_text()
