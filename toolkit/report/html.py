"""`toolkit report`: one self-contained HTML file (CSS inline, plots as PNG data URIs, no JavaScript) from
the stored results: per node measured vs expected and what changed since its previous run, throughput,
peak memory and training loss over time, and the fleet's health with temperature and power history."""

from __future__ import annotations

import html
from collections import defaultdict
from datetime import UTC, datetime

from toolkit import __version__, history
from toolkit.bench import metrics
from toolkit.bench.report import format_metric, label
from toolkit.glossary import Status, Tone, gpu_class_of, tone_of, utc_stamp
from toolkit.report import plots

# The figure that stands for each load over time (the first of its checked figures otherwise).
HEADLINE = {
    "matmul": "flops_per_second",
    "memory_bandwidth": "bandwidth_bytes_per_second",
    "kto_lora": "tokens_per_second",
    "inference": "decode_tokens_per_second_batch1",
    "vectors": "queries_per_second",
    "allreduce": "bus_bandwidth_bytes_per_second",
    "burn_in": "flops_per_second",
}
# plotted figures in a readable unit, by the unit `toolkit.bench.metrics` declares for them
SCALE = {"flops": (1e9, "GFLOP/s"), "bytes_per_second": (1e9, "GB/s")}
# the report's colour classes, by the tone of a status word of any family (glossary.TONE_OF)
TONE_CLASS = {Tone.GOOD: "ok", Tone.WARN: "warn", Tone.BAD: "bad", Tone.SEVERE: "bad", Tone.UNKNOWN: "unk"}


def status_class(word: str | None) -> str:
    return TONE_CLASS.get(tone_of(word), "")


TEMPERATURE_UNITS = ("°C", "celsius")
POWER_UNITS = ("W", "watts")
CSS = """
body{font-family:DejaVu Sans,Arial,sans-serif;margin:24px;color:#1b1b1b;max-width:1100px}
h1{font-size:26px}h2{font-size:21px;border-bottom:2px solid #ccc;padding-top:12px}h3{font-size:16px}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #bbb;padding:4px 8px;font-size:14px}
th{background:#eee;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{background:#e3f2e5}.warn{background:#fff4cc}.bad{background:#fbe0e0}.unk{background:#eee3f5}
img{max-width:100%;border:1px solid #ddd;margin:6px 0}.meta{color:#555;font-size:13px}
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _table(head: list[str], rows: list[list[tuple[str, str]]]) -> str:
    """rows of (text, css class): numbers get class n, statuses their colour."""
    out = ["<table><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f'<td class="{cls}">{_e(text)}</td>' for text, cls in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _img(uri: str | None, alt: str) -> str:
    return f'<img src="{uri}" alt="{_e(alt)}">' if uri else ""


def _headline(rec: dict) -> str | None:
    name = rec["workload"]
    metric = HEADLINE.get(name) or ("tokens_per_second" if name.startswith("train:") else None)
    if metric and metric in rec.get("metrics", {}):
        return metric
    return next(iter(rec.get("expected") or {}), None)


def _scaled(metric: str, value: float) -> tuple[float, str]:
    scale = SCALE.get(metrics.unit_of(metric))
    if scale is None:
        return value, label(metric)
    factor, unit = scale
    return value / factor, unit


def _node_section(node: str, runs: list[history.Entry], threshold: float) -> tuple[str, dict]:
    latest = runs[-1].doc
    same_profile = [e for e in runs[:-1] if e.profile == runs[-1].profile]
    parts = [f'<section id="node-{_e(node)}"><h2>Node {_e(node)}</h2>']
    verdict = latest.get("verdict", "?")
    scale = latest.get("configuration", {}).get("scale")
    parts.append(
        f'<p class="meta">latest run {_e(latest.get("started_at"))} · profile {_e(runs[-1].profile)} · '
        f"device {_e(gpu_class_of(latest).get('detected'))} · scale {_e(scale)} · "
        f'{len(runs)} stored run(s) · verdict <b class="{status_class(verdict)}">{_e(verdict)}</b>'
        "</p>"
    )
    # measured vs expected
    bars, rows = [], []
    for rec in latest.get("results", []):
        for metric, exp in (rec.get("expected") or {}).items():
            measured = rec.get("metrics", {}).get(metric)
            ratio = exp.get("ratio")
            if ratio:
                bars.append((f"{rec['workload']} · {label(metric)}", float(ratio), exp.get("status", "")))
            rows.append(
                [
                    (rec["workload"], ""),
                    (label(metric), ""),
                    (format_metric(metric, measured), "n"),
                    (format_metric(metric, exp.get("min")), "n"),
                    (f"{ratio:.2f}" if ratio else "-", "n"),
                    (exp.get("status", ""), status_class(exp.get("status"))),
                ]
            )
        if not rec.get("expected"):
            metric = _headline(rec)
            shown = (
                (rec.get("error") or {}).get("message")
                or (format_metric(metric, rec["metrics"].get(metric)) if metric else "")
                or "measured"
            )
            rows.append(
                [
                    (rec["workload"], ""),
                    (label(metric) if metric else "", ""),
                    (shown, "n"),
                    ("no expectation", ""),
                    ("", ""),
                    (rec["status"], status_class(rec["status"])),
                ]
            )
    parts.append("<h3>Measured vs expected (latest run)</h3>")
    parts.append(_img(plots.expectation_bars(bars), f"{node}: measured over expected per checked figure"))
    parts.append(_table(["load", "figure", "measured", "expected at least", "ratio", "status"], rows))
    # changes since the previous run of the same profile
    summary = {
        "node": node,
        "profile": runs[-1].profile,
        "verdict": verdict,
        "time": latest.get("started_at"),
        "regressions": None,
    }
    if same_profile:
        base = same_profile[-1]
        changes = [c for c in history.compare(base.doc, latest, threshold) if c.verdict != "unchanged"]
        summary["regressions"] = sum(c.verdict == "regression" for c in changes)
        parts.append(f"<h3>Changes since {_e(base.doc.get('started_at'))} (threshold {threshold:.0%})</h3>")
        if changes:
            parts.append(
                _table(
                    ["load", "figure", "before", "now", "change", ""],
                    [
                        [
                            (c.workload, ""),
                            (label(c.metric), ""),
                            (format_metric(c.metric, c.before), "n"),
                            (format_metric(c.metric, c.after), "n"),
                            (f"{c.ratio - 1:+.1%}", "n"),
                            (c.verdict, status_class(c.verdict)),
                        ]
                        for c in changes
                    ],
                )
            )
        else:
            parts.append(f"<p>No figure moved by more than {threshold:.0%}.</p>")
    # over time
    panels: dict[str, list] = defaultdict(list)
    units: dict[str, str] = {}
    memory: dict[str, list] = defaultdict(list)
    time_rows = []
    for entry in runs:
        for rec in entry.doc.get("results", []):
            metric = _headline(rec)
            value = rec.get("metrics", {}).get(metric) if metric else None
            if isinstance(value, int | float):
                scaled, unit = _scaled(metric, value)
                panels[rec["workload"]].append((entry.time, scaled))
                units[rec["workload"]] = unit
                time_rows.append(
                    [
                        (entry.time, ""),
                        (rec["workload"], ""),
                        (label(metric), ""),
                        (format_metric(metric, value), "n"),
                    ]
                )
            peak = rec.get("metrics", {}).get("peak_memory_bytes")
            if isinstance(peak, int | float):
                memory[rec["workload"]].append((entry.time, peak / 2**30))
    parts.append("<h3>Throughput over time</h3>")
    parts.append(
        _img(
            plots.small_multiples(panels, units, f"{node}: headline figure per load"),
            f"{node}: throughput per load over time",
        )
    )
    parts.append(_table(["run", "load", "figure", "value"], time_rows))
    parts.append("<h3>Peak memory over time</h3>")
    parts.append(
        _img(plots.over_time(memory, "GiB", f"{node}: peak memory per load"), f"{node}: peak memory")
    )
    losses = {
        f"{rec['workload']} · {entry.time}": rec["metrics"]["loss_per_step"]
        for entry in runs[-3:]
        for rec in entry.doc.get("results", [])
        if isinstance(rec.get("metrics", {}).get("loss_per_step"), list)
    }
    if losses:
        parts.append("<h3>Training loss (reference loads, last three runs)</h3>")
        parts.append(_img(plots.loss_curves(losses), f"{node}: training loss per step"))
        parts.append(
            _table(
                ["load · run", "steps", "first loss", "last loss"],
                [
                    [(k, ""), (str(len(v)), "n"), (f"{v[0]:.4f}", "n"), (f"{v[-1]:.4f}", "n")]
                    for k, v in losses.items()
                ],
            )
        )
    parts.append("</section>")
    return "".join(parts), summary


def _severity(label: str) -> int:
    try:
        return Status.parse(label).severity
    except KeyError:
        return 0


def _health_section(health: dict[str, list[history.Entry]]) -> tuple[str, dict]:
    parts = ['<section id="health"><h2>Fleet health</h2>']
    groups = sorted({c["name"].split(".")[0] for runs in health.values() for c in runs[-1].doc["checks"]})
    rows, status_of = [], {}
    for node, runs in sorted(health.items()):
        doc = runs[-1].doc
        status_of[node] = doc["status"]
        worst: dict[str, str] = {}
        for c in doc["checks"]:
            g = c["name"].split(".")[0]
            if _severity(c["status"]) >= _severity(worst.get(g, "ok")):
                worst[g] = c["status"]
        bad = [c["name"] for c in doc["checks"] if c["status"] != "ok"]
        rows.append(
            [
                (node, ""),
                (doc["status"], status_class(doc["status"])),
                (doc["collected_at"], ""),
                *((worst.get(g, "-"), status_class(worst.get(g))) for g in groups),
                (", ".join(bad) or "-", ""),
            ]
        )
    parts.append("<h3>Status per node and check group (latest report)</h3>")
    parts.append(_table(["node", "status", "collected", *groups, "checks not ok"], rows))
    temps: dict[str, list] = defaultdict(list)
    power: dict[str, list] = defaultdict(list)
    latest_rows = []
    for node, runs in sorted(health.items()):
        for entry in runs:
            readings = [c for c in entry.doc["checks"] if isinstance(c.get("value"), int | float)]
            hot = [c["value"] for c in readings if c.get("unit") in TEMPERATURE_UNITS]
            if hot:
                temps[node].append((entry.time, max(hot)))
            for c in readings:
                if c.get("unit") in POWER_UNITS:
                    power[f"{node} · {c['name']}"].append((entry.time, c["value"]))
        for c in runs[-1].doc["checks"]:
            reading = c.get("unit") in (*TEMPERATURE_UNITS, *POWER_UNITS)
            if reading and isinstance(c.get("value"), int | float):
                unit = "°C" if c["unit"] in TEMPERATURE_UNITS else "W"
                latest_rows.append(
                    [
                        (node, ""),
                        (c["name"], ""),
                        (f"{c['value']:g} {unit}", "n"),
                        (c["status"], status_class(c["status"])),
                    ]
                )
    parts.append("<h3>Temperature and power history</h3>")
    parts.append(
        _img(plots.over_time(temps, "°C", "hottest temperature reading per node"), "temperature history")
    )
    parts.append(_img(plots.over_time(power, "W", "power readings"), "power history"))
    if latest_rows:
        parts.append(_table(["node", "reading", "latest value", "status"], latest_rows))
    else:
        parts.append("<p>No temperature or power readings in the stored reports.</p>")
    parts.append("</section>")
    return "".join(parts), status_of


def _skipped_section(skipped: list[history.Skipped]) -> str:
    if not skipped:
        return ""
    rows = [[(str(s.path), ""), (s.reason, "warn")] for s in skipped]
    return (
        '<section id="skipped"><h2>Files left out</h2>'
        f"<p>{len(skipped)} stored file(s) could not be read and are not part of this report.</p>"
        + _table(["file", "why"], rows)
        + "</section>"
    )


def build(
    entries: list[history.Entry],
    threshold: float,
    sources: list[str],
    skipped: list[history.Skipped] | None = None,
) -> tuple[str, dict]:
    """The HTML text and what it holds (nodes, runs, health reports, files left out)."""
    bench = history.by_host([e for e in entries if e.kind == "bench"])
    health = history.by_host([e for e in entries if e.kind == "health"])
    sections, summaries = [], []
    for node in sorted(bench):
        text, summary = _node_section(node, bench[node], threshold)
        sections.append(text)
        summaries.append(summary)
    health_text, health_status = _health_section(health) if health else ("", {})
    nodes = sorted(set(bench) | set(health))
    rows = []
    for node in nodes:
        s = next((x for x in summaries if x["node"] == node), None)
        reg = s and s["regressions"]
        rows.append(
            [
                (node, ""),
                (s["profile"] if s else "-", ""),
                (s["time"] if s else "-", ""),
                (s["verdict"] if s else "-", status_class(s["verdict"]) if s else ""),
                ("-" if not s or reg is None else str(reg), "bad" if reg else ""),
                (health_status.get(node, "-"), status_class(health_status.get(node))),
            ]
        )
    generated = utc_stamp(datetime.now(UTC))
    doc = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        "<title>toolkit report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>toolkit report</h1>",
        f'<p class="meta">generated {generated} by toolkit {__version__} from {_e(", ".join(sources))} · '
        f"{len(nodes)} node(s), {sum(len(v) for v in bench.values())} bench run(s), "
        f"{sum(len(v) for v in health.values())} health report(s)"
        + (f", {len(skipped)} file(s) left out (see the end)" if skipped else "")
        + "</p>",
        "<h2>Fleet</h2>",
        _table(
            ["node", "profile", "latest bench", "verdict", f"regressions (>{threshold:.0%})", "health"], rows
        ),
        *sections,
        health_text,
        _skipped_section(skipped or []),
        "</body></html>",
    ]
    return "\n".join(doc), {
        "nodes": nodes,
        "bench_runs": sum(len(v) for v in bench.values()),
        "health_reports": sum(len(v) for v in health.values()),
        "skipped": len(skipped or []),
    }
