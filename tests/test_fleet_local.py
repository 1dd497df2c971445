"""Fleet runs with `ansible_connection: local` hosts (the controller runs the node command itself, the
same wrapper and the same gathering as over SSH) beside hosts that cannot be reached: exit codes, the
gathered JSON, per-host history, --forks, --host-timeout, version mismatch, Ctrl-C and bad input.
The SSH path runs against real hosts in test_fleet_hosts.py."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from toolkit import __version__ as TOOLKIT_VERSION

from conftest import REPO, toolkit

FAST = ("--scale", "tiny", "--threads", "1", "--workloads", "matmul,memory_bandwidth")


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    return port


def node_toolkit(folder: Path, version: str | None = None) -> str:
    """The toolkit a local node runs: this checkout's, optionally answering --version as another release."""
    path = folder / ("toolkit" if version is None else f"toolkit-{version}")
    # another release announces itself as the controller asks (TOOLKIT_FLEET=1), then this one runs
    fake = f'[ "$TOOLKIT_FLEET" = 1 ] && echo "toolkit-fleet: version {version}" >&2; unset TOOLKIT_FLEET\n'
    path.write_text(f'#!/bin/sh\n{fake if version else ""}exec {sys.executable} -m toolkit "$@"\n')
    path.chmod(0o755)
    return str(path)


def inventory(folder: Path, hosts: dict[str, dict]) -> Path:
    path = folder / "inventory.yml"
    path.write_text(yaml.safe_dump({"all": {"children": {"gpu_nodes": {"hosts": hosts}}}}, sort_keys=False))
    return path


def local(folder: Path, **extra) -> dict:
    """A host the controller runs itself; its own results go to a folder of the test."""
    return {
        "ansible_connection": "local",
        "toolkit_path": node_toolkit(folder),
        "toolkit_results_dir": str(folder / "node-results"),
        "gpu_profile": "cpu",
        **extra,
    }


def test_health_gathers_local_hosts_and_reports_the_unreachable_one(tmp_path):
    inv = inventory(
        tmp_path,
        {
            "alpha": local(tmp_path, health_report_config_path=str(tmp_path / "absent.yml")),
            "beta": local(tmp_path),
            "gone": {"ansible_host": "127.0.0.1", "ansible_port": closed_port()},
            "bare": {"ansible_connection": "local", "toolkit_path": str(tmp_path / "no/toolkit")},
        },
    )
    results = tmp_path / "results"
    proc = toolkit(
        "health", "-i", str(inv), "--results-dir", str(results), "--json", "--skip", "gpu", "--skip", "docker"
    )
    doc = json.loads(proc.stdout)
    states = {h["name"]: h for h in doc["hosts"]}
    assert list(states) == ["alpha", "beta", "gone", "bare"]
    assert states["gone"]["state"] == "unreachable" and "refused" in states["gone"]["message"]
    assert states["bare"]["state"] == "unknown" and "no toolkit at" in states["bare"]["message"]
    for name in ("alpha", "beta"):
        h = states[name]
        # (system.load may be critical on a busy test machine: what matters is that the report came back)
        assert h["state"] in ("ok", "warning", "critical") and h["toolkit_version"] == TOOLKIT_VERSION
        assert {c["name"].split(".")[0] for c in h["result"]["checks"]} == {"system"}
        stored = json.loads(Path(h["saved"]).read_text())
        assert stored["inventory_host"] == name and stored["checks"] == h["result"]["checks"]
    # Nagios: an unreachable host is UNKNOWN, which outranks OK but never hides a WARNING
    severity = {0: 0, 3: 1, 1: 2, 2: 3}
    worst = max((h["exit_code"] for h in doc["hosts"]), key=severity.__getitem__)
    assert worst in (1, 2, 3)
    assert proc.returncode == doc["exit_code"] == worst
    assert doc["summary"]["hosts"] == 4 and len(list(results.glob("fleet-health-*.json"))) == 1
    assert "unreachable" in proc.stderr  # the table went to stderr with --json


def test_bench_forks_history_and_compare_per_host(tmp_path):
    inv = inventory(tmp_path, {"alpha": local(tmp_path), "beta": local(tmp_path)})
    results = tmp_path / "results"
    first = toolkit(
        "bench", "-i", str(inv), "--forks", "1", "--results-dir", str(results), "--json", "-", *FAST
    )
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    a, b = doc["hosts"]
    assert a["state"] == b["state"] == "ok"
    # --forks 1: beta started only after alpha's run ended (times are whole seconds)
    started = {h["name"]: dt.datetime.fromisoformat(h["started_at"].replace("Z", "+00:00")) for h in (a, b)}
    gap = (started["beta"] - started["alpha"]).total_seconds()
    assert gap >= a["duration_seconds"] - 1, (gap, a["duration_seconds"])
    assert {p.name.rsplit("-", 1)[1] for p in results.glob("bench-*.json")} == {"alpha.json", "beta.json"}
    second = toolkit(
        "bench", "-i", str(inv), "--results-dir", str(results), "--json", "-", "--compare", "last", *FAST
    )
    assert second.returncode == 0, second.stderr
    for h in json.loads(second.stdout)["hosts"]:
        comparison = h["result"]["comparison"]
        # each host against its own previous run, not the other host's
        previous = next(x for x in doc["hosts"] if x["name"] == h["name"])
        assert comparison["baseline"] == previous["saved"]
        assert {c["workload"] for c in comparison["changes"]} == {"matmul", "memory_bandwidth"}
    assert len(list(results.glob("bench-*.json"))) == 4


def test_a_version_mismatch_is_reported(tmp_path):
    inv = inventory(
        tmp_path,
        {"old": {"ansible_connection": "local", "toolkit_path": node_toolkit(tmp_path, "0.0.1")}},
    )
    proc = toolkit(
        "health", "-i", str(inv), "--results-dir", str(tmp_path / "r"), "--skip", "gpu", "--skip", "docker"
    )
    assert "0.0.1" in proc.stdout and "version differs" in proc.stdout
    doc = json.loads(next((tmp_path / "r").glob("fleet-health-*.json")).read_text())
    assert doc["hosts"][0]["version_mismatch"] is True and doc["version_mismatches"] == ["old"]


def _node_processes(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def test_host_timeout_stops_the_node_and_keeps_its_finished_loads(tmp_path):
    inv = inventory(tmp_path, {"slow": local(tmp_path)})
    results = tmp_path / "results"
    proc = toolkit(
        "bench",
        "-i",
        str(inv),
        "--results-dir",
        str(results),
        "--json",
        "-",
        "--host-timeout",
        "20",
        "--scale",
        "tiny",
        "--threads",
        "1",
        "--workloads",
        "matmul,kto_lora",
        "--set",
        "kto_lora.measured_steps=400",
    )
    doc = json.loads(proc.stdout)
    host = doc["hosts"][0]
    assert host["state"] == "timeout" and host["exit_code"] == 3 == proc.returncode
    assert "host timeout of 20 s" in host["message"]
    # the node's toolkit was stopped (SIGTERM) and handed back what it finished
    done = [r["workload"] for r in host["result"]["results"] if r["status"] == "pass"]
    assert "matmul" in done and host["result"]["complete"] is False
    assert host["duration_seconds"] < 20 + 25
    assert not _node_processes(str(tmp_path / "node-results"))


def test_ctrl_c_stops_every_host_and_keeps_the_gathered_results(tmp_path):
    results = tmp_path / "results"
    hosts = {
        "alpha": local(tmp_path, toolkit_results_dir=str(tmp_path / "na")),
        "beta": local(tmp_path, toolkit_results_dir=str(tmp_path / "nb")),
    }
    inv = inventory(tmp_path, hosts)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "toolkit",
            "bench",
            "-i",
            str(inv),
            "--results-dir",
            str(results),
            "--json",
            "-",
            "--scale",
            "tiny",
            "--threads",
            "1",
            "--workloads",
            "matmul,kto_lora",
            "--set",
            "kto_lora.measured_steps=400",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120

    # both nodes are in their training load once their saved result shows matmul finished
    def in_training(folder: Path) -> bool:
        for f in folder.glob("bench-*.json"):
            try:
                return any(r["workload"] == "matmul" for r in json.loads(f.read_text())["results"])
            except (ValueError, KeyError):
                return False
        return False

    while not (in_training(tmp_path / "na") and in_training(tmp_path / "nb")):
        assert proc.poll() is None and time.monotonic() < deadline, (
            proc.stderr.read() if proc.poll() else "slow"
        )
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    doc = json.loads(stdout)
    assert doc["interrupted"] is True and doc["exit_code"] == 130
    for h in doc["hosts"]:
        assert h["state"] == "interrupted", h
        assert h["result"] and h["result"]["results"][0]["workload"] == "matmul", h.get("stderr_tail")
        assert Path(h["saved"]).exists()
    saved = json.loads(next(results.glob("fleet-bench-*.json")).read_text())
    assert saved["interrupted"] is True
    assert not _node_processes(str(tmp_path / "na")) and not _node_processes(str(tmp_path / "nb"))


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (("bench", "-i", "{tmp}/none.yml"), 2, "does not exist"),
        (("health", "-i", "{tmp}/none.yml"), 3, "does not exist"),
        (("bench", "-i", "{inv}", "--limit", "nosuch"), 2, "neither a host nor a group"),
        (("bench", "-i", "{inv}", "--recipe", "{tmp}/mine.yaml"), 2, "does not reach the nodes"),
        (("bench", "-i", "{inv}", "--gpu", "a41"), 2, "alpha"),
        (("bench", "-i", "{inv}", "--forks", "0"), 2, "--forks"),
        (("bench", "-i", "{inv}", "--compare", "x.json"), 2, "--compare takes `last`"),
        (("health", "-i", "{inv}", "--bmc", "ipmi://u@127.0.0.1"), 3, "does not go with -i"),
        (("bench", "-i", "{inv}", "--workloads", "nope"), 2, "unknown workload"),
    ],
)
def test_bad_fleet_input_is_one_clear_line(tmp_path, args, code, text):
    inv = inventory(tmp_path, {"alpha": local(tmp_path)})
    argv = [a.format(tmp=tmp_path, inv=inv) for a in args]
    proc = toolkit(*argv, "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == code, proc.stderr
    assert text in proc.stderr and "Traceback" not in proc.stderr
    assert not list((tmp_path / "r").glob("fleet-*"))  # nothing ran, nothing half-written


@pytest.mark.parametrize(
    ("args", "jumps", "command"),
    [
        ("-o ProxyJump=ops@bastion:2222", ((("ops", "bastion", 2222)),), None),
        ('-o "ProxyJump a,b"', ((None, "a", None), (None, "b", None)), None),
        ("-oProxyJump=a -o StrictHostKeyChecking=no", ((None, "a", None),), None),
        ("-J ops@a", (("ops", "a", None),), None),
        ("-o ProxyCommand='nc -X 5 -x proxy:1080 %h %p'", (), "nc -X 5 -x proxy:1080 10.0.0.5 22"),
        ("-o ProxyJump=none", (), None),
        ("-o ControlMaster=auto -o ControlPersist=60s", (), None),
    ],
)  # fmt: skip
def test_the_route_is_read_from_the_ssh_options_as_ansible_passes_them(args, jumps, command):
    from toolkit.fleet.targets import _target

    t = _target("n1", {"ansible_host": "10.0.0.5", "ansible_ssh_common_args": args})
    assert t.jumps == jumps and t.proxy_command == command


def test_become_runs_through_sudo_and_other_methods_are_refused():
    from toolkit.errors import UsageError
    from toolkit.fleet import transport
    from toolkit.fleet.targets import _target

    assert transport._become(_target("n1", {"ansible_become": "yes"})) == ["sudo", "-n", "-u", "root", "--"]
    ops = _target("n1", {"ansible_become": True, "ansible_become_user": "ops"})
    assert transport._become(ops)[3] == "ops"
    assert transport._become(_target("n1", {"ansible_become": False})) == []
    with pytest.raises(UsageError, match="ansible_become_method su"):
        _target("n1", {"ansible_become": True, "ansible_become_method": "su"})
    with pytest.raises(UsageError, match="ProxyJump"):
        _target("n1", {"ansible_ssh_common_args": "-J ssh://"})


def test_a_local_host_with_become_runs_through_sudo(tmp_path):
    """`ansible_connection: local` with `ansible_become`: the node command goes through `sudo -n`, here a
    TEST STUB of sudo on PATH that records its arguments and runs the rest."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sudo.log"
    (bin_dir / "sudo").write_text(f'#!/bin/sh\nprintf "%s " "$@" >> {log}\nshift 4\nexec "$@"\n')
    (bin_dir / "sudo").chmod(0o755)
    inv = tmp_path / "inv.yml"
    host = {"ansible_connection": "local", "toolkit_path": str(Path(sys.executable).with_name("toolkit"))}
    host |= {"ansible_become": True, "ansible_become_user": "ops"}
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"here": host}}}))
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    argv = ("-i", str(inv), "--results-dir", str(tmp_path / "r"), "--json", "--skip", "docker")
    proc = toolkit("health", *argv, env=env)
    h = json.loads(proc.stdout)["hosts"][0]
    assert h["state"] != "unreachable" and h["result"]["checks"], h
    assert log.read_text().startswith("-n -u ops -- sh -c")
