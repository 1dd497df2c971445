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
    """The finished run: a table of the checked and shown figures, the basis of every expectation,
    the loads' notes and the verdict."""
    from rich.table import Table

    gpu_class = gpu_class_of(doc)
    title = (
        f"toolkit bench · profile {gpu_class.get('name')} · {doc['host']} · "
        f"scale {doc['configuration']['scale']}"
    )
    if doc.get("distributed"):
        title += f" · {doc['distributed']['world_size']} ranks ({doc['distributed']['backend']})"
    table = Table(title=title, title_justify="left", padding=(0, 1), collapse_padding=True)
    for col, just in TABLE_COLUMNS:
        table.add_column(col, justify=just, no_wrap=True, min_width=len(col))
    for r in doc["results"]:
        for row in _result_rows(r):
            table.add_row(*row)
        table.add_section()
    console.print(table)
    for r in doc["results"]:
        _explain(r, console)
    if gpu_class.get("mismatch"):
        console.print(f"[yellow]Profile mismatch, run anyway: {gpu_class['mismatch']}[/]")
    v = doc["verdict"]
    console.print(f"Verdict: [{style_of(v)}]{v}[/]")


def _result_rows(r: dict) -> list[tuple[str, ...]]:
    """One load's rows of the table: its checked figures, the figures shown without a check, and a
    line for an error, a skip, or a load with neither."""
    from rich.markup import escape

    status = f"[{style_of(r['status'])}]{r['status']}[/]"
    rows = [
        (
            label(metric),
            format_metric(metric, r["metrics"].get(metric), unit=False),
            format_metric(metric, exp.get("min"), unit=False),
            f"{exp['ratio']:.2f}" if "ratio" in exp else "-",
            f"[{style_of(exp['status'])}]{exp['status']}[/]",
        )
        for metric, exp in r["expected"].items()
    ]
    for metric in SHOWN:
        if metric in r["metrics"] and metric not in r["expected"]:
            shown = format_metric(metric, r["metrics"][metric])
            rows.append((label(metric), shown, "", "", "" if rows else status))
    if not rows or r.get("error") or r["status"] == "skipped":
        # messages quote library errors, which may hold [brackets] rich would read as markup
        rows.append(("", escape(_detail(r)), "", "", status))
    return [(r["workload"] if i == 0 else "", *row) for i, row in enumerate(rows)]


def _detail(r: dict) -> str:
    """The cell that says why a load has no figures: its error (a skip's reason is its error, e.g. needs
    CUDA), else a skip's first note."""
    if r.get("error"):
        return r["error"]["message"]
    if r["status"] == "skipped" and r["notes"]:
        return r["notes"][0]
    return "measured (no expectation)"


def _explain(r: dict, console) -> None:
    """Below the table: what each check expected and why, and the load's notes."""
    for metric, exp in r["expected"].items():
        measured = format_metric(metric, r["metrics"].get(metric))
        if exp.get("min") is None:
            console.print(f"  {r['workload']} {metric}: measured {measured}; {exp['basis']}")
        else:
            console.print(
                f"  {r['workload']} {metric}: measured {measured}, expected at least "
                f"{format_metric(metric, exp['min'])} because {exp['basis']}"
            )
    from rich.markup import escape

    for note in r["notes"]:
        if not note.startswith("peak_memory_bytes"):  # notes quote paths and library text: not markup
            console.print(f"  [dim]{r['workload']}: {escape(note)}[/]")


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
        table.add_column(col, justify=just, no_wrap=True)
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
