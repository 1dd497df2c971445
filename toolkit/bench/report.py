"""The benchmark report: one JSON document per run (REFERENCE.md) and its table."""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

from toolkit.atomic import write_text_atomic
from toolkit.units import gib, seconds, si

SCHEMA_VERSION = 1


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def result_filename(started_at: str, host: str, profile: str, pid: int | str | None = None) -> str:
    """bench-<UTC time>-<host>-<profile>-<pid>.json: two runs in the same second never collide (a result
    gathered by a fleet run carries the inventory name of its host in place of the pid)."""
    stamp = started_at.replace("-", "").replace(":", "")
    safe_host = re.sub(r"[^A-Za-z0-9.-]+", "_", host) or "host"
    return f"bench-{stamp}-{safe_host}-{profile}-{pid if pid is not None else os.getpid()}.json"


def to_json(doc: dict) -> str:
    return json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n"


def save(doc: dict, path: str | Path) -> Path:
    return write_text_atomic(path, to_json(doc))


def format_metric(name: str, value, unit: bool = True) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        if name.endswith("_per_rank"):  # --gpus N: one value per rank
            return " / ".join(format_metric(name.removesuffix("_per_rank"), v, unit=False) for v in value)
        return f"{len(value)} values"
    if name.endswith("_ratio"):
        return f"{value:.1%}"
    if "flops_per_second" in name:
        return si(value, "FLOP/s")
    if "bytes_per_second" in name:
        return si(value, "B/s")
    if "tokens_per_second" in name:
        return f"{value:,.0f} tok/s" if unit else f"{value:,.0f}"
    if "recall_at_" in name:
        return f"{value:.3f}"
    if name.endswith("_speedup_vs_exact"):
        return f"{value:.1f}x"
    if name.endswith(("queries_per_second", "points_per_second")):
        return f"{value:,.0f}/s" if unit else f"{value:,.0f}"
    if "seconds" in name:
        return seconds(value)
    if name.endswith("_bytes"):
        return gib(value)
    if name.endswith("_celsius"):
        return f"{value:g} °C"
    if name.endswith("_watts"):
        return f"{value:.0f} W"
    if name.endswith("_hertz"):
        return si(value, "Hz")
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


LABELS = {
    "tokens_per_second": "tokens/s",
    "flops_per_second": "FLOP/s",
    "bandwidth_bytes_per_second": "bandwidth",
    "step_time_seconds_p50": "step p50",
    "step_time_seconds_p90": "step p90",
    "mfu_ratio": "MFU",
    "peak_memory_bytes": "peak memory",
    "bus_bandwidth_bytes_per_second": "busbw",
    "algorithm_bandwidth_bytes_per_second": "algbw",
    "tokens_per_second_per_rank": "tokens/s per rank",
    "step_time_seconds_p50_per_rank": "step p50 per rank",
    "peak_memory_bytes_per_rank": "peak memory per rank",
    "recall_at_10": "recall@10",
    "filtered_recall_at_10": "filtered recall@10",
    "indexed_vectors_ratio": "indexed vectors",
    "queries_per_second": "HNSW query/s",
    "batch_queries_per_second": "HNSW query/s batched",
    "filtered_queries_per_second": "filtered query/s",
    "exact_queries_per_second": "exact query/s",
    "hnsw_speedup_vs_exact": "HNSW / exact",
    "upsert_points_per_second": "upsert points/s",
    "index_build_seconds": "index build",
    "latency_seconds_p50": "latency p50",
    "latency_seconds_p99": "latency p99",
}


def label(metric: str) -> str:
    """Short table label of a metric key: 'prefill_tokens_per_second_batch8' -> 'prefill b8'."""
    if metric in LABELS:
        return LABELS[metric]
    m = re.fullmatch(r"(prefill|decode)_tokens_per_second_batch(\d+)", metric)
    if m:
        return f"{m[1]} tok/s b{m[2]}"
    m = re.fullmatch(r"ttft_seconds_(p\d+)_batch(\d+)", metric)
    if m:
        return f"TTFT {m[1]} b{m[2]}"
    return metric


STATUS_STYLE = {
    "pass": "green",
    "warn": "yellow",
    "fail": "red",
    "error": "red bold",
    "skipped": "dim",
    "interrupted": "yellow bold",
}
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


def render(doc: dict, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    profile = doc["profile"]
    title = (
        f"toolkit bench · profile {profile['name']} · {doc['host']} · scale {doc['configuration']['scale']}"
    )
    if doc.get("distributed"):
        title += f" · {doc['distributed']['world_size']} ranks ({doc['distributed']['backend']})"
    table = Table(title=title, title_justify="left", padding=(0, 1), collapse_padding=True)
    for col, just in (
        ("load", "left"),
        ("metric", "left"),
        ("measured", "right"),
        ("expected ≥", "right"),
        ("ratio", "right"),
        ("status", "left"),
    ):
        table.add_column(col, justify=just, no_wrap=True, min_width=len(col))
    for r in doc["results"]:
        first = True
        style = STATUS_STYLE.get(r["status"], "")
        for metric, exp in r["expected"].items():
            table.add_row(
                r["workload"] if first else "",
                label(metric),
                format_metric(metric, r["metrics"].get(metric), unit=False),
                format_metric(metric, exp.get("min"), unit=False),
                f"{exp['ratio']:.2f}" if "ratio" in exp else "-",
                f"[{STATUS_STYLE.get(exp['status'], '')}]{exp['status']}[/]",
            )
            first = False
        for metric in SHOWN:
            if metric in r["metrics"] and metric not in r["expected"]:
                table.add_row(
                    r["workload"] if first else "",
                    label(metric),
                    format_metric(metric, r["metrics"][metric]),
                    "",
                    "",
                    f"[{style}]{r['status']}[/]" if first else "",
                )
                first = False
        if first or r.get("error") or r["status"] == "skipped":
            detail = r["error"]["message"] if r.get("error") else "measured (no expectation)"
            if r["status"] == "skipped" and r["notes"]:
                detail = r["notes"][0]
            # messages quote library errors, which may hold [brackets] rich would read as markup
            table.add_row(
                r["workload"] if first else "", "", escape(detail), "", "", f"[{style}]{r['status']}[/]"
            )
        table.add_section()
    console.print(table)
    for r in doc["results"]:
        for metric, exp in r["expected"].items():
            measured = format_metric(metric, r["metrics"].get(metric))
            if exp.get("min") is None:
                console.print(f"  {r['workload']} {metric}: measured {measured}; {exp['basis']}")
            else:
                console.print(
                    f"  {r['workload']} {metric}: measured {measured}, expected at least "
                    f"{format_metric(metric, exp['min'])} because {exp['basis']}"
                )
        for note in r["notes"]:
            if not note.startswith("peak_memory_bytes"):
                console.print(f"  [dim]{r['workload']}: {note}[/]")
    if profile.get("mismatch"):
        console.print(f"[yellow]Profile mismatch, run anyway: {profile['mismatch']}[/]")
    v = doc["verdict"]
    console.print(f"Verdict: [{STATUS_STYLE.get(v, '')}]{v}[/]")


def publish(doc: dict, saved_path, json_target: str | None, out, err) -> None:
    """The finished run: JSON on stdout with the table on stderr (`--json -`), or the table on stdout and
    the JSON written to `json_target`; then where it was saved."""
    if json_target == "-":
        sys.stdout.write(to_json(doc))
        render(doc, err)
    else:
        if json_target:
            save(doc, json_target)
        render(doc, out)
    also = f" and {json_target}" if json_target and json_target != "-" else ""
    err.print(f"Saved {saved_path}{also}", highlight=False)


CHANGE_STYLE = {"regression": "red", "improvement": "green", "unchanged": "dim"}


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
        style = CHANGE_STYLE[c["verdict"]]
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
