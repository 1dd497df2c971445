"""What a fleet run of either command shares: the inventory's hosts, the options the controller refuses,
a host's common fields, and the run itself (a bounded pool, the live table, the gathered fleet document).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toolkit.atomic import check_writable
from toolkit.errors import EXIT_INTERRUPTED, UsageError
from toolkit.fleet import result as fleet_result
from toolkit.fleet import runner
from toolkit.fleet.targets import Target

EXIT_HOST_UNREACHABLE = 3


def check_common(args) -> None:
    if args.forks < 1:
        raise UsageError("--forks must be at least 1")
    for name in ("host_timeout", "connect_timeout"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive")
    try:
        import fabric  # noqa: F401
    except ImportError:
        from toolkit.errors import MissingDependency

        raise MissingDependency(
            "fleet runs need fabric (SSH)", hint="pip install 'llm-node-toolkit[fleet]'"
        ) from None


def targets_of(args) -> list[Target]:
    from toolkit.fleet.targets import select

    # an unset shell variable (`--limit "$HOSTS"`) must not become every host: only an absent --limit is
    # `all`; Inventory.resolve refuses an empty pattern
    return select(args.inventory, "all" if args.limit is None else args.limit, args.vault_password_file)


def refuse(args, names: dict[str, str]) -> None:
    for dest, why in names.items():
        if getattr(args, dest, None):
            raise UsageError(f"--{dest.replace('_', '-')} does not go with -i/--inventory: {why}")


def base_fields(run: runner.HostRun, doc: dict | None) -> dict:
    return {
        "name": run.target.name,
        "where": run.target.where,
        "duration_seconds": run.elapsed,
        "started_at": run.started_at,
        "toolkit_version": fleet_result.version_of(run),
        "doc": doc,
    }


def not_started(base: dict) -> fleet_result.HostResult:
    return fleet_result.HostResult(
        state="not_started", exit_code=EXIT_INTERRUPTED, message="not started (interrupted)", **base
    )


def no_toolkit(target: Target) -> str:
    return f"no toolkit at {target.toolkit} (install it with the health_report role, or set toolkit_path)"


def check_folder(folder: Path) -> None:
    check_writable(folder, "choose a writable --results-dir")


@dataclass(frozen=True)
class Job:
    """What a fleet command runs on each host and how it reads, keeps and sums up what came back."""

    command: str  # bench | health
    script: Callable[[Target], str]  # the sh script a host runs
    interpret: Callable[[runner.HostRun], fleet_result.HostResult]
    store: Callable[[fleet_result.HostResult], None]  # saves a host's document where it belongs
    timeout: float  # per host
    folder: Path  # where the fleet document goes
    exit_code: Callable[[list[int]], int] = max  # the fleet's exit code from the hosts' codes


def run_fleet(args, targets: list[Target], job: Job) -> dict:
    from toolkit.console import err
    from toolkit.glossary import utc_now

    command, interpret, timeout = job.command, job.interpret, job.timeout
    results: dict[str, fleet_result.HostResult] = {}

    def read(run: runner.HostRun) -> fleet_result.HostResult:
        host = interpret(run)
        fleet_result.classify(host, run.outcome)  # by the node's reference, not its stderr's text
        return host

    def on_done(run: runner.HostRun) -> None:
        host = read(run)
        if host.doc is None and run.outcome and run.outcome.stderr.strip():
            from toolkit.health.secrets import redact

            # no document came back: what the node printed last says why
            host.extra["stderr_tail"] = redact("\n".join(run.outcome.stderr.strip().splitlines()[-15:]))
        job.store(host)
        results[run.target.name] = host

    def label(run: runner.HostRun) -> str:
        if run.state != "done":
            return run.state
        host = results.get(run.target.name)
        return f"{host.state} (exit {host.exit_code})" if host else "done"

    started = utc_now()
    err.print(
        f"toolkit {command}: {len(targets)} host(s) from {args.inventory}, {args.forks} at a time, "
        f"host timeout {timeout:g} s",
        highlight=False,
    )
    options = runner.RunOptions(
        forks=args.forks,
        timeout=timeout,
        connect_timeout=args.connect_timeout,
        strict_host_keys=args.strict_host_keys,
    )
    runs, interrupted = runner.run_all(
        targets, job.script, options, console=err, title=f"toolkit {command}", label=label, on_done=on_done
    )
    hosts = [results.get(r.target.name) or read(r) for r in runs]
    codes = [h.exit_code for h in hosts]
    code = (
        EXIT_INTERRUPTED if interrupted else job.exit_code([c for c in codes if c != EXIT_INTERRUPTED] or [0])
    )
    recorded = {
        "inventory": str(args.inventory),
        "limit": "all" if args.limit is None else args.limit,
        "forks": args.forks,
        "host_timeout_seconds": timeout,
    }
    doc = fleet_result.fleet_doc(command, started, utc_now(), recorded, hosts, code, interrupted)
    saved = fleet_result.save(doc, job.folder)
    json_target = getattr(args, "json", None)
    if json_target is True or json_target == "-":
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
    elif json_target:
        fleet_result.save_json(json_target, doc)
    err.print(f"Saved {saved}", highlight=False)
    return doc
