"""Nagios / Icinga plugin output, as the Monitoring Plugins development guidelines lay it out:

    STATUS - summary | perfdata
    long output, one line per check, worst first
    | more perfdata, one label=value per line

The first line's STATUS is the one the exit code says (report.status is both). Texts come from peers
(a BMC names its sensors), so a `|` in them is replaced — it would start the performance data — and
each stays on its own line. Performance data: 'label'=value[UOM];warn;crit;min;max with the units the
guidelines allow (s, %, B, c); others are written as bare numbers, their unit named in the long output."""

from __future__ import annotations

import math

from toolkit.glossary import Status
from toolkit.health.model import Check, Report
from toolkit.health.secrets import redact

_UOM = {"s": "s", "seconds": "s", "%": "%", "bytes": "B", "B": "B"}
SHOWN_PROBLEMS = 3  # problems named in the first line; the long output has them all


def _text(value) -> str:
    return redact(" ".join(str(value).split())).replace("|", "/")


def _label(name: str) -> str:
    """A perfdata label: quoted when it holds a space, '=' or a quote (a quote inside is doubled)."""
    name = _text(name)
    if any(ch in name for ch in " ='"):
        return "'" + name.replace("'", "''") + "'"
    return name


def _number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def perfdata(check: Check) -> str | None:
    """One check's performance datum, or None when it has no finite number to plot."""
    value = check.prom_value if check.prom_value is not None else check.value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    if not check.metric:
        return None
    uom = "c" if check.metric.endswith("_total") else _UOM.get(check.unit or "", "")
    if uom == "%" and check.unit != "%":
        uom = ""
    return f"{_label(check.name)}={_number(value)}{uom}"


def _summary(report: Report) -> str:
    checks = report.checks
    problems = sorted((c for c in checks if c.status is not Status.OK), key=lambda c: -c.status.severity)
    if not checks:
        return f"{_text(report.host)}: no checks ran"
    if not problems:
        return f"{_text(report.host)}: all {len(checks)} checks OK"
    counts = []
    for status in (Status.CRITICAL, Status.WARNING, Status.UNKNOWN):
        n = sum(c.status is status for c in checks)
        if n:
            counts.append(f"{n} {status.label}")
    named = "; ".join(_problem(c) for c in problems[:SHOWN_PROBLEMS])
    more = len(problems) - SHOWN_PROBLEMS
    tail = f"; and {more} more" if more > 0 else ""
    return f"{_text(report.host)}: {', '.join(counts)} of {len(checks)} checks: {named}{tail}"


def _problem(check: Check) -> str:
    detail = _text(check.detail)
    return f"{_text(check.name)} {check.status.label.upper()}" + (f" ({detail})" if detail else "")


def _line(check: Check) -> str:
    value = (
        "" if check.value is None else f" = {_text(check.value)}" + (f" {check.unit}" if check.unit else "")
    )
    detail = f" — {_text(check.detail)}" if check.detail else ""
    return f"[{check.status.label.upper()}] {_text(check.name)}{value}{detail}"


def render(report: Report) -> str:
    checks = sorted(report.checks, key=lambda c: -c.status.severity)
    counts = {s: sum(c.status is s for c in checks) for s in Status}
    head_perf = " ".join(
        [f"{s.label}={counts[s]};;;0" for s in (Status.OK, Status.WARNING, Status.CRITICAL, Status.UNKNOWN)]
        + [f"duration={_number(round(report.duration_seconds, 3))}s;;;0"]
    )
    lines = [f"{report.status.label.upper()} - {_summary(report)} | {head_perf}"]
    lines += [_line(c) for c in checks]
    lines += [f"note: {_text(n)}" for n in report.notes]
    data = [d for d in (perfdata(c) for c in checks) if d]
    if data:
        lines[-1] += f" | {data[0]}"
        lines += data[1:]
    return "\n".join(lines) + "\n"


def error_text(message: str, hint: str = "") -> str:
    """What a run that could not start prints in --nagios mode: UNKNOWN first, the hint below."""
    return f"UNKNOWN - {_text(message)}\n" + (f"{_text(hint)}\n" if hint else "")
