"""node_exporter textfile output: Prometheus names and base units, a value metric and a state metric per
check, `toolkit_up{collector=…}` and the collection time. Values that were not measured are left out —
never a sentinel number."""

from __future__ import annotations

import math
import re

from toolkit.health.model import Report

_LABEL_ESCAPES = str.maketrans({"\\": r"\\", '"': r"\"", "\n": r"\n"})
HELP = {
    "toolkit_check_status": "Status of each check: 0 ok, 1 warning, 2 critical, 3 unknown (Nagios codes).",
    "toolkit_health_status": "Worst status of the whole report (Nagios codes).",
    "toolkit_bmc_sensor_state": "Status of each BMC sensor: 0 ok, 1 warning, 2 critical, 3 unknown.",
    "toolkit_up": "1 when the collector could read its source.",
    "toolkit_collector_duration_seconds": "Time each collector took.",
    "toolkit_scrape_duration_seconds": "Time the whole collection took.",
    "toolkit_last_run_timestamp_seconds": "When the report was collected (Unix time).",
    "toolkit_qdrant_up": "1 when Qdrant answers /healthz.",
    "toolkit_qdrant_ready": "1 when Qdrant answers /readyz (all shards ready).",
    "toolkit_qdrant_info": "Qdrant's version (label), always 1.",
    "toolkit_qdrant_collections": "Number of Qdrant collections.",
    "toolkit_qdrant_collection_status": "Qdrant collection status: 0 green, 1 yellow/grey, 2 red, 3 unknown.",
    "toolkit_qdrant_collection_points": "Points in each Qdrant collection.",
    "toolkit_qdrant_gpu_indexing_enabled": "1 when Qdrant indexes on a GPU (telemetry lists GPUs).",
    "toolkit_qdrant_storage_used_bytes": "Disk space used under Qdrant's storage folder.",
}


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{re.sub(r"[^a-zA-Z0-9_]", "_", k)}="{str(v).translate(_LABEL_ESCAPES)}"'
        for k, v in sorted(labels.items())
    )
    return "{" + inner + "}"


def _number(check) -> float | None:
    value = check.prom_value if check.prom_value is not None else check.value
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def render(report: Report, timestamp: float) -> str:
    series: dict[str, dict[str, str]] = {}

    def add(metric: str, labels: dict, value: float) -> None:
        # one sample per series: a repeated metric+labels pair (node_exporter rejects it) keeps the first
        series.setdefault(metric, {}).setdefault(_labels(labels), f"{metric}{_labels(labels)} {value:.10g}")

    for result in report.collectors:
        add("toolkit_up", {"collector": result.name}, 1.0 if result.up else 0.0)
        add("toolkit_collector_duration_seconds", {"collector": result.name}, result.duration_seconds)
        for check in result.checks:
            add("toolkit_check_status", {"collector": result.name, "check": check.name}, int(check.status))
            number = _number(check)
            if check.metric and number is not None:
                add(check.metric, check.labels, number)
            if "sensor" in check.labels:  # the state beside each BMC sensor's value
                add("toolkit_bmc_sensor_state", check.labels, int(check.status))
    add("toolkit_health_status", {}, int(report.status))
    add("toolkit_scrape_duration_seconds", {}, report.duration_seconds)
    add("toolkit_last_run_timestamp_seconds", {}, timestamp)
    lines = []
    for metric, rows in series.items():
        lines.append(f"# HELP {metric} {HELP.get(metric, metric.replace('_', ' '))}")
        lines.append(f"# TYPE {metric} gauge")
        lines.extend(rows.values())
    return "\n".join(lines) + "\n"
