"""`toolkit health`: GPUs, BMC, Docker, system and Qdrant checks; exit codes in the Nagios plugin convention
(0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN — usage errors included, as monitoring systems expect)."""

from __future__ import annotations

import argparse

from toolkit.errors import EXIT_UNKNOWN, HealthError

COLLECTORS = ("gpu", "bmc", "docker", "system", "qdrant", "serving")


def _keep_days(text: str) -> float:  # a number of days, at least 0 (store.keep_days checks it)
    from toolkit.health.store import keep_days

    return keep_days(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults(_usage_exit=EXIT_UNKNOWN)
    p.add_argument(
        "--bmc",
        metavar="URL",
        help="ipmi://USER@HOST[:PORT] or redfish://USER@HOST[:PORT]; the "
        "password comes from TOOLKIT_BMC_PASSWORD or --bmc-password-file, never the command line",
    )
    p.add_argument("--bmc-password-file", metavar="FILE", help="file whose first line is the BMC password")
    p.add_argument(
        "--bmc-insecure",
        action="store_true",
        help="accept a self-signed Redfish certificate (the report says so)",
    )
    p.add_argument("--bmc-timeout", type=float, metavar="S", help="bound on the BMC read (default 20 s)")
    p.add_argument(
        "--bmc-tool",
        choices=("auto", "pyghmi", "ipmitool"),
        default=None,
        help="IPMI client (default: pyghmi, ipmitool when pyghmi is missing)",
    )
    p.add_argument("--expect-gpus", type=int, metavar="N", help="CRITICAL when fewer GPUs are visible")
    p.add_argument(
        "--qdrant-url",
        metavar="URL",
        help="check the Qdrant at this REST URL (http://HOST:6333); the API key comes from "
        "TOOLKIT_QDRANT_API_KEY or qdrant.api_key in the settings file, never the command line",
    )
    p.add_argument(
        "--serving-url",
        metavar="URL",
        help="check the model server at this URL (llama-server, Ollama or OpenAI-compatible: "
        "http://127.0.0.1:8080); its API key comes from TOOLKIT_SERVING_API_KEY or serving.api_key",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="settings file (the health_report role writes /etc/toolkit/health.yml)",
    )
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    shape.add_argument(
        "--nagios",
        action="store_true",
        help="print Nagios/Icinga plugin output instead of the table: 'STATUS - summary | perfdata', "
        "then one line per check (the exit code is the status)",
    )
    p.add_argument("--all", action="store_true", help="table: also show the per-GPU detail series")
    p.add_argument("--prom", metavar="FILE", help="write a node_exporter textfile (atomically)")
    p.add_argument("--save-dir", metavar="DIR", help="store this report as JSON in DIR (locked, pruned)")
    p.add_argument(
        "--keep-days", type=_keep_days, metavar="DAYS", help="days of stored reports kept (default 14)"
    )
    p.add_argument("--skip", action="append", choices=COLLECTORS, default=[], help="leave a collector out")
    p.add_argument(
        "--history",
        action="store_true",
        help="summarise the stored reports (worst status per check) instead of collecting",
    )
    p.add_argument("--since-days", type=float, metavar="DAYS", help="with --history: only recent reports")
    p.add_argument(
        "--results-dir",
        metavar="DIR",
        help="with -i: folder for the gathered reports (default: $TOOLKIT_RESULTS_DIR or ./results)",
    )
    from toolkit.fleet.options import add_arguments as add_fleet_arguments

    add_fleet_arguments(p, default_timeout="120 s")


def run(args: argparse.Namespace) -> int:
    import contextlib
    import json
    import sys
    import time
    from pathlib import Path

    from toolkit.atomic import write_text_atomic
    from toolkit.health import config, prom, secrets, store
    from toolkit.health.run import Options, collect

    if args.history and args.nagios:
        raise HealthError(
            "--nagios reports a collection, not the stored history", hint="use --history --json"
        )
    if args.inventory and args.nagios:
        raise HealthError(
            "--nagios reports one node",
            hint="run it on each node (the health_report role does), or use --json with -i",
        )
    if args.inventory:
        from toolkit.errors import ToolkitError
        from toolkit.fleet.health import run_health

        try:
            return run_health(args)
        except ToolkitError as err:  # bad inventory, options: UNKNOWN, as every health usage error
            err.exit_code = EXIT_UNKNOWN
            raise
    if args.results_dir:
        raise HealthError(
            "--results-dir is for fleet runs (-i INVENTORY)", hint="use --save-dir for this node's reports"
        )
    cfg = config.load(args.config)
    save_dir = args.save_dir or cfg.get("report_dir")
    if args.history:
        summary = store.summarise(Path(save_dir or store.DEFAULT_DIR), args.since_days)
        if args.json:
            sys.stdout.write(secrets.redact(json.dumps(summary, indent=1, allow_nan=False)) + "\n")
        else:
            from toolkit.console import out
            from toolkit.health.table import render_history

            render_history(out, summary)
        return 0 if summary["reports"] else EXIT_UNKNOWN
    opts = Options(
        bmc_url=args.bmc,
        bmc_password_file=args.bmc_password_file,
        bmc_insecure=args.bmc_insecure,
        bmc_timeout=args.bmc_timeout,
        bmc_tool=args.bmc_tool,
        expect_gpus=args.expect_gpus,
        qdrant_url=args.qdrant_url,
        serving_url=args.serving_url,
        skip=set(args.skip),
        config=cfg,
    )
    lock = store.locked(Path(save_dir)) if save_dir else contextlib.nullcontext()
    with lock:
        report = collect(opts)
        doc = secrets.redact_tree(report.to_json())
        if save_dir:
            keep = args.keep_days if args.keep_days is not None else float(cfg.get("keep_days", 14))
            store.save(Path(save_dir), doc, keep)
        prom_file = args.prom or cfg.get("prom_file")
        if prom_file:
            write_text_atomic(prom_file, secrets.redact(prom.render(report, time.time())))
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    elif args.nagios:
        from toolkit.health import nagios

        sys.stdout.write(nagios.render(report))
    else:
        from toolkit.console import out
        from toolkit.health.table import render

        render(out, report, show_all=args.all)
    return int(report.status)
