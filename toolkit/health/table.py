"""The human view: one rich table per collector, worst rows first, and the overall status."""

from __future__ import annotations

import re

from rich.table import Table

from toolkit.health.model import Report, Status
from toolkit.health.secrets import redact

STYLE = {Status.OK: "green", Status.WARNING: "yellow", Status.CRITICAL: "bold red", Status.UNKNOWN: "magenta"}


def _value(check) -> str:
    v = check.value
    if v is None:
        return "—"
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
    hidden = 0
    for result in report.collectors:
        title = f"{result.name} — {result.status.label.upper()}"
        if not result.up:
            title += " (source not readable)"
        table = Table(title=title, title_justify="left", expand=False)
        table.add_column("check")
        table.add_column("status")
        table.add_column("value", justify="right")
        table.add_column("detail", overflow="fold")
        for check in sorted(result.checks, key=lambda c: -c.status.severity):
            if not show_all and check.status is Status.OK and _SERIES.match(check.name):
                hidden += 1
                continue
            style = STYLE[check.status]
            table.add_row(
                check.name, f"[{style}]{check.status.label}[/]", redact(_value(check)), redact(check.detail)
            )
        console.print(table)
    for note in report.notes:
        console.print(f"note: {redact(note)}")
    if hidden:
        console.print(f"{hidden} per-GPU detail series hidden (all OK); --all shows them, --json has them")
    style = STYLE[report.status]
    console.print(
        f"[{style}]{report.host}: {report.status.label.upper()}[/] — {len(report.checks)} checks in "
        f"{report.duration_seconds:.2f} s"
    )


def render_history(console, summary: dict) -> None:
    table = Table(
        title=f"{summary['reports']} reports in {summary['folder']} ({summary['first']} … {summary['last']})",
        title_justify="left",
    )
    for col in ("check", "worst", "not ok", "last", "worst seen", "detail at worst"):
        table.add_column(col)
    for row in summary["checks"]:
        worst_status = Status.parse(row["worst"])
        table.add_row(
            row["name"],
            f"[{STYLE[worst_status]}]{row['worst']}[/]",
            f"{row['not_ok']}/{row['runs']}",
            row["last"],
            row["worst_at"] or "—",
            redact(row["worst_detail"]),
        )
    console.print(table)
