"""One card per node: is it healthy and as fast as its GPU class should be?

The card holds the node's state in one word, the latest run's verdict, each checked figure as a bar of
measured against expected with the floor marked, the headline figure of every load that has no floor,
what moved since the previous comparable run, and the latest health report with the checks that are
not OK. Every number is the stored JSON's own, formatted as the terminal table formats it."""

from __future__ import annotations

import html

from toolkit import history
from toolkit.bench.report import format_metric, label
from toolkit.glossary import Tone, tone_of
from toolkit.report import changes

# the report's colour classes, by the tone of a status word of any family (glossary.TONE_OF)
TONE_CLASS = {Tone.GOOD: "ok", Tone.WARN: "warn", Tone.BAD: "bad", Tone.SEVERE: "bad", Tone.UNKNOWN: "unk"}
# a node whose latest run passed its floors but fell behind its previous run beyond the noise
REGRESSED = "regressed"
BAR_MAX = 3.0  # the bar's scale ends at 3x the floor; a figure beyond it is drawn full with a mark


def status_class(word: str | None) -> str:
    if word == REGRESSED:
        return "bad"
    if word in ("interrupted", "incomplete"):
        return "unk"
    return TONE_CLASS.get(tone_of(word), "")


def e(value) -> str:
    return html.escape(str(value), quote=True)


def pill(word: str) -> str:
    return f'<span class="pill {status_class(word)}">{e(word)}</span>'


def bar(measured: float, floor: float, ratio: float, status: str) -> str:
    """measured / floor on a scale from 0 to BAR_MAX x the floor (or less when the figure is near it)."""
    scale = min(max(ratio * 1.1, 1.5), BAR_MAX)
    width = min(ratio, scale) / scale * 100
    over = " over" if ratio > scale else ""
    return (
        f'<div class="bar" role="img" aria-label="{ratio:.2f} of the floor">'
        f'<span class="fill {e(status)}{over}" style="width:{width:.1f}%"></span>'
        f'<span class="floor" style="left:{100 / scale:.1f}%" title="floor"></span></div>'
    )


def _checked(rec: dict) -> list[str]:
    out = []
    for metric, exp in (rec.get("expected") or {}).items():
        measured = (rec.get("metrics") or {}).get(metric)
        floor, ratio, status = exp.get("min"), exp.get("ratio"), exp.get("status", "")
        if not isinstance(measured, int | float) or not isinstance(floor, int | float) or not floor:
            continue
        ratio = ratio if isinstance(ratio, int | float) else measured / floor
        out.append(
            f'<div class="figure checked" data-load="{e(rec["workload"])}" data-metric="{e(metric)}">'
            f'<div class="name"><span>{e(rec["workload"])} · {e(label(metric))}</span>'
            f"<span><b>{e(format_metric(metric, measured))}</b> · floor {e(format_metric(metric, floor))}"
            f" · {ratio:.2f}× {pill(status)}</span></div>{bar(measured, floor, ratio, status)}</div>"
        )
    return out


def _unchecked(rec: dict) -> str:
    metric = changes.headline(rec)
    error = (rec.get("error") or {}).get("message")
    value = error or (format_metric(metric, rec["metrics"].get(metric)) if metric else "")
    why = "" if error else " (no floor in this run)"
    return (
        f'<div class="figure unchecked"><div class="name"><span>{e(rec["workload"])}'
        f"{' · ' + e(label(metric)) if metric and not error else ''}</span><span><b>{e(value or '-')}</b>"
        f"{e(why)} {pill(rec['status'])}</span></div></div>"
    )


def _moves_line(moved: list[changes.Move], base: history.Entry | None) -> str:
    if base is None:
        return (
            '<p class="meta">No earlier comparable run (same class and scale, finished) to compare with.</p>'
        )
    reg = [m for m in moved if m.verdict == "regression"]
    imp = [m for m in moved if m.verdict == "improvement"]
    words = ", ".join(
        f"{len(x)} {w}{'s' if len(x) != 1 else ''}"
        for x, w in ((reg, "regression"), (imp, "improvement"))
        if x
    )
    return (
        f'<p class="meta">Since {e(base.time)}: {e(words or "no figure moved beyond the noise")} '
        f'(<a href="#changes-{e(base.host)}">details</a>).</p>'
    )


def _health(runs: list[history.Entry] | None) -> str:
    if not runs:
        return '<h4>Health</h4><p class="meta">No stored health report for this node.</p>'
    doc = runs[-1].doc
    bad = [c for c in doc["checks"] if c["status"] != "ok"]
    head = f'<h4>Health {pill(doc["status"])}</h4><p class="meta">report of {e(doc["collected_at"])}'
    if not bad:
        return head + f": all {len(doc['checks'])} checks ok.</p>"
    items = "".join(
        f'<li class="check-not-ok">{pill(c["status"])} <b>{e(c["name"])}</b>'
        f"{' — ' + e(c.get('detail')) if c.get('detail') else ''}</li>"
        for c in bad
    )
    return head + f': {len(bad)} of {len(doc["checks"])} checks not OK.</p><ul class="checks">{items}</ul>'


def node_state(verdict: str | None, regressions: int, health: str | None) -> str:
    """The node's state in one word: a broken or failed run first, then a regression, then the verdict;
    a critical health report makes a passing node `critical`."""
    if verdict in ("fail", "error", "interrupted", "incomplete"):
        return verdict
    if health == "critical":
        return "critical"
    if regressions:
        return REGRESSED
    if verdict:
        return "warn" if health == "warning" and verdict == "pass" else verdict
    return health or "unknown"


def card(
    node: str, bench: list[history.Entry] | None, health: list[history.Entry] | None, threshold: float
) -> tuple[str, dict]:
    """The card's HTML and the node's summary for the fleet table."""
    latest = bench[-1] if bench else None
    base = changes.baseline(bench) if bench else None
    moved = changes.moves(base.doc, latest.doc, threshold) if base and latest else []
    regressions = sum(m.verdict == "regression" for m in moved)
    verdict = latest.doc.get("verdict", "?") if latest else None
    health_status = health[-1].doc["status"] if health else None
    state = node_state(verdict, regressions, health_status)
    parts = [f'<article class="card {status_class(state)}" id="card-{e(node)}" data-node="{e(node)}">']
    parts.append(f'<div class="card-head"><h3>{e(node)}</h3>{pill(state)}</div>')
    checked, unchecked = [], []
    if latest:
        doc = latest.doc
        detected = (doc.get("gpu_class") or {}).get("detected")
        parts.append(
            f'<p class="meta">class {e(latest.profile)} · {e(detected)} · '
            f"scale {e((doc.get('configuration') or {}).get('scale'))} · latest run {e(latest.time)} · "
            f"verdict {pill(verdict)} · {len(bench)} run(s)</p>"
        )
        for rec in doc.get("results", []):
            rows = _checked(rec)
            checked += rows
            if not rows:
                unchecked.append(_unchecked(rec))
        parts.append("<h4>Measured vs expected</h4>")
        parts += checked or ['<p class="meta">No figure of the latest run has a floor.</p>']
        parts += unchecked
        parts.append(_moves_line(moved, base))
    else:
        parts.append('<p class="meta">No stored bench run for this node.</p>')
    parts.append(_health(health))
    parts.append("</article>")
    return "".join(parts), {
        "node": node,
        "state": state,
        "profile": latest.profile if latest else None,
        "time": latest.time if latest else None,
        "verdict": verdict,
        "checked": len(checked),
        "at_floor": sum(
            (x.get("status") in ("pass", "warn"))
            for r in (latest.doc.get("results", []) if latest else [])
            for x in (r.get("expected") or {}).values()
            if isinstance(x, dict) and isinstance(x.get("min"), int | float) and x.get("min")
        ),
        "baseline": base,
        "moves": moved,
        "regressions": regressions,
        "improvements": sum(m.verdict == "improvement" for m in moved),
        "health": health_status,
    }
