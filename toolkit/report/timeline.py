"""The report's "over time" part: per node one small chart per load's headline figure (with the values
beside it), the training loss of the last runs, and the fleet's temperature and power history from the
stored health reports."""

from __future__ import annotations

from collections import defaultdict

from toolkit import history
from toolkit.bench import metrics
from toolkit.bench.report import format_metric, label
from toolkit.report import changes, plots
from toolkit.report.cards import e, status_class

# plotted figures in a readable unit, by the unit `toolkit.bench.metrics` declares for them
SCALE = {"flops": (1e9, "GFLOP/s"), "bytes_per_second": (1e9, "GB/s")}
TEMPERATURE_UNITS = ("°C", "celsius")
POWER_UNITS = ("W", "watts")
LOSS_RUNS = 3


def scaled(metric: str, value: float) -> tuple[float, str]:
    scale = SCALE.get(metrics.unit_of(metric))
    if scale is None:
        return value, label(metric)
    factor, unit = scale
    return value / factor, unit


def _chart(uri: str | None, caption: str, values: str) -> str:
    img = f'<img src="{uri}" alt="{e(caption)}">' if uri else '<p class="meta">one run: no history yet</p>'
    return f'<figure class="chart"><figcaption><b>{e(caption)}</b> · {e(values)}</figcaption>{img}</figure>'


def _series(runs: list[history.Entry]) -> dict[tuple[str, str], list[tuple[str, float]]]:
    out: dict[tuple[str, str], list[tuple[str, float]]] = defaultdict(list)
    for entry in runs:
        for rec in entry.doc.get("results", []):
            metric = changes.headline(rec)
            value = (rec.get("metrics") or {}).get(metric) if metric else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[(rec["workload"], metric)].append((entry.time, value))
    return out


def _losses(runs: list[history.Entry]) -> dict[str, list[float]]:
    return {
        f"{rec['workload']} · {entry.time}": rec["metrics"]["loss_per_step"]
        for entry in runs[-LOSS_RUNS:]
        for rec in entry.doc.get("results", [])
        if isinstance((rec.get("metrics") or {}).get("loss_per_step"), list)
        and all(isinstance(v, int | float) for v in rec["metrics"]["loss_per_step"])
    }


def node_history(node: str, runs: list[history.Entry]) -> str:
    parts = [f'<div class="node-block" id="node-{e(node)}"><h3>{e(node)}</h3><div class="charts">']
    for (load, metric), points in sorted(_series(runs).items()):
        unit = scaled(metric, points[0][1])[1]
        values = ", ".join(format_metric(metric, v) for _, v in points[-4:])
        more = f" (last 4 of {len(points)})" if len(points) > 4 else ""
        uri = plots.figure_over_time([(t, scaled(metric, v)[0]) for t, v in points], unit)
        parts.append(_chart(uri, f"{load} · {label(metric)}", values + more))
    losses = _losses(runs)
    if losses:
        uri = plots.loss_curves(losses)
        last = "; ".join(f"{k}: {v[0]:.4f} → {v[-1]:.4f}" for k, v in losses.items())
        parts.append(
            f'<figure class="chart loss"><figcaption><b>Training loss</b> (last {LOSS_RUNS} runs) · '
            f"{e(last)}</figcaption>"
            + (f'<img src="{uri}" alt="{e(node)}: training loss per step">' if uri else "")
            + "</figure>"
        )
    parts.append("</div></div>")
    return "".join(parts)


def _readings(health: dict[str, list[history.Entry]]):
    temps: dict[str, list] = defaultdict(list)
    power: dict[str, list] = defaultdict(list)
    for node, runs in sorted(health.items()):
        for entry in runs:
            readings = [
                c
                for c in entry.doc["checks"]
                if isinstance(c.get("value"), int | float) and not isinstance(c.get("value"), bool)
            ]
            hot = [c["value"] for c in readings if c.get("unit") in TEMPERATURE_UNITS]
            if hot:
                temps[node].append((entry.time, max(hot)))
            for c in readings:
                if c.get("unit") in POWER_UNITS:
                    power[f"{node} · {c['name']}"].append((entry.time, c["value"]))
    return temps, power


def health_history(health: dict[str, list[history.Entry]]) -> str:
    temps, power = _readings(health)
    parts = ['<div class="node-block" id="health"><h3>Temperature and power</h3>']
    if not temps and not power:
        parts.append(
            '<p class="meta">No temperature or power readings in the stored health reports.</p></div>'
        )
        return "".join(parts)
    parts.append('<div class="charts">')
    for series, unit, caption in (
        (temps, "°C", "hottest temperature per node"),
        (power, "W", "power readings"),
    ):
        if series:
            uri = plots.lines_over_time(series, unit)
            alt = "temperature history" if unit == "°C" else "power history"
            parts.append(
                f'<figure class="chart"><figcaption><b>{e(caption)}</b></figcaption>'
                + (f'<img src="{uri}" alt="{alt}">' if uri else "")
                + "</figure>"
            )
    parts.append("</div>")
    rows = []
    for node, runs in sorted(health.items()):
        for c in runs[-1].doc["checks"]:
            if c.get("unit") in (*TEMPERATURE_UNITS, *POWER_UNITS) and isinstance(
                c.get("value"), int | float
            ):
                unit = "°C" if c["unit"] in TEMPERATURE_UNITS else "W"
                rows.append(
                    f'<tr><td>{e(node)}</td><td>{e(c["name"])}</td><td class="n">{c["value"]:g} {unit}</td>'
                    f'<td class="{status_class(c["status"])}">{e(c["status"])}</td></tr>'
                )
    if rows:
        parts.append(
            '<div class="scroll"><table><tr><th>node</th><th>reading</th><th>latest value</th><th>status</th>'
            "</tr>" + "".join(rows) + "</table></div>"
        )
    parts.append("</div>")
    return "".join(parts)
