"""`toolkit health -i INVENTORY`: each node runs its own scheduled settings (BMC passwords never leave it)
and the fleet keeps the Nagios codes: the worst host by severity (critical > warning > unknown > ok); an
unreachable host, a timeout or a node without the toolkit is UNKNOWN.
"""

from __future__ import annotations

from toolkit.errors import EXIT_INTERRUPTED, EXIT_UNKNOWN, UsageError
from toolkit.fleet import result as fleet_result
from toolkit.fleet import runner, transport
from toolkit.fleet.jobs import (
    Job,
    base_fields,
    check_common,
    check_folder,
    no_toolkit,
    not_started,
    refuse,
    run_fleet,
    targets_of,
)
from toolkit.fleet.targets import Target
from toolkit.glossary import health_label

HEALTH_TIMEOUT = 120.0


def health_argv(args) -> list[str]:
    argv = ["health", "--json"]
    for skip in args.skip:
        argv += ["--skip", skip]
    for dest, flag in (
        ("expect_gpus", "--expect-gpus"),
        ("bmc_timeout", "--bmc-timeout"),
        ("bmc_tool", "--bmc-tool"),
        ("qdrant_url", "--qdrant-url"),
        ("config", "--config"),
    ):
        value = getattr(args, dest, None)
        if value is not None:
            argv += [flag, str(value)]
    return argv


def _health_host(run: runner.HostRun) -> fleet_result.HostResult:
    out = run.outcome
    doc = fleet_result.parse_doc(out.stdout) if out else None
    base = base_fields(run, doc if doc and "checks" in doc else None)
    if out is None:
        return not_started(base)
    if out.state != "finished":
        code = EXIT_INTERRUPTED if out.state == "interrupted" else EXIT_UNKNOWN
        return fleet_result.HostResult(state=out.state, exit_code=code, message=out.message, **base)
    if out.exit_code == transport.EXIT_NO_TOOLKIT and transport.MISSING_PREFIX in out.stderr:
        return fleet_result.HostResult(
            state="unknown",
            exit_code=EXIT_UNKNOWN,
            message=no_toolkit(run.target),
            **base,
        )
    if base["doc"] is None or health_label(out.exit_code) is None:
        return fleet_result.HostResult(
            state="unknown",
            exit_code=EXIT_UNKNOWN,
            message=fleet_result.error_line(out.stderr) or f"exit {out.exit_code}, no report",
            **base,
        )
    bad = [c["name"] for c in base["doc"]["checks"] if c.get("status") != "ok"]
    message = (
        ("not ok: " + ", ".join(bad[:6]) + (f" (+{len(bad) - 6})" if len(bad) > 6 else "")) if bad else ""
    )
    return fleet_result.HostResult(
        state=health_label(out.exit_code), exit_code=out.exit_code, message=message, **base
    )


def _health_exit(codes: list[int]) -> int:
    from toolkit.health.model import Status, worst

    return int(worst(Status(c) for c in codes if health_label(c) is not None))


def run_health(args) -> int:
    from toolkit import history

    check_common(args)
    refuse(
        args,
        {
            "bmc": "each node reads the BMC its settings name (the health_report role writes them)",
            "bmc_password_file": "each node reads the BMC its settings name",
            "prom": "each node's timer writes its own textfile",
            "history": "run `toolkit report` on the gathered results",
            "save_dir": "gathered reports are stored in --results-dir",
        },
    )
    targets = targets_of(args)
    folder = history.results_dir(getattr(args, "results_dir", None))
    check_folder(folder)
    argv = health_argv(args)

    def script(t: Target) -> str:
        if args.config:
            return transport.wrapper(t.toolkit, argv)
        # the role's settings file, where there is one
        cfg = transport.shlex.quote(t.health_config)
        return transport.wrapper(t.toolkit, argv, prelude=f"[ -f {cfg} ] && set -- --config {cfg}\n")

    def store(host: fleet_result.HostResult) -> None:
        doc = host.doc
        if not doc or not doc.get("collected_at"):
            return
        doc["inventory_host"] = host.name
        stamp = str(doc["collected_at"]).replace("-", "").replace(":", "")
        # the time is the node's word: kept to one plain file name inside the folder
        name = f"health-{history.name_part(stamp)}-{history.name_part(host.name)}.json"
        try:
            path = history.contained(folder, name)
        except UsageError as err:
            host.message += f"; not stored: {err.message}"
            return
        host.saved = str(fleet_result.save_json(path, doc))

    timeout = args.host_timeout or HEALTH_TIMEOUT
    job = Job("health", script, _health_host, store, timeout, folder, exit_code=_health_exit)
    fleet = run_fleet(args, targets, job)
    from toolkit.console import err, out

    fleet_result.render(fleet, err if args.json else out, [])
    return fleet["exit_code"]
