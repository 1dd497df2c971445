"""`toolkit health` as monitoring systems and people use it: Nagios exit codes, the JSON and Prometheus
contracts of docs/REFERENCE.md, settings files, stored reports with their lock and history, Docker and the
kernel command line, bad input and Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import REPO, toolkit

LOCAL = ("--skip", "bmc")
PROM_LINE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? (\S+)$'
)


def run_json(*args, env=None):
    proc = toolkit("health", "--json", *args, env=env, timeout=60)
    assert proc.stdout.startswith("{"), proc.stdout + proc.stderr
    return proc, json.loads(proc.stdout)


def checks(doc):
    return {c["name"]: c for c in doc["checks"]}


def test_json_shape_and_exit_code_follow_the_contract():
    proc, doc = run_json(*LOCAL)
    assert {"host", "status", "checks", "collected_at"} <= set(doc)
    assert doc["status"] in ("ok", "warning", "critical", "unknown")
    assert proc.returncode == {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}[doc["status"]]
    for c in doc["checks"]:
        assert {"name", "status", "value", "unit", "detail"} <= set(c)
    names = checks(doc)
    assert "gpu.nvidia" in names and "no NVIDIA driver" in names["gpu.nvidia"]["detail"]  # no GPU here
    assert names["gpu.nvidia"]["status"] == "ok"  # not expected, so not a problem
    assert names["system.memory"]["unit"] == "bytes" and names["system.memory"]["value"] > 0
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", doc["collected_at"])


def test_expected_gpus_missing_is_critical():
    proc, doc = run_json(*LOCAL, "--expect-gpus", "2")
    assert proc.returncode == 2
    assert doc["status"] == "critical"
    gpu = [c for c in doc["checks"] if c["collector"] == "gpu" and c["status"] == "critical"]
    assert gpu and any("2" in c["detail"] for c in gpu)


def test_prometheus_textfile_is_valid_atomic_and_has_no_sentinels(tmp_path):
    prom = tmp_path / "textfile" / "toolkit.prom"
    prom.parent.mkdir()
    prom.write_text("old content\n")
    proc = toolkit("health", *LOCAL, "--prom", str(prom))
    assert proc.returncode in (0, 1, 2)
    text = prom.read_text()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"# (HELP|TYPE) toolkit_", line), line
            continue
        m = PROM_LINE.match(line)
        assert m, f"not a Prometheus sample: {line!r}"
        value = float(m.group(5))
        assert value == value and value != -1, line  # no NaN, no sentinel
        key = line.rsplit(" ", 1)[0]
        assert key not in samples, f"duplicate series {key}"
        samples[key] = value
    assert samples['toolkit_up{collector="system"}'] == 1
    assert samples['toolkit_up{collector="gpu"}'] == 0  # no driver: the collector could not read NVML
    assert "toolkit_scrape_duration_seconds" in samples
    assert any(k.startswith("toolkit_filesystem_free_bytes{") for k in samples)
    assert any(k.startswith("toolkit_check_status{") for k in samples)
    assert sorted(p.name for p in prom.parent.iterdir()) == ["toolkit.prom"]  # no temp file left


def test_usage_errors_are_unknown_and_name_the_problem(tmp_path):
    cases = [
        (["--bogus"], "unrecognized arguments"),
        (["--bmc", "http://ADMIN@127.0.0.1"], "unknown BMC URL scheme"),
        (["--bmc", "ipmi://127.0.0.1"], "needs a user"),
        (["--config", str(tmp_path / "missing.yml")], "cannot read the health configuration"),
    ]
    for args, message in cases:
        proc = toolkit("health", *args, env={"TOOLKIT_BMC_PASSWORD": ""})
        assert proc.returncode == 3, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr


def test_password_in_the_url_is_refused_without_echoing_it():
    proc = toolkit("health", "--bmc", "ipmi://ADMIN:Url-Secret-991@127.0.0.1")
    assert proc.returncode == 3
    assert "contains a password" in proc.stderr and "hint:" in proc.stderr
    assert "Url-Secret-991" not in proc.stdout + proc.stderr


def test_missing_password_says_where_it_comes_from():
    env = {k: v for k, v in os.environ.items() if k != "TOOLKIT_BMC_PASSWORD"}
    proc = subprocess.run(
        [sys.executable, "-m", "toolkit", "health", "--bmc", "ipmi://ADMIN@127.0.0.1:9"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 3
    assert "no BMC password" in proc.stderr and "TOOLKIT_BMC_PASSWORD" in proc.stderr


def test_config_with_password_must_not_be_readable_by_others(tmp_path):
    cfg = tmp_path / "health.yml"
    cfg.write_text("bmc:\n  url: ipmi://ADMIN@127.0.0.1:9\n  password: Cfg-Secret-123\n  timeout: 0.5\n")
    cfg.chmod(0o644)
    proc = toolkit("health", "--config", str(cfg))
    assert proc.returncode == 3 and "readable by others" in proc.stderr and "chmod 600" in proc.stderr
    assert "Cfg-Secret-123" not in proc.stdout + proc.stderr
    cfg.chmod(0o600)
    proc, doc = run_json("--config", str(cfg), env={"TOOLKIT_BMC_PASSWORD": ""})
    assert checks(doc)["bmc.connection"]["status"] == "unknown"
    assert "Cfg-Secret-123" not in proc.stdout + proc.stderr


def test_config_errors_name_the_line_and_the_known_settings(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("expect_gpus: 1\nsystem: [unclosed\n")
    proc = toolkit("health", "--config", str(bad))
    assert proc.returncode == 3 and f"{bad}:" in proc.stderr and "not valid YAML" in proc.stderr
    bad.write_text("expect_gpu: 1\n")
    proc = toolkit("health", "--config", str(bad))
    assert (
        proc.returncode == 3
        and "unknown setting(s) expect_gpu" in proc.stderr
        and "expect_gpus" in proc.stderr
    )


def test_config_drives_disk_thresholds_and_kernel_cmdline(tmp_path):
    dropin = tmp_path / "90-toolkit.cfg"
    running = Path("/proc/cmdline").read_text().split()
    dropin.write_text(
        f'# toolkit_cmdline="{running[0] if running else ""} iommu=pt"\nGRUB_CMDLINE_LINUX_DEFAULT=""\n'
    )
    cfg = tmp_path / "health.yml"
    cfg.write_text(
        f"system:\n  data_dirs: [{tmp_path}]\n  disk_warning_percent: 0\n  disk_critical_percent: 100\n"
        f"  grub_dropin: {dropin}\n  reboot_required_file: {tmp_path / 'reboot-required'}\n"
        # the exit code is the point: a busy test machine's load must not make it CRITICAL
        "  load_warning_per_cpu: 1000\n  load_critical_per_cpu: 2000\n"
    )
    (tmp_path / "reboot-required").write_text("")
    proc, doc = run_json("--config", str(cfg), *LOCAL)
    c = checks(doc)
    assert c[f"system.disk.{tmp_path}"]["status"] == "warning"  # 0% warning threshold: always warns
    cmd = c["system.kernel_cmdline"]
    assert cmd["status"] == "warning" and "iommu=pt" in cmd["detail"] and "reboot is pending" in cmd["detail"]
    assert proc.returncode == 1


def _silent_socket(path):
    """A Docker socket that accepts connections and never answers."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(8)
    held = []

    def accept():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    return srv


def test_docker_daemon_that_does_not_answer_is_critical_in_bounded_time(tmp_path):
    sock = tmp_path / "docker.sock"
    srv = _silent_socket(sock)
    cfg = tmp_path / "health.yml"
    cfg.write_text(f"docker:\n  url: unix://{sock}\n  timeout: 1\n  containers: [qdrant]\n")
    start = time.monotonic()
    proc, doc = run_json("--config", str(cfg), *LOCAL)
    elapsed = time.monotonic() - start
    srv.close()
    daemon = checks(doc)["docker.daemon"]
    assert daemon["status"] == "critical" and "does not answer" in daemon["detail"]
    assert elapsed < 10, elapsed
    assert "system.memory" in checks(doc)  # the rest of the report is still there
    assert proc.returncode == 2


def test_docker_socket_missing_is_fine_unless_docker_is_required(tmp_path):
    cfg = tmp_path / "health.yml"
    cfg.write_text(f"docker:\n  url: unix://{tmp_path}/none.sock\n")
    _, doc = run_json("--config", str(cfg), *LOCAL)
    assert checks(doc)["docker.daemon"]["status"] == "ok"
    cfg.write_text(f"docker:\n  url: unix://{tmp_path}/none.sock\n  required: true\n")
    _, doc = run_json("--config", str(cfg), *LOCAL)
    assert checks(doc)["docker.daemon"]["status"] == "critical"


def test_saved_reports_history_pruning_and_lock(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    old = reports / "health-20200101T000000Z.json"
    old.write_text(json.dumps({"collected_at": "2020-01-01T00:00:00Z", "status": "critical", "checks": []}))
    os.utime(old, (time.time() - 30 * 86400,) * 2)
    cfg = tmp_path / "health.yml"
    cfg.write_text(f"report_dir: {reports}\nkeep_days: 7\nsystem:\n  data_dirs: [/]\n")
    first = toolkit("health", "--config", str(cfg), *LOCAL)
    time.sleep(1.1)  # one report per second: file names carry the time
    second = toolkit("health", "--config", str(cfg), *LOCAL, "--expect-gpus", "1")
    assert second.returncode == 2, second.stderr
    stored = sorted(reports.glob("health-*.json"))
    assert len(stored) == 2 and old not in stored  # the 30-day-old report was pruned
    assert all(oct(p.stat().st_mode & 0o777) == "0o640" for p in stored)
    hist = toolkit("health", "--config", str(cfg), "--history", "--json")
    summary = json.loads(hist.stdout)
    assert summary["reports"] == 2
    rows = {r["name"]: r for r in summary["checks"]}
    gpu_rows = [r for r in rows.values() if r["name"].startswith("gpu") and r["worst"] == "critical"]
    assert gpu_rows and gpu_rows[0]["not_ok"] == 1 and gpu_rows[0]["runs"] == 2
    assert rows["system.memory"]["runs"] == 2
    table = toolkit("health", "--config", str(cfg), "--history")
    assert table.returncode == 0 and "2 reports" in table.stdout
    # a concurrent run is refused while another holds the lock
    holder = subprocess.Popen(["flock", str(reports / ".lock"), "sleep", "20"])
    try:
        time.sleep(0.3)
        locked = toolkit("health", "--config", str(cfg), *LOCAL)
    finally:
        holder.kill()
        holder.wait()
    assert locked.returncode == 3 and "holds" in locked.stderr
    assert len(list(reports.glob("health-*.json"))) == 2 and first.returncode in (0, 1, 2)


def test_history_without_reports_is_unknown(tmp_path):
    proc = toolkit("health", "--history", "--save-dir", str(tmp_path))
    assert proc.returncode == 3 and "0 reports" in proc.stdout


def test_ctrl_c_during_a_slow_bmc_read_exits_130_and_writes_nothing(tmp_path):
    """A BMC that never answers (UDP port with a silent listener); Ctrl-C after one second."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    prom = tmp_path / "n.prom"
    env = {**os.environ, "TOOLKIT_BMC_PASSWORD": "Ctrl-C-secret-1", "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "toolkit",
            "health",
            "--bmc",
            f"ipmi://ADMIN@127.0.0.1:{port}",
            "--prom",
            str(prom),
            "--save-dir",
            str(tmp_path / "reports"),
            "--bmc-timeout",
            "30",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(1.5)
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    silent.close()
    assert proc.returncode == 130, err
    assert time.monotonic() - start < 5
    assert "interrupted" in err and "Traceback" not in err
    assert not prom.exists()
    assert not list((tmp_path / "reports").glob("health-*")) and not list(tmp_path.rglob("*.tmp"))
