"""`toolkit health`'s outputs checked by their ecosystems' own rules: the Prometheus textfile by Prometheus's
`promtool check metrics` (Debian's `prometheus` package) on the report of every recorded snapshot and of a
real run, and the Nagios output by the Monitoring Plugins guidelines' grammar — first line
`STATUS - summary | perfdata`, long output after it, the status word equal to the exit code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from toolkit.health import nagios, prom
from toolkit.health.bmc.ipmi import parse_ipmitool_sensor
from toolkit.health.bmc.ipmi_text import merge_sdr, parse_sdr_elist
from toolkit.health.bmc.model import BmcReading, bmc_checks, unique_names
from toolkit.health.collectors.gpu_amd import checks_from_amdsmi
from toolkit.health.collectors.gpu_nvidia_rules import checks_from_nvml
from toolkit.health.collectors.gpu_nvidia_smi import snapshot_from_capture
from toolkit.health.collectors.gpu_xid import parse_kernel_log
from toolkit.health.model import Report
from toolkit.health.prom_help import HELP

from conftest import toolkit

FIXTURES = Path(__file__).parent / "fixtures"
LOCAL = ("--skip", "bmc", "--skip", "qdrant")
CODES = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}
FIRST_LINE = re.compile(r"^(OK|WARNING|CRITICAL|UNKNOWN) - ([^|]+?)(?: \| (.*))?$")
# 'label'=value[UOM];[warn];[crit];[min];[max] (Monitoring Plugins guidelines, "Performance data")
PERFDATUM = re.compile(
    r"^('(?:[^']|'')+'|[^ '=]+)=(-?\d+(?:\.\d+)?)(s|ms|us|%|B|KB|MB|TB|c)?(;-?[\d.]*){0,4}$"
)


def snapshot_reports() -> list[tuple[str, Report]]:
    """A report per recorded GPU snapshot under tests/fixtures (NVML and amdsmi readers' shape), per real
    nvidia-smi capture (tests/fixtures/nvidia, one of them with a real kernel log's XIDs) and per real
    `ipmitool sensor` / `sdr elist` capture of the IPMI corpus (tests/fixtures/ipmi, its PROVENANCE.md)."""
    found = []
    for path in sorted((FIXTURES / "health").glob("*.json")):
        raw = json.loads(path.read_text())
        judge = checks_from_amdsmi if path.name.startswith("amd") else checks_from_nvml
        found.append((path.name, Report("fixture", [judge(raw, expect_gpus=2)], "2026-12-03T00:00:00Z", 0.1)))
    for path in sorted((FIXTURES / "nvidia").iterdir()):  # real nvidia-smi captures, read as NVML
        if path.suffix in (".txt", ".xml"):
            raw = snapshot_from_capture(path.read_text())
            found.append((path.name, Report("fixture", [checks_from_nvml(raw)], "2026-12-03T00:00:00Z", 0.1)))
    raw = snapshot_from_capture((FIXTURES / "nvidia" / "gpud-h100-8x-535.161.08.txt").read_text())
    log = (FIXTURES / "nvidia" / "gpud-dmesg-iso-xid-48-63-94.log").read_text()
    raw.update(boot_id="b", xid={"source": "capture", "events": [e.to_json() for e in parse_kernel_log(log)]})
    found.append(("h100+xid-log", Report("fixture", [checks_from_nvml(raw)], "2026-12-03T00:00:00Z", 0.1)))
    for path in sorted((FIXTURES / "ipmi").glob("*.sensor.txt")):
        reading = BmcReading("ipmi", "fixture", parse_ipmitool_sensor(path.read_text()))
        found.append((path.name, Report("fixture", [bmc_checks(reading)], "2026-12-03T00:00:00Z", 0.1)))
    for path in sorted((FIXTURES / "ipmi").glob("*.sdr-elist.txt")):
        reading = BmcReading(
            "ipmi", "fixture", unique_names(merge_sdr([], parse_sdr_elist(path.read_text())))
        )
        found.append((path.name, Report("fixture", [bmc_checks(reading)], "2026-12-03T00:00:00Z", 0.1)))
    return found


def perfdata_items(text: str) -> list[str]:
    return re.findall(r"'(?:[^']|'')+'=\S+|[^ ]+", text.strip())


def parse_plugin_output(text: str) -> tuple[str, str, list[str], list[str]]:
    """(status, summary, long output lines, every perfdatum) — the way Nagios/Icinga split plugin output."""
    lines = text.rstrip("\n").split("\n")
    match = FIRST_LINE.match(lines[0])
    assert match, f"first line breaks the plugin format: {lines[0]!r}"
    status, summary, perf = match.groups()
    data = perfdata_items(perf or "")
    long_lines, in_perf = [], False
    for line in lines[1:]:
        if in_perf:
            data += perfdata_items(line)
            continue
        text_part, bar, rest = line.partition("|")
        long_lines.append(text_part.rstrip())
        if bar:
            in_perf = True
            data += perfdata_items(rest)
    for datum in data:
        assert PERFDATUM.match(datum), f"performance datum breaks the grammar: {datum!r}"
    return status, summary, long_lines, data


# --------------------------------------------------------------------------- Prometheus


@pytest.mark.parametrize("name,report", snapshot_reports(), ids=[n for n, _ in snapshot_reports()])
def test_every_metric_has_hand_written_help_and_counters_are_counters(name, report):
    text = prom.render(report, 0.0)
    metrics = {c.metric for c in report.checks if c.metric}
    assert metrics, name
    missing = sorted(m for m in metrics if m not in HELP)
    assert not missing, f"metrics without a HELP line written by hand: {missing}"
    for metric in metrics:
        if not re.search(rf"^{metric}[{{ ]", text, re.M):
            continue  # not measured in this snapshot: no sample, no type line
        expected = "counter" if metric.endswith("_total") else "gauge"
        base = metric.removesuffix("_total") if expected == "counter" else metric
        assert re.search(rf"^# TYPE {base}(_total)? {expected}$", text, re.M), (metric, text)
    assert "toolkit_gpu_count" not in text  # promtool: a gauge must not end in _count


def test_gpu_series_carry_dcgm_exporter_labels():
    [(_, report)] = [r for r in snapshot_reports() if r[0] == "nvidia_a40_healthy.json"]
    temps = [
        line for line in prom.render(report, 0.0).splitlines() if line.startswith("toolkit_gpu_temperature")
    ]
    assert temps and all('gpu="' in t and 'UUID="GPU-' in t and 'model_name="' in t for t in temps), temps


@pytest.fixture(scope="module")
def promtool():
    path = shutil.which("promtool")
    if not path:
        pytest.skip("promtool not installed (Debian: apt install prometheus; scripts/install.sh --test does)")
    return path


def check_with_promtool(promtool: str, text: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("name,report", snapshot_reports(), ids=[n for n, _ in snapshot_reports()])
def test_promtool_accepts_the_textfile_of_every_snapshot(promtool, name, report):
    proc = check_with_promtool(promtool, prom.render(report, 1_700_000_000.0))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_accepts_a_real_run_and_rejects_what_it_should(promtool, tmp_path):
    out = tmp_path / "node.prom"
    proc = toolkit("health", *LOCAL, "--expect-gpus", "1", "--prom", str(out), timeout=60)
    assert proc.returncode == 2, proc.stderr  # no GPU here: critical, and the file is still written
    checked = check_with_promtool(promtool, out.read_text())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # the check can fail: a gauge named like a counter is what promtool reported before this output
    bad = check_with_promtool(
        promtool, "# HELP toolkit_gpu_count x\n# TYPE toolkit_gpu_count gauge\ntoolkit_gpu_count 1\n"
    )
    assert bad.returncode != 0 and "_count" in bad.stdout + bad.stderr


# --------------------------------------------------------------------------- Nagios


@pytest.mark.parametrize("name,report", snapshot_reports(), ids=[n for n, _ in snapshot_reports()])
def test_nagios_output_of_every_snapshot_parses(name, report):
    status, summary, long_lines, data = parse_plugin_output(nagios.render(report))
    assert CODES[status] == int(report.status)
    assert len(long_lines) >= len(report.checks)  # every check has its line
    problems = [c for c in report.checks if c.status.label != "ok"]
    if problems:  # the worst problem is named on the first line, not buried below
        worst = max(problems, key=lambda c: c.status.severity)
        assert worst.name in summary
    labels = {d.split("=")[0].strip("'") for d in data}
    assert {"ok", "warning", "critical", "unknown", "duration"} <= labels


def test_nagios_mode_of_a_real_run_exit_code_is_the_first_line_status():
    proc = toolkit("health", *LOCAL, "--nagios", "--expect-gpus", "2", timeout=60)
    status, summary, long_lines, _ = parse_plugin_output(proc.stdout)
    assert (status, proc.returncode) == ("CRITICAL", 2)
    assert "gpu" in summary and "critical" in summary
    assert long_lines[0].startswith("[CRITICAL]")  # worst first
    ok = toolkit("health", *LOCAL, "--nagios", timeout=60)
    status, summary, _, _ = parse_plugin_output(ok.stdout)
    assert CODES[status] == ok.returncode


def test_nagios_mode_run_that_cannot_start_says_unknown_on_stdout(tmp_path):
    proc = toolkit("health", *LOCAL, "--nagios", "--config", str(tmp_path / "missing.yml"), timeout=60)
    assert proc.returncode == 3
    status, summary, _, _ = parse_plugin_output(proc.stdout)
    assert status == "UNKNOWN" and "missing.yml" in summary
    assert "Traceback" not in proc.stdout + proc.stderr


def test_nagios_and_json_are_one_or_the_other():
    proc = toolkit("health", *LOCAL, "--nagios", "--json", timeout=60)
    assert proc.returncode == 3 and "not allowed with" in proc.stderr


def test_peer_text_cannot_break_the_format():
    from toolkit.glossary import Status
    from toolkit.health.model import Check, CollectorResult

    result = CollectorResult("bmc")
    result.checks.append(
        Check("bmc.Fan | 1 = x", Status.WARNING, 3.5, "RPM", "low|\nnext line", "toolkit_bmc_fan_speed_rpm")
    )
    status, _, long_lines, data = parse_plugin_output(nagios.render(Report("h", [result], "now", 0.1)))
    assert status == "WARNING" and len(long_lines) == 1
    assert any(d.startswith("'bmc.Fan / 1 = x'=3.5") for d in data)


def test_every_metric_the_collectors_name_has_a_hand_written_help():
    """Some series appear only on a live node (an XID this boot, NVLinks): the names in the collectors'
    source must all have their HELP, not only those the fixtures happen to produce."""
    source = "\n".join(p.read_text() for p in (FIXTURES.parent.parent / "toolkit" / "health").rglob("*.py"))
    named = set(re.findall(r'"(toolkit_[a-z0-9_]*[a-z0-9])"', source))  # whole names, not prefixes
    named -= {"toolkit_check_status", "toolkit_up", "toolkit_scrape_duration_seconds"}  # written by prom.py
    named -= {"toolkit_entity"}  # an attribute the pyghmi reader sets on SDR entries, not a metric
    assert len(named) > 30
    assert not sorted(n for n in named if n not in HELP)
