"""The `health_report` role on a real test host (Debian booted with systemd-nspawn, over SSH): the toolkit
installed from a wheelhouse built here, /etc/toolkit/health.yml holding the BMC password at mode 0600 and
nowhere else, toolkit-health.timer scheduled, a triggered run writing its JSON report and node_exporter
textfile, the lock refusing a concurrent run, and --history over the stored reports.

The BMC is `ipmi://ADMIN@127.0.0.1:9` inside the host, where nothing answers: the report must carry a
`bmc.connection` UNKNOWN check and everything else.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from toolkit import __version__ as TOOLKIT_VERSION

import testhosts
from conftest import toolkit
from testhosts import build_wheelhouse

MISSING = testhosts.requirements_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

SECRET = "hr-Bmc-s3cret-for-the-leak-test"
HOST_N = 31  # its own subnet and namespace: never one that test_provision.py uses
REPORTS = "/var/lib/toolkit/health"
CONFIG = "/etc/toolkit/health.yml"
TOOLKIT = "/opt/toolkit/venv/bin/toolkit"
TIMINGS: dict[str, float] = {}


def provision(state: Path, inventory: Path, *args: str, roles: str = "health_report"):
    proc = toolkit(
        "provision",
        "all",
        "--roles",
        roles,
        "-i",
        str(inventory),
        "--json",
        *args,
        env={"TOOLKIT_STATE_DIR": str(state), "TOOLKIT_BMC_PASSWORD": SECRET},
        timeout=900,
    )
    doc = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None
    return proc, doc


def timed(key: str, fn, *args, **kwargs):
    start = time.monotonic()
    try:
        return fn(*args, **kwargs)
    finally:
        TIMINGS[key] = round(time.monotonic() - start, 1)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A fresh host, its inventory (BMC variables as docs/REFERENCE.md names them, the password from the
    environment lookup of inventory/group_vars/all.yml) and a state folder for the runner artifacts."""
    base = tmp_path_factory.mktemp("health-role")
    wheels = timed("wheelhouse_build_s", build_wheelhouse, base / "wheelhouse")
    testhosts.build_image()
    lab = testhosts.Lab(base / "lab")
    try:
        host = timed("host_boot_s", lab.start_host, HOST_N)
        inventory = lab.inventory(
            [host],
            {
                "bmc_address": "127.0.0.1",
                "bmc_protocol": "ipmi",
                "bmc_port": 9,  # discard: nothing answers IPMI there
                "bmc_username": "ADMIN",
                "bmc_password": "{{ lookup('ansible.builtin.env', 'TOOLKIT_BMC_PASSWORD') }}",
                "health_report_wheelhouse": str(wheels),
                "health_report_bmc_timeout": 1,
                # the host booted seconds ago: no timer run during the test, only the ones it triggers
                "health_report_on_boot": "1h",
                "health_report_interval": "1h",
                # no SMBIOS in a container: write the modules-load file anyway (modprobe stays skipped)
                "health_report_ipmi_detect": False,
            },
            path=lab.dir / "inv-health.yml",
            group="nvidia_nodes",
        )
        yield host, inventory, base / "state"
    finally:
        lab.close()
        print("\nhealth_report timings (s):", json.dumps(TIMINGS))


@pytest.fixture(scope="module")
def converged(node):
    """--check on the fresh host, then the role twice."""
    host, inventory, state = node
    check = timed("check_mode_s", provision, state, inventory, "--check")
    created = host.ssh(
        f"test -e /opt/toolkit || test -e {CONFIG} || test -e /etc/systemd/system/toolkit-health.timer",
        check=False,
    )
    untouched = created.returncode != 0
    first = timed("converge_s", provision, state, inventory)
    second = timed("noop_s", provision, state, inventory)
    return check, untouched, first, second


@pytest.fixture(scope="module")
def first_report(node, converged):
    """One run triggered through the service, as the timer does it."""
    host, *_ = node
    start = time.monotonic()
    host.ssh("systemctl start toolkit-health.service", timeout=120)
    TIMINGS["service_run_s"] = round(time.monotonic() - start, 1)
    names = host.ssh(f"ls {REPORTS}").stdout.split()
    reports = [n for n in names if n.startswith("health-") and n.endswith(".json")]
    assert len(reports) == 1, names
    return json.loads(host.ssh(f"cat {REPORTS}/{reports[0]}").stdout)


def checks_of(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


def test_check_mode_on_a_fresh_host_changes_nothing(node, converged):
    host, *_ = node
    (proc, doc), untouched, *_ = converged
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert doc["check"] is True and doc["hosts"][host.name]["changed"] > 0
    assert {c["role"] for c in doc["changes"]} == {"health_report"}
    assert untouched


def test_converges_then_changes_nothing(node, converged):
    host, *_ = node
    _, _, (proc, doc), (again, doc2) = converged
    assert proc.returncode == 0, proc.stderr + proc.stdout
    stats = doc["hosts"][host.name]
    assert stats["failures"] == 0 and stats["dark"] == 0 and stats["changed"] > 5
    assert again.returncode == 0, again.stderr + again.stdout
    assert doc2["hosts"][host.name]["changed"] == 0, doc2
    assert doc2["hosts"][host.name]["failures"] == 0
    probe = "import importlib.metadata as m; print(m.version('llm-node-toolkit'))"
    installed = host.ssh(f'/opt/toolkit/venv/bin/python -c "{probe}"').stdout.strip()
    assert installed == TOOLKIT_VERSION


def test_settings_file_is_private_and_holds_the_password(node, converged):
    host, *_ = node
    assert host.ssh(f"stat -c '%a %U %G' {CONFIG}").stdout.split() == ["600", "root", "root"]
    import yaml

    settings = yaml.safe_load(host.ssh(f"cat {CONFIG}").stdout)
    assert settings["bmc"]["url"] == "ipmi://ADMIN@127.0.0.1:9"
    assert settings["bmc"]["password"] == SECRET
    assert settings["report_dir"] == REPORTS and settings["keep_days"] == 14
    assert settings["prom_file"] == "/var/lib/prometheus/node-exporter/toolkit.prom"


def test_password_is_in_no_other_file_and_no_output(node, converged):
    host, *_ = node
    _, _, (first, doc), (second, _) = converged
    holders = host.ssh(
        f"grep -rlsaF -- '{SECRET}' /etc /opt /var/lib /var/log /var/tmp /tmp /root /run/systemd /run/log"
        " || true"
    ).stdout.split()
    assert holders == [CONFIG]
    service = host.ssh("systemctl cat toolkit-health.service toolkit-health.timer").stdout
    assert SECRET not in service and "ExecStart=/opt/toolkit/venv/bin/toolkit health --config" in service
    modules = host.ssh("cat /etc/modules-load.d/toolkit-ipmi.conf").stdout
    assert "ipmi_si" in modules and "ipmi_devintf" in modules
    for text in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert SECRET not in text
    artifacts = Path(doc["artifacts"]).parent
    leaked = [p for p in artifacts.rglob("*") if p.is_file() and SECRET in p.read_text(errors="replace")]
    assert not leaked, leaked


def test_diff_of_a_changed_setting_hides_the_password(node, converged):
    host, inventory, state = node
    proc, doc = provision(state, inventory, "--diff", "-e", "health_report_keep_days=7")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert doc["hosts"][host.name]["changed"] == 1, doc["changes"]
    assert SECRET not in proc.stdout + proc.stderr
    assert "keep_days: 7.0" in host.ssh(f"cat {CONFIG}").stdout
    back, doc = provision(state, inventory)
    assert back.returncode == 0 and doc["hosts"][host.name]["changed"] == 1
    assert SECRET not in back.stdout + back.stderr
    leaked = [p for p in state.rglob("*") if p.is_file() and SECRET in p.read_text(errors="replace")]
    assert not leaked, leaked


def test_check_mode_on_the_converged_host_reports_nothing(node, converged):
    host, inventory, state = node
    proc, doc = provision(state, inventory, "--check", "--diff")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert doc["hosts"][host.name]["changed"] == 0, doc["changes"]


def test_a_pinned_pip_spec_of_the_installed_version_changes_nothing(node, converged):
    host, inventory, state = node
    source = {
        "health_report_wheelhouse": "",
        "health_report_pip_spec": f"llm-node-toolkit=={TOOLKIT_VERSION}",
        "health_report_pip_extra_args": ["--no-index", "--find-links", "/opt/toolkit/wheelhouse"],
    }
    proc, doc = provision(state, inventory, "-e", json.dumps(source))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert doc["hosts"][host.name]["changed"] == 0, doc["changes"]


def test_no_source_of_the_toolkit_fails_clearly(node, converged):
    host, inventory, state = node
    proc, doc = provision(state, inventory, "-e", json.dumps({"health_report_wheelhouse": ""}))
    assert proc.returncode == 3
    message = next(f["message"] for f in doc["failures"] if f["host"] == host.name)
    assert "exactly one of health_report_wheelhouse" in message


def test_a_module_that_does_not_load_is_reported_not_fatal(node, converged):
    """As on a node without BMC hardware: modprobe fails, the play goes on and says so. (The container
    guard is overridden for this run only, with a module name that exists nowhere: nothing is loaded.)"""
    host, inventory, state = node
    absent = {"health_report_in_container": False, "health_report_ipmi_modules": ["toolkit_test_absent"]}
    proc, doc = provision(state, inventory, "-e", json.dumps(absent))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert doc["hosts"][host.name]["failures"] == 0
    events = "".join(p.read_text() for p in (Path(doc["artifacts"]) / "job_events").glob("*.json"))
    assert "in-band IPMI is not available: modprobe toolkit_test_absent failed" in events
    back, doc = provision(state, inventory)  # the modules-load file back to ipmi_si, ipmi_devintf
    assert back.returncode == 0 and doc["hosts"][host.name]["changed"] == 1, doc["changes"]


def test_timer_is_enabled_and_scheduled(node, converged):
    host, *_ = node
    assert host.ssh("systemctl is-enabled toolkit-health.timer").stdout.strip() == "enabled"
    assert host.ssh("systemctl is-active toolkit-health.timer").stdout.strip() == "active"
    shown = host.ssh("systemctl show toolkit-health.timer -p NextElapseUSecMonotonic -p Triggers").stdout
    assert "Triggers=toolkit-health.service" in shown
    assert "NextElapseUSecMonotonic=infinity" not in shown


def test_triggered_run_writes_report_and_textfile(node, first_report):
    host, *_ = node
    shown = host.ssh("systemctl show toolkit-health.service -p Result -p ExecMainStatus").stdout
    assert "Result=success" in shown, shown + host.ssh("journalctl -u toolkit-health --no-pager").stdout
    report = first_report
    assert report["host"] == f"node{HOST_N}"
    assert report["status"] in ("ok", "warning", "critical", "unknown") and report["collected_at"]
    checks = checks_of(report)
    assert checks["bmc.connection"]["status"] == "unknown", checks["bmc.connection"]
    assert any(name.startswith("system.disk.") for name in checks)
    assert "system.memory" in checks
    # no Docker on this host: said so, not a crash and not a failure
    assert checks["docker.daemon"]["status"] == "ok"
    assert "no Docker socket" in checks["docker.daemon"]["detail"]
    prom = host.ssh("cat /var/lib/prometheus/node-exporter/toolkit.prom").stdout
    assert 'toolkit_up{collector="system"} 1' in prom
    assert 'toolkit_up{collector="bmc"} 0' in prom
    assert host.ssh("ls -A /var/lib/prometheus/node-exporter").stdout.split() == ["toolkit.prom"]
    journal = host.ssh("journalctl -u toolkit-health --no-pager").stdout
    assert SECRET not in journal and SECRET not in json.dumps(report)


def test_a_concurrent_run_is_refused_by_the_lock(node, first_report):
    host, *_ = node
    host.ssh(f"systemd-run --unit=hold-health-lock --collect flock {REPORTS}/.lock sleep 20")
    try:
        deadline = time.monotonic() + 10
        while host.ssh(f"flock -n {REPORTS}/.lock true", check=False).returncode == 0:
            assert time.monotonic() < deadline, "the lock holder did not start"
            time.sleep(0.1)
        proc = host.ssh(f"{TOOLKIT} health --config {CONFIG}", check=False)
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert "another `toolkit health` run holds" in proc.stderr
    finally:
        host.ssh("systemctl stop hold-health-lock", check=False)


def test_history_summarises_the_stored_reports(node, first_report):
    host, *_ = node
    host.ssh("systemctl start toolkit-health.service", timeout=120)
    proc = host.ssh(f"{TOOLKIT} health --history --config {CONFIG} --json")
    summary = json.loads(proc.stdout)
    assert summary["reports"] == 2 and summary["folder"] == REPORTS
    rows = {row["name"]: row for row in summary["checks"]}
    assert rows["bmc.connection"]["runs"] == 2 and rows["bmc.connection"]["worst"] == "unknown"


def test_docker_daemon_checked_once_docker_runs(node, first_report):
    """The docker role on the same host: docker.io runs inside it, and the hardened service (read-only
    file system) still reaches the socket."""
    host, inventory, state = node
    proc, _ = timed("docker_role_s", provision, state, inventory, roles="docker")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    host.ssh("systemctl start toolkit-health.service", timeout=120)
    newest = host.ssh(f"ls -t {REPORTS}/health-*.json | head -1").stdout.strip()
    checks = checks_of(json.loads(host.ssh(f"cat {newest}").stdout))
    assert checks["docker.daemon"]["status"] == "ok", checks["docker.daemon"]
    assert "answers at unix:///var/run/docker.sock" in checks["docker.daemon"]["detail"]
    # no NVIDIA GPU here: the runtime is reported, not required
    assert checks["docker.nvidia_runtime"]["status"] == "ok"
    assert "not required" in checks["docker.nvidia_runtime"]["detail"]
