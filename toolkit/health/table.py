"""The human view: one rich table per collector, worst rows first, and the overall status.

Names, values and details come from peers (a BMC names its own sensors, `[/]` included) and from stored
reports: every cell is a `rich.text.Text`, never markup, so no name can break or restyle the table.
"""

from __future__ import annotations

import math
import re

from rich.table import Table
from rich.text import Text

from toolkit.health.model import Report, Status
from toolkit.health.secrets import redact

STYLE = {Status.OK: "green", Status.WARNING: "yellow", Status.CRITICAL: "bold red", Status.UNKNOWN: "magenta"}


def _value(check) -> str:
    v = check.value
    if v is None:
        return "—"
    if isinstance(v, float) and not math.isfinite(v):
        return "—"  # never shown as a reading (health.model.finite_tree keeps it out of JSON too)
    if isinstance(v, float):
        text = f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3g}"
    elif isinstance(v, int) and check.unit == "bytes":
        return f"{v / 2**30:,.1f} GiB"
    else:
        text = str(v)
    return f"{text} {check.unit}" if check.unit else text


# Per-GPU series checks (gpu0.ecc.volatile_corrected, gpu0.pcie.width …) carry Prometheus series; the
# judged summary check (gpu0.ecc, gpu0.pcie) already says the same in the table. Shown when not OK or --all.
_SERIES = re.compile(r"^(gpu|amd)\d+\.[a-z_]+\.")


def render(console, report: Report, show_all: bool = False) -> None:
    """A table per collector, notes, the overall line; -v shows every detail series, -q only the checks
    that are not OK and the overall line."""
    from toolkit import console as consoles

    quiet, show_all, hidden = consoles.verbosity < 0, show_all or consoles.verbosity > 0, 0
    for result in report.collectors:
        if quiet and all(c.status is Status.OK for c in result.checks):
            continue
        title = f"{result.name} — {result.status.label.upper()}"
        if not result.up:
            title += " (source not readable)"
        table = Table(title=Text(title), title_justify="left", expand=False)
        table.add_column("check")
        table.add_column("status")
        table.add_column("value", justify="right")
        table.add_column("detail", overflow="fold")
        for check in sorted(result.checks, key=lambda c: -c.status.severity):
            if quiet and check.status is Status.OK:
                continue
            if not show_all and check.status is Status.OK and _SERIES.match(check.name):
                hidden += 1
                continue
            table.add_row(
                Text(str(check.name)),
                _status(check.status),
                Text(redact(_value(check))),
                Text(redact(str(check.detail))),
            )
        console.print(table)
    for note in [] if quiet else report.notes:
        console.print(Text(f"note: {redact(str(note))}"))
    if hidden and not quiet:
        console.print(f"{hidden} per-GPU detail series hidden (all OK); --all shows them, --json has them")
    line = Text(f"{report.host}: {report.status.label.upper()}", style=STYLE[report.status])
    line.append(f" — {len(report.checks)} checks in {report.duration_seconds:.2f} s")
    console.print(line)


def _status(status: Status) -> Text:
    return Text(status.label, style=STYLE[status])


def render_history(console, summary: dict) -> None:
    table = Table(
        title=Text(
            f"{summary['reports']} reports in {summary['folder']} ({summary['first']} … {summary['last']})"
        ),
        title_justify="left",
    )
    for col in ("check", "worst", "not ok", "last", "worst seen", "detail at worst"):
        table.add_column(col)
    for row in summary["checks"]:
        table.add_row(
            Text(str(row["name"])),
            _status(Status.parse(row["worst"])),
            Text(f"{row['not_ok']}/{row['runs']}"),
            Text(str(row["last"])),
            Text(str(row["worst_at"] or "—")),
            Text(redact(str(row["worst_detail"]))),
        )
    console.print(table)
    for item in summary.get("skipped") or []:  # corrupt, looping or newer-schema files: said, not dropped
        console.print(Text(f"skipped {item['file']}: {item['reason']}", style="yellow"))
