"""node_exporter textfile output, written with the Prometheus project's own client library
(`prometheus_client`): names in base units, counters typed as counters (`*_total`), HELP written here by
hand for every metric, a value metric and a state metric per check, `toolkit_up{collector=…}` and the
collection time. Values that were not measured are left out — never a sentinel number.

GPU series carry the labels dcgm-exporter uses where they exist: `gpu` (the index) and `UUID`; the model
is `model_name`, not dcgm-exporter's `modelName`, because `promtool check metrics` rejects camelCase
label names (docs/HEALTH.md, "Prometheus")."""

from __future__ import annotations

import math

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from toolkit.health.model import Report
from toolkit.health.prom_help import HELP

# our check labels -> the label names dashboards built for dcgm-exporter expect
_GPU_LABELS = {"uuid": "UUID", "name": "model_name"}


def _label_name(metric: str, key: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in key)
    if not cleaned or cleaned[0].isdigit():
        cleaned = "_" + cleaned
    if metric.startswith("toolkit_gpu_"):
        return _GPU_LABELS.get(cleaned, cleaned)
    return cleaned


def _number(check) -> float | None:
    value = check.prom_value if check.prom_value is not None else check.value
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def kind_of(metric: str) -> str:
    """A metric whose name ends in `_total` only ever grows: a counter. Everything else is a gauge."""
    return "counter" if metric.endswith("_total") else "gauge"


class _Series:
    """The report's samples grouped into metric families, one sample per metric + label set (node_exporter
    rejects a repeated series: the first one is kept)."""

    def __init__(self) -> None:
        self.families: dict[str, Metric] = {}
        self.seen: set[tuple] = set()

    def add(self, metric: str, labels: dict, value: float) -> None:
        named = {_label_name(metric, k): str(v) for k, v in labels.items()}
        key = (metric, tuple(sorted(named.items())))
        if key in self.seen:
            return
        self.seen.add(key)
        kind = kind_of(metric)
        base = metric[: -len("_total")] if kind == "counter" else metric
        family = self.families.get(base)
        if family is None:
            family = self.families[base] = Metric(base, help_of(metric), kind)
        family.add_sample(metric, named, value)


def help_of(metric: str) -> str:
    return HELP.get(metric) or metric.removeprefix("toolkit_").replace("_", " ")


class _Report(Collector):
    def __init__(self, series: _Series):
        self.series = series

    def collect(self):
        return list(self.series.families.values())


def series_of(report: Report, timestamp: float) -> _Series:
    series = _Series()
    for result in report.collectors:
        series.add("toolkit_up", {"collector": result.name}, 1.0 if result.up else 0.0)
        series.add("toolkit_collector_duration_seconds", {"collector": result.name}, result.duration_seconds)
        for check in result.checks:
            series.add(
                "toolkit_check_status", {"collector": result.name, "check": check.name}, int(check.status)
            )
            number = _number(check)
            if check.metric and number is not None:
                series.add(check.metric, check.labels, number)
            if "sensor" in check.labels:  # the state beside each BMC sensor's value
                series.add("toolkit_bmc_sensor_state", check.labels, int(check.status))
    series.add("toolkit_health_status", {}, int(report.status))
    series.add("toolkit_scrape_duration_seconds", {}, report.duration_seconds)
    series.add("toolkit_last_run_timestamp_seconds", {}, timestamp)
    return series


def render(report: Report, timestamp: float) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Report(series_of(report, timestamp)))
    return generate_latest(registry).decode("utf-8")
