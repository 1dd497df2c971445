"""The benchmark report: one JSON document per run (docs/REFERENCE.md) and its table.

The document itself is written by `toolkit.bench.document`; the labels and units of its figures are
declared in `toolkit.bench.metrics`. `save`, `to_json`, `SCHEMA_VERSION` and `utc_now` stay importable
from here for older callers.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from rich.text import Text

from toolkit.bench import metrics
from toolkit.bench.document import SCHEMA_VERSION, save_json, to_json
from toolkit.console import style_of
from toolkit.glossary import gpu_class_of, utc_now

__all__ = [
    "SCHEMA_VERSION",
    "format_metric",
    "label",
    "publish",
    "render",
    "render_comparison",
    "result_filename",
    "save",
    "summary_line",
    "to_json",
    "utc_now",
]


def result_filename(started_at: str, host: str, profile: str, pid: int | str | None = None) -> str:
    """bench-<UTC time>-<host>-<GPU class>-<pid>.json: two runs in the same second never collide (a
    result gathered by a fleet run carries the inventory name of its host in place of the pid)."""
    stamp = started_at.replace("-", "").replace(":", "")
    safe_host = re.sub(r"[^A-Za-z0-9.-]+", "_", host) or "host"
    return f"bench-{stamp}-{safe_host}-{profile}-{pid if pid is not None else os.getpid()}.json"


def save(doc: dict, path: str | Path) -> Path:
    return save_json(doc, path)


def format_metric(name: str, value, unit: bool = True) -> str:
    """One figure as the tables show it, in the unit `toolkit.bench.metrics` declares for it (`unit`
    False: the number alone for tok/s and /s, whose unit is in the column's label)."""
    if value is None:
        return "-"
    if isinstance(value, list):
        if name.endswith(metrics.PER_RANK):  # --gpus N: one value per rank
            return " / ".join(
                format_metric(name.removesuffix(metrics.PER_RANK), v, unit=False) for v in value
            )
        return f"{len(value)} values"
    return metrics.format_value(name, value, unit)


def label(metric: str) -> str:
    """Short table label of a metric key: 'prefill_tokens_per_second_batch8' -> 'prefill tok/s b8'."""
    return metrics.label(metric)


# Metrics shown in the table even though no check is attached to them.
SHOWN = (
    "flops_per_second",
    "bandwidth_bytes_per_second",
    "step_time_seconds_p50",
    "step_time_seconds_p90",
    "mfu_ratio",
    "ttft_seconds_p50_batch1",
    "ttft_seconds_p50_batch8",
    "peak_memory_bytes",
    # --gpus N
    "algorithm_bandwidth_bytes_per_second",
    "tokens_per_second_per_rank",
    "step_time_seconds_p50_per_rank",
    "peak_memory_bytes_per_rank",
    # vectors
    "queries_per_second",
    "exact_queries_per_second",
    "hnsw_speedup_vs_exact",
    "batch_queries_per_second",
    "filtered_queries_per_second",
    "filtered_recall_at_10",
    "latency_seconds_p50",
    "latency_seconds_p99",
    "upsert_points_per_second",
    "index_build_seconds",
)
# The vectors load's line on stderr: recall and its throughput against the same run's exact search.
VECTOR_SUMMARY = (
    "recall_at_10",
    "queries_per_second",
    "exact_queries_per_second",
    "hnsw_speedup_vs_exact",
    "index_build_seconds",
)


def summary_line(rec) -> str:
    """One line per finished load for the progress log on stderr."""
    if rec.error:
        return rec.error["message"]
    if rec.status == "skipped":
        return rec.notes[0] if rec.notes else "skipped"
    if rec.workload == "burn_in":
        from toolkit.bench.burnin import summary_line as burn_in_line

        return burn_in_line(rec)
    if rec.workload == "vectors":
        shown = [m for m in VECTOR_SUMMARY if m in rec.metrics]
    else:
        shown = list(rec.expected) or [m for m in SHOWN[:2] if m in rec.metrics]
    return ", ".join(f"{label(k)} {format_metric(k, rec.metrics.get(k), unit=False)}" for k in shown)


TABLE_COLUMNS = (
    ("load", "left"),
    ("metric", "left"),
    ("measured", "right"),
    ("expected ≥", "right"),
    ("ratio", "right"),
    ("status", "left"),
)


def print_load_line(console, rec) -> None:
    """The one line a finished load gets on stderr: its status and what it reached or why it did not."""
    from rich.markup import escape

    line = escape(summary_line(rec))  # error messages may quote [bracketed] library text
    console.print(f"[{style_of(rec.status)}]{rec.status:>5}[/] {rec.workload}: {line}", highlight=False)


def render(doc: dict, console) -> None:
    """The finished run: a table of the checked and shown figures that fits the console's width, then
    its notes, numbered and referenced from the cells (why a load was skipped, what each check expected
    and why, the loads' notes, the competing load), and the verdict with the loads that made it."""
    from toolkit import console as consoles

    gpu_class = gpu_class_of(doc)
    title = (
        f"toolkit bench · profile {gpu_class.get('name')} · {doc['host']} · "
        f"scale {doc['configuration']['scale']}"
    )
    if doc.get("distributed"):
        title += f" · {doc['distributed']['world_size']} ranks ({doc['distributed']['backend']})"
    notes = _Notes()
    loads = [(r, _result_rows(r, notes)) for r in doc["results"]]
    _print_fitted(console, title, loads)
    quiet = consoles.verbosity < 0  # -q: only the notes that say why a load is not a pass
    notes.print(console, only_reasons=quiet)
    if gpu_class.get("mismatch"):
        console.print(f"[yellow]Profile mismatch, run anyway: {gpu_class['mismatch']}[/]")
    v = doc["verdict"]
    console.print(Text.assemble("Verdict: ", (v, style_of(v)), _verdict_reasons(doc, notes)))


class _Notes:
    """The notes below the table, numbered in the order the cells reference them; `reasons` are the
    numbers of the notes that say why a load or a check is not a pass."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.reasons: set[int] = set()
        self.first_of: dict[str, int] = {}  # load -> its first reason's number

    def add(self, workload: str, text: str, reason: bool = False) -> int:
        self.lines.append(text)
        number = len(self.lines)
        if reason:
            self.reasons.add(number)
            self.first_of.setdefault(workload, number)
        return number

    def print(self, console, only_reasons: bool = False) -> None:
        from rich.table import Table

        grid = Table.grid(padding=(0, 1))
        grid.add_column(justify="right", no_wrap=True)
        grid.add_column(overflow="fold")  # paths and library text: folded, never cut
        for number, line in enumerate(self.lines, 1):
            if not only_reasons or number in self.reasons:
                grid.add_row(f" [{number}]", Text(line, style="" if number in self.reasons else "dim"))
        if grid.rows:
            console.print(grid)


def _refs(numbers: list[int]) -> str:
    return " ".join(f"[{n}]" for n in numbers)


def _result_rows(r: dict, notes: _Notes) -> list[tuple]:
    """One load's rows (load, metric, measured, expected, ratio, status): its checked figures, the figures
    shown without a check, and a line for an error, a skip, or a load with neither; what explains them
    goes to `notes`, referenced from the cell."""
    workload, rows = r["workload"], []
    reason = None
    if r.get("error") or r["status"] == "skipped":
        reason = notes.add(workload, f"{workload}: {_detail(r)}", reason=True)
    for metric, exp in r["expected"].items():
        number = notes.add(workload, _expectation(r, metric, exp), reason=exp["status"] != "pass")
        measured = format_metric(metric, r["metrics"].get(metric), unit=False) + _spread(r, metric)
        expected = format_metric(metric, exp.get("min"), unit=False)
        ratio = f"{exp['ratio']:.2f}" if "ratio" in exp else "-"
        rows.append([f"{label(metric)} [{number}]", measured, expected, ratio, exp["status"]])
    for metric in SHOWN:
        if metric in r["metrics"] and metric not in r["expected"]:
            shown = format_metric(metric, r["metrics"][metric]) + _spread(r, metric)
            rows.append([label(metric), shown, "", "", "" if rows else r["status"]])
    if not rows or reason:
        rows.append(["", f"see [{reason}]" if reason else _detail(r), "", "", r["status"]])
    own = _load_notes(r, notes, skip_first=bool(reason) and not r.get("error"))
    if own:
        rows[0][0] = f"{rows[0][0]} {_refs(own)}".strip()
    return [(workload if i == 0 else "", *row) for i, row in enumerate(rows)]


def _load_notes(r: dict, notes: _Notes, skip_first: bool) -> list[int]:
    """The load's own notes (a skip's first note is its reason, already a note), and the competing load
    observed during it when the load's notes do not say it already."""
    workload, numbers = r["workload"], []
    texts = [n for n in r["notes"][1 if skip_first else 0 :] if not n.startswith("peak_memory_bytes")]
    contention = r.get("contention") or {}
    evidence = contention.get("evidence")
    if contention.get("busy") and evidence and not any(evidence in t for t in texts):
        texts.append(f"the machine was busy during this load: {evidence}")
    for text in texts:
        judging = any(w in text for w in ("inconclusive", "unstable", "busy", "spread"))
        numbers.append(notes.add(workload, f"{workload}: {text}", reason=judging and r["status"] != "pass"))
    return numbers


def _expectation(r: dict, metric: str, exp: dict) -> str:
    measured = format_metric(metric, r["metrics"].get(metric))
    sp = (r.get("spread") or {}).get(metric)
    if sp:
        measured += (
            f" (median of {sp['n']} samples, {format_metric(metric, sp['min'])} to "
            f"{format_metric(metric, sp['max'])}, cv {sp['cv']:.1%})"
        )
    head = f"{r['workload']} {metric} {exp['status']}: measured {measured}"
    if exp.get("min") is None:
        return f"{head}; {exp['basis']}"
    return f"{head}, expected at least {format_metric(metric, exp['min'])} because {exp['basis']}"


def _spread(r: dict, metric: str) -> str:
    """The samples' coefficient of variation next to a figure measured in repeated samples."""
    sp = (r.get("spread") or {}).get(metric)
    return f" cv {sp['cv']:.1%}" if sp and sp.get("cv") is not None else ""


def _detail(r: dict) -> str:
    """Why a load has no figures: its error (a skip's reason is its error, e.g. needs CUDA), else a
    skip's first note."""
    if r.get("error"):
        return r["error"]["message"]
    if r["status"] == "skipped" and r["notes"]:
        return r["notes"][0]
    return "skipped" if r["status"] == "skipped" else "measured (no expectation)"


def _verdict_reasons(doc: dict, notes: _Notes) -> str:
    """After a verdict other than pass: each load that is not a pass, its status and its first reason."""
    if doc["verdict"] == "pass":
        return ""
    loads = [
        f"{r['workload']} {r['status']}"
        + (f" [{notes.first_of[r['workload']]}]" if r["workload"] in notes.first_of else "")
        for r in doc["results"]
        if r["status"] != "pass"
    ]
    return f" ({', '.join(loads)})" if loads else ""


# The table's layouts, tried in turn until one fits the width: boxed, then without the `expected ≥`
# column (each expectation is in its note), then without vertical rules. The load, ratio and status
# columns never wrap or shrink; the others wrap between words, never inside one. When none fits (a very
# narrow terminal), each figure gets its own lines instead.
LAYOUTS = ((True, True), (True, False), (False, True), (False, False))
FIXED = ("load", "ratio", "status")


def _print_fitted(console, title: str, loads: list) -> None:
    rows = [row for _r, load_rows in loads for row in load_rows]
    for boxed, with_expected in LAYOUTS:
        keep = [i for i, (col, _) in enumerate(TABLE_COLUMNS) if with_expected or col != "expected ≥"]
        widths = _widths(rows, keep, console.width - _overhead(console, boxed, len(keep)))
        if widths is not None:
            console.print(_table(title, loads, boxed, keep, widths))
            return
    _print_stacked(console, title, loads)


def _widths(rows: list, keep: list[int], available: int) -> list[int] | None:
    """Each kept column's width within `available` cells: the fixed columns whole, the others at least
    their longest word, and as wide as their cells where the width allows; None when it does not fit."""
    from rich.cells import cell_len

    natural, minimum = [], []
    for i in keep:
        col = TABLE_COLUMNS[i][0]
        cells = [col, *(row[i] for row in rows)]
        natural.append(max(cell_len(c) for c in cells))
        words = [w for c in cells for w in c.split()] or [""]
        minimum.append(natural[-1] if col in FIXED else max(cell_len(w) for w in words))
    if sum(minimum) > available:
        return None
    widths, slack = list(minimum), available - sum(minimum)
    for j in sorted(range(len(keep)), key=lambda j: natural[j] - minimum[j]):  # the smallest needs first
        give = min(natural[j] - widths[j], slack)
        widths[j] += give
        slack -= give
    return widths


def _overhead(console, boxed: bool, columns: int) -> int:
    """The cells a layout's rules and padding take: a probe table of one-cell columns, measured."""
    probe = _table("", [(None, [("x",) * columns])], boxed, list(range(columns)), [1] * columns)
    lines = console.render_lines(probe, console.options.update_width(10_000), pad=False)
    return max(sum(len(seg.text) for seg in line) for line in lines) - columns


def _table(title: str, loads: list, boxed: bool, keep: list[int], widths: list[int]):
    from rich import box
    from rich.table import Table

    table = Table(
        title=title or None,
        title_justify="left",
        padding=(0, 1),
        box=box.HEAVY_HEAD if boxed else box.SIMPLE_HEAD,
        pad_edge=boxed,
        show_edge=boxed,
    )
    for i, width in zip(keep, widths, strict=True):
        col, just = TABLE_COLUMNS[i] if title else ("x", "left")
        table.add_column(col, justify=just, width=width, no_wrap=col in FIXED, overflow="fold")
    for _r, rows in loads:
        for row in rows:
            cells = [Text(row[i]) for i in keep]
            cells[-1].stylize(style_of(row[-1]))
            table.add_row(*cells)
        table.add_section()
    return table


def _print_stacked(console, title: str, loads: list) -> None:
    """The table for a terminal too narrow for it: per load its name, then per figure its status and
    metric on one line and the figures on the next."""
    console.print(Text(title))
    for _r, rows in loads:
        for i, (load, metric, measured, expected, ratio, status) in enumerate(rows):
            if i == 0:
                console.print(Text(load, style="bold"))
            figures = [
                measured,
                f"expected ≥ {expected}" if expected else "",
                f"ratio {ratio}" if ratio else "",
            ]
            figures = ", ".join(f for f in figures if f and f != "ratio -")
            if not status:
                console.print(Text(f"  {metric}: {figures}"))
                continue
            console.print(Text.assemble("  ", (status, style_of(status)), f"  {metric}" if metric else ""))
            console.print(Text(f"    {figures}"))


def publish(doc: dict, saved_path, json_target: str | None, out, err, *, unsaved: str | None = None) -> bool:
    """The finished run: JSON on stdout with the table on stderr (`--json -`), or the table on stdout and
    the JSON written to `json_target`; then where it was saved, unless `unsaved` (the result file lacks
    the finished run: a full disk), which the caller reports. The table is printed whatever the disk does;
    False when the `--json FILE` copy could not be written (said on stderr)."""
    from rich.text import Text

    if json_target == "-":
        sys.stdout.write(to_json(doc))
        render(doc, err)
        written = True
    else:
        render(doc, out)
        written = _write_copy(doc, json_target, err) if json_target else True
    also = f" and {json_target}" if json_target and json_target != "-" and written else ""
    if unsaved:  # the caller says why, as an error
        if also:
            err.print(Text(f"Saved {json_target}"), soft_wrap=True)
    else:
        err.print(Text(f"Saved {saved_path}{also}"), soft_wrap=True)
    return written


def _write_copy(doc: dict, json_target: str, err) -> bool:
    from rich.text import Text

    try:
        save(doc, json_target)
    except OSError as exc:
        err.print(
            Text(f"toolkit: error: --json {json_target} not written: {exc.strerror or exc}"), soft_wrap=True
        )
        return False
    return True


def render_comparison(comparison: dict, console, moved_only: bool = False) -> None:
    """`--compare`: every figure the two results share, before and after, marked by the threshold."""
    from rich.table import Table

    threshold = comparison["threshold_ratio"]
    title = (
        f"compared with {comparison['baseline_host']} · {comparison['baseline_profile']} · "
        f"{comparison['baseline_started_at']} (threshold {threshold:.0%})"
    )
    table = Table(title=title, title_justify="left", padding=(0, 1), collapse_padding=True)
    for col, just in (
        ("load", "left"),
        ("metric", "left"),
        ("before", "right"),
        ("now", "right"),
        ("change", "right"),
        ("", "left"),
    ):
        # the load and the move never wrap; a metric's label and its figures wrap between words
        table.add_column(col, justify=just, no_wrap=col in ("load", "change", ""), overflow="fold")
    for c in comparison["changes"]:
        if moved_only and c["verdict"] == "unchanged":
            continue
        style = style_of(c["verdict"])
        table.add_row(
            c["workload"],
            label(c["metric"]),
            format_metric(c["metric"], c["before"], unit=False),
            format_metric(c["metric"], c["after"], unit=False),
            f"{c['change_ratio']:+.1%}",
            f"[{style}]{c['verdict']}[/]",
        )
    console.print(table)
    console.print(
        f"{comparison['regressions']} regression(s), {comparison['improvements']} improvement(s) beyond "
        f"{threshold:.0%} of {len(comparison['changes'])} figure(s)",
        highlight=False,
    )
