"""`toolkit report`: one self-contained HTML file (CSS inline, charts as PNG data URIs, no script, nothing
fetched) from the stored results, in the order a node owner asks: is each node healthy and as fast as
its class should be (one card per node), what changed since its previous comparable run, how it moved
over time (one small chart per figure, training loss, temperature and power), and the fleet as a table
that sorts without JavaScript (each order is a copy of the table shown when its header link is the
page's target)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from toolkit import __version__, history
from toolkit.bench.report import format_metric, label
from toolkit.glossary import utc_stamp
from toolkit.report import changes
from toolkit.report.cards import card, e, pill, status_class
from toolkit.report.style import CSS
from toolkit.report.timeline import health_history, node_history

STATE_ORDER = ["error", "fail", "critical", "interrupted", "incomplete", "regressed", "warn", "warning"]


def _table(head: list[str], rows: list[list[tuple[str, str]]], cls: str = "") -> str:
    """rows of (text, css class): numbers get class n, statuses their colour."""
    out = [f'<div class="scroll"><table class="{cls}"><tr>', *(f"<th>{h}</th>" for h in head), "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f'<td class="{c}">{e(text)}</td>' for text, c in row) + "</tr>")
    out.append("</table></div>")
    return "".join(out)


def _changes_section(summaries: list[dict], threshold: float) -> str:
    parts = [
        '<section id="changes"><h2>What changed since the previous comparable run</h2>',
        f'<p class="meta">A figure counts as moved when it changed by more than its noise band: twice the '
        f"larger run-to-run spread (coefficient of variation) either run measured for it, and at least "
        f"{threshold:.0%} (the whole band when a run measured no spread). Compared: each load's headline "
        f"figure and the figures it is checked on; the baseline is the newest earlier finished run of the "
        f"same node, class and scale.</p>",
    ]
    for s in summaries:
        if s["profile"] is None:
            continue
        node, base = s["node"], s["baseline"]
        parts.append(f'<div class="node-block" id="changes-{e(node)}"><h3>{e(node)}</h3>')
        if base is None:
            parts.append('<p class="meta">No earlier comparable run: nothing to compare with yet.</p></div>')
            continue
        parts.append(
            f'<p class="meta">latest run <b>{e(s["time"])}</b> against baseline <b class="baseline">'
            f"{e(base.time)}</b> ({e(base.path.name)})</p>"
        )
        moved = [m for m in s["moves"] if m.verdict != "unchanged"]
        quiet = len(s["moves"]) - len(moved)
        if moved:
            rows = [
                [
                    (m.workload, ""),
                    (label(m.metric), ""),
                    (format_metric(m.metric, m.before), "n"),
                    (format_metric(m.metric, m.after), "n"),
                    (f"{m.change:+.1%}", "n"),
                    (f"±{m.band:.0%}" + (" (measured)" if m.measured_noise else ""), "n"),
                    (m.verdict, status_class(m.verdict)),
                ]
                for m in moved
            ]
            parts.append(
                _table(["load", "figure", "before", "now", "change", "noise band", ""], rows, "moves")
            )
        parts.append(
            f'<p class="meta">{quiet} of {len(s["moves"])} compared figure(s) within the noise.</p></div>'
        )
    parts.append("</section>")
    return "".join(parts)


def _severity(state: str | None) -> int:
    return STATE_ORDER.index(state) if state in STATE_ORDER else len(STATE_ORDER)


def _fleet_rows(summaries: list[dict]) -> list[list[tuple[str, str]]]:
    rows = []
    for s in summaries:
        if s["profile"] is None:
            floors, since = "-", "-"
        else:
            floors = f"{s['at_floor']} of {s['checked']} at or above" if s["checked"] else "none checked"
            if s["baseline"] is None:
                since = "no earlier run"
            else:
                bits = [
                    f"{n} {w}{'s' if n != 1 else ''}"
                    for n, w in ((s["regressions"], "regression"), (s["improvements"], "improvement"))
                    if n
                ]
                since = ", ".join(bits) or "within noise"
        rows.append(
            [
                (s["node"], ""),
                (s["state"], status_class(s["state"])),
                (s["profile"] or "-", ""),
                (s["time"] or "-", ""),
                (floors, "n"),
                (since, "bad" if s["regressions"] else ""),
                (s["health"] or "-", status_class(s["health"])),
            ]
        )
    return rows


def _fleet_section(summaries: list[dict]) -> str:
    head = [
        '<a href="#fleet-by-node">node</a>',
        '<a href="#fleet">state</a>',
        "class",
        '<a href="#fleet-by-time">latest bench</a>',
        "floors",
        "since baseline",
        '<a href="#fleet-by-health">health</a>',
    ]
    orders = {
        "fleet-by-node": sorted(summaries, key=lambda s: s["node"]),
        "fleet-by-time": sorted(summaries, key=lambda s: s["time"] or "", reverse=True),
        "fleet-by-health": sorted(summaries, key=lambda s: (_severity(s["health"] or "unknown"), s["node"])),
    }
    by_state = sorted(summaries, key=lambda s: (_severity(s["state"]), s["node"]))
    parts = [
        '<section id="fleet"><h2>Fleet</h2><p class="meta">Worst first; a header link sorts by its column '
        "(the page's address keeps the order).</p>"
    ]
    for anchor, ordered in orders.items():
        parts.append(f'<div class="sorted" id="{anchor}">{_table(head, _fleet_rows(ordered), "fleet")}</div>')
    parts.append(f'<div class="default">{_table(head, _fleet_rows(by_state), "fleet")}</div></section>')
    return "".join(parts)


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
    bench = {
        h: changes.distinct_runs(r)
        for h, r in history.by_host([x for x in entries if x.kind == "bench"]).items()
    }
    health = history.by_host([x for x in entries if x.kind == "health"])
    nodes = sorted(set(bench) | set(health))
    cards, summaries = [], []
    for node in nodes:
        text, summary = card(node, bench.get(node), health.get(node), threshold)
        cards.append(text)
        summaries.append(summary)
    worst = sorted(range(len(nodes)), key=lambda i: (_severity(summaries[i]["state"]), nodes[i]))
    counts = defaultdict(int)
    for s in summaries:
        counts[s["state"]] += 1
    generated = utc_stamp(datetime.now(UTC))
    n_bench = sum(len(v) for v in bench.values())
    n_health = sum(len(v) for v in health.values())
    doc = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="color-scheme" content="light dark">',
        "<title>toolkit report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>toolkit report</h1>",
        f'<p class="meta">generated {generated} by toolkit {__version__} from {e(", ".join(sources))} · '
        f"{len(nodes)} node(s), {n_bench} bench run(s), {n_health} health report(s)"
        + (f", {len(skipped)} file(s) left out (see the end)" if skipped else "")
        + "</p>",
        '<p class="meta">'
        + " ".join(f"{pill(k)} {v}" for k, v in sorted(counts.items(), key=lambda kv: _severity(kv[0])))
        + "</p>",
        '<section id="nodes"><h2>Nodes</h2><div class="cards">',
        *(cards[i] for i in worst),
        "</div></section>",
        _changes_section([s for s in summaries if s["profile"]], threshold),
        '<section id="over-time"><h2>Over time</h2>',
        *(node_history(node, bench[node]) for node in sorted(bench)),
        health_history(health) if health else "",
        "</section>",
        _fleet_section(summaries),
        _skipped_section(skipped or []),
        "</body></html>",
    ]
    return "\n".join(doc), {
        "nodes": nodes,
        "bench_runs": n_bench,
        "health_reports": n_health,
        "skipped": len(skipped or []),
    }
