"""`toolkit report`: one self-contained HTML file from the stored bench results and health reports
(exit 0 written, 2 nothing to report or the file cannot be written)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--results-dir",
        metavar="DIR",
        action="append",
        help="folder of stored results (repeatable; default: $TOOLKIT_RESULTS_DIR or ./results)",
    )
    p.add_argument(
        "--health-dir",
        metavar="DIR",
        action="append",
        default=[],
        help="also read stored health reports from DIR (e.g. /var/lib/toolkit/health on a node)",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="HTML file to write (default: report.html in the results folder)",
    )
    p.add_argument(
        "--host",
        dest="hosts",
        action="append",
        default=[],
        metavar="NAME",
        help="only this node (repeatable)",
    )
    p.add_argument("--since-days", type=float, metavar="DAYS", help="only results of the last DAYS days")
    p.add_argument(
        "--threshold",
        metavar="FRACTION",
        help="a move larger than this since a node's previous run is marked (default 5%%)",
    )


def run(args: argparse.Namespace) -> int:
    import sys
    from datetime import UTC, datetime, timedelta
    from pathlib import Path

    from toolkit import history
    from toolkit.atomic import write_text_atomic
    from toolkit.errors import MissingDependency, UsageError
    from toolkit.glossary import utc_stamp

    threshold = history.parse_threshold(args.threshold)
    folders = [history.results_dir(d) for d in (args.results_dir or [None])]
    sources = [*folders, *(Path(d) for d in args.health_dir)]
    missing = [str(f) for f in sources if not f.is_dir()]
    if missing:
        raise UsageError(
            f"no such folder: {', '.join(missing)}", hint="give --results-dir DIR (where toolkit bench saves)"
        )
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingDependency(
            "`toolkit report` draws its plots with matplotlib", hint="pip install 'llm-node-toolkit[report]'"
        ) from None
    skipped: list[history.Skipped] = []
    entries = history.scan(*sources, skipped=skipped)
    for s in skipped:
        sys.stderr.write(f"toolkit report: skipped {s.path}: {s.reason}\n")
    if args.hosts:
        entries = [e for e in entries if e.host in args.hosts]
    if args.since_days is not None:
        cutoff = utc_stamp(datetime.now(UTC) - timedelta(days=args.since_days))
        entries = [e for e in entries if e.time >= cutoff]  # both UTC, written as glossary.utc_stamp
    if not entries:
        raise UsageError(
            f"no stored results in {', '.join(map(str, sources))}"
            + (f" for {', '.join(args.hosts)}" if args.hosts else ""),
            hint="run `toolkit bench` or `toolkit health -i INVENTORY` first, or give --results-dir",
        )
    from toolkit.report.html import build

    text, summary = build(entries, threshold, [str(s) for s in sources], skipped)
    output = Path(args.output) if args.output else folders[0] / "report.html"
    write_text_atomic(output, text)
    sys.stderr.write(
        f"Wrote {output}: {len(summary['nodes'])} node(s), {summary['bench_runs']} bench run(s), "
        f"{summary['health_reports']} health report(s)"
        + (f", {len(skipped)} file(s) skipped" if skipped else "")
        + "\n"
    )
    return 0
