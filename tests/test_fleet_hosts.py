"""Fleet runs against three real test hosts (Debian booted with systemd-nspawn, each in its own network
namespace, over SSH): the toolkit installed on each by the `health_report` role (with the `vectors`
extra, from a wheelhouse built here), then `toolkit health -i` and `toolkit bench -i` across all three in
parallel. In the bench run one host is powered off while its bench runs: it is reported unreachable,
the other two complete, and the gathered JSON holds all three.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from llama_server import free_port

from toolkit import __version__ as TOOLKIT_VERSION

import testhosts
from conftest import REPO, toolkit

MISSING = testhosts.requirements_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

HOSTS = (51, 52, 53)  # subnets and namespaces no other test uses
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    base = tmp_path_factory.mktemp("fleet")
    start = time.monotonic()
    wheels = testhosts.build_wheelhouse(base / "wheelhouse", extras="vectors")
    TIMINGS["wheelhouse_s"] = round(time.monotonic() - start, 1)
    testhosts.build_image()
    lab = testhosts.Lab(base / "lab")
    try:
        start = time.monotonic()
        threads = [threading.Thread(target=lab.start_host, args=(n,)) for n in HOSTS]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        hosts = [lab.hosts[n] for n in HOSTS if n in lab.hosts]
        assert len(hosts) == len(HOSTS), "a test host did not boot"
        TIMINGS["boot_s"] = round(time.monotonic() - start, 1)
        inventory = lab.inventory(
            hosts,
            {
                "health_report_wheelhouse": str(wheels),
                "health_report_extras": ["vectors"],
                "health_report_on_boot": "1h",
                "health_report_interval": "1h",
                "health_report_ipmi_detect": False,
            },
            path=lab.dir / "inv-fleet.yml",
        )
        start = time.monotonic()
        proc = toolkit(
            "provision",
            "all",
            "--roles",
            "health_report",
            "-i",
            str(inventory),
            env={"TOOLKIT_STATE_DIR": str(base / "state")},
            timeout=1200,
        )
        TIMINGS["install_s"] = round(time.monotonic() - start, 1)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        yield lab, hosts, inventory, base
    finally:
        lab.close()
        print("\nfleet timings (s):", json.dumps(TIMINGS))


def test_health_across_the_fleet_gathers_every_host(fleet):
    _lab, hosts, inventory, base = fleet
    results = base / "results-health"
    start = time.monotonic()
    proc = toolkit(
        "health",
        "-i",
        str(inventory),
        "--limit",
        "gpu_nodes",
        "--results-dir",
        str(results),
        "--json",
        "--skip",
        "docker",
    )
    TIMINGS["health_sweep_s"] = round(time.monotonic() - start, 1)
    doc = json.loads(proc.stdout)
    assert doc["kind"] == "fleet" and doc["command"] == "health"
    assert [h["name"] for h in doc["hosts"]] == [h.name for h in hosts]
    for h in doc["hosts"]:
        assert h["state"] in ("ok", "warning", "critical", "unknown"), h
        assert h["toolkit_version"] == TOOLKIT_VERSION and not h["version_mismatch"]
        report = h["result"]
        # each node's own report: its hostname, and the role's settings file was used (the BMC it names
        # is unset, so there is no bmc check) with the system collector's checks
        assert report["host"] == h["name"]
        assert any(c["name"].startswith("system.") for c in report["checks"])
        assert Path(h["saved"]).exists()
    worst = max((h["exit_code"] for h in doc["hosts"]), key=lambda c: {0: 0, 3: 1, 1: 2, 2: 3}[c])
    assert proc.returncode == doc["exit_code"] == worst
    assert (
        sorted(p.name for p in results.glob("health-*.json"))
        and len(list(results.glob("fleet-health-*"))) == 1
    )


def test_bench_across_the_fleet_with_a_host_lost_midway(fleet):
    lab, hosts, inventory, base = fleet
    results = base / "results-bench"
    victim = hosts[-1]
    started_file = victim.root / "var/lib/toolkit/results"
    cmd = [
        sys.executable,
        "-m",
        "toolkit",
        "bench",
        "-i",
        str(inventory),
        "--limit",
        "gpu_nodes",
        "--results-dir",
        str(results),
        "--json",
        "-",
        "--workloads",
        "vectors",
        "--scale",
        "tiny",
        "--set",
        "vectors.points=20000",
        "--set",
        "vectors.queries=400",
        "--forks",
        "3",
    ]
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # the victim's bench has started once its result file exists on its disk (saved before the first load)
    deadline = time.monotonic() + 120
    while not list(started_file.glob("bench-*.json")):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the bench never started on the victim"
        time.sleep(0.05)
    lab.stop_host(victim.n)
    stdout, stderr = proc.communicate(timeout=600)
    TIMINGS["bench_sweep_s"] = round(time.monotonic() - start, 1)
    doc = json.loads(stdout)
    by_name = {h["name"]: h for h in doc["hosts"]}
    assert list(by_name) == [h.name for h in hosts]  # all three, in inventory order
    lost = by_name[victim.name]
    assert lost["state"] == "unreachable" and lost["exit_code"] == 3, lost
    assert "lost" in lost["message"]
    for h in hosts[:-1]:
        done = by_name[h.name]
        assert done["state"] == "ok" and done["exit_code"] == 0, done
        load = done["result"]["results"][0]
        assert load["workload"] == "vectors" and load["metrics"]["recall_at_10"] >= 0.95
        assert done["result"]["host"] == h.name
        assert Path(done["saved"]).exists()
        # and the node kept its own copy
        assert list((h.root / "var/lib/toolkit/results").glob("bench-*.json"))
    assert proc.returncode == doc["exit_code"] == 3
    assert "unreachable" in stderr
    saved = list(results.glob("fleet-bench-*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["hosts"][2]["state"] == "unreachable"


def test_a_key_the_host_refuses_is_reported_unreachable(fleet, tmp_path):
    lab, hosts, _inventory, _base = fleet
    stranger = tmp_path / "stranger"
    testhosts.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)])
    host = hosts[0]
    inv = lab.inventory([host], {"ansible_ssh_private_key_file": str(stranger)}, path=tmp_path / "inv.yml")
    proc = toolkit("health", "-i", str(inv), "--results-dir", str(tmp_path / "r"), "--json")
    doc = json.loads(proc.stdout)
    h = doc["hosts"][0]
    assert h["state"] == "unreachable" and "refused" in h["message"] and h["result"] is None
    assert proc.returncode == 3


def test_strict_host_keys_refuses_a_host_missing_from_known_hosts(fleet, tmp_path):
    _lab, hosts, inventory, _base = fleet
    home = tmp_path / "home"  # an empty ~/.ssh/known_hosts: the test host's key is not in it
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh/known_hosts").write_text("")
    argv = ("health", "-i", str(inventory), "--limit", hosts[0].name, "--results-dir", str(tmp_path / "r"))
    strict = toolkit(*argv, "--json", "--strict-host-keys", env={"HOME": str(home)})
    h = json.loads(strict.stdout)["hosts"][0]
    assert h["state"] == "unreachable" and "known_hosts" in h["message"], h
    relaxed = toolkit(*argv, "--json", env={"HOME": str(home)})
    assert json.loads(relaxed.stdout)["hosts"][0]["state"] != "unreachable"


def test_a_host_behind_a_jump_host_is_reached_through_it(fleet, tmp_path):
    """The route from the inventory's ssh options, as Ansible's ssh takes them (issue 16, point 9): the
    second node's SSH is forwarded to 127.0.0.1:PORT inside the first node's namespace only, so the
    controller reaches it at that address through the first node (ProxyJump, -J, ProxyCommand) or not at
    all; and without the jump option the same inventory entry is unreachable."""
    import yaml

    lab, hosts, _inventory, _base = fleet
    bastion, behind = hosts[0], hosts[1]
    port = free_port()  # free here: nothing on the controller answers at 127.0.0.1:PORT
    sock = tmp_path / "behind.sock"
    relay = testhosts.socat(f"UNIX-LISTEN:{sock},fork,unlink-early", f"TCP:{behind.ip}:22")
    inside = testhosts.socat(
        f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr", f"UNIX-CONNECT:{sock}", bastion.netns
    )
    common = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
    routes = {
        "jump": f"{common} -o ProxyJump=root@{bastion.ip}",
        "dash-j": f"{common} -J root@{bastion.ip}:22",
        "command": f"{common} -o ProxyCommand='ssh -i {lab.key} -o StrictHostKeyChecking=no "
        f"-o UserKnownHostsFile=/dev/null -W %h:%p root@{bastion.ip}'",
        "none": common,
    }
    try:
        deadline = time.monotonic() + 5
        while not sock.exists():
            assert time.monotonic() < deadline, "the relay did not start"
            time.sleep(0.02)
        base_vars = yaml.safe_load(lab.inventory([bastion], path=tmp_path / "lab.yml").read_text())["all"][
            "vars"
        ]
        hosts_doc = {
            f"behind-{name}": {
                "ansible_host": "127.0.0.1",
                "ansible_port": port,
                "ansible_ssh_common_args": args,
            }
            for name, args in routes.items()
        }
        inv = tmp_path / "inv.yml"
        inv.write_text(yaml.safe_dump({"all": {"hosts": hosts_doc, "vars": base_vars}}))
        # one after the other: the three routes lead to the same node, whose health runs must not overlap
        argv = ("-i", str(inv), "--results-dir", str(tmp_path / "r"), "--json", "--forks", "1")
        proc = toolkit("health", *argv, "--skip", "docker")
        by_name = {h["name"]: h for h in json.loads(proc.stdout)["hosts"]}
    finally:
        for p in (relay, inside):
            p.kill()
            p.wait()
    for name in ("jump", "dash-j", "command"):
        h = by_name[f"behind-{name}"]
        reached = (h["result"] or {}).get("host")
        assert h["state"] != "unreachable" and reached == behind.name, h["message"]  # node52 answered
    assert by_name["behind-jump"]["address"].endswith(f"via {bastion.ip}")
    lost = by_name["behind-none"]
    assert lost["state"] == "unreachable" and "cannot connect" in lost["message"], lost
