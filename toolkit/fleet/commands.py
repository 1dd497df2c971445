"""`toolkit bench -i INVENTORY` and `toolkit health -i INVENTORY`: the node command each host runs, what
its end means, and the fleet's exit code.

Bench exit codes per host and for the fleet (the worst host's): 0 pass, 1 a check failed, 2 usage or
environment error on the node (no toolkit there, missing ML stack), 3 unreachable or timed out, 130
interrupted. Health keeps the Nagios codes: the worst host by severity (critical > warning > unknown >
ok); an unreachable host, a timeout or a node without the toolkit is UNKNOWN.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toolkit.atomic import check_writable
from toolkit.bench.request import NODE
from toolkit.errors import EXIT_INTERRUPTED, EXIT_UNKNOWN, EXIT_USAGE, UsageError
from toolkit.fleet import result as fleet_result
from toolkit.fleet import runner, transport
from toolkit.fleet.targets import Target
from toolkit.glossary import gpu_class_of, health_label, host_state_of_verdict

EXIT_HOST_UNREACHABLE = 3
BENCH_TIMEOUT = 4 * 3600.0
HEALTH_TIMEOUT = 120.0


def _check_common(args) -> None:
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


def _targets(args) -> list[Target]:
    from toolkit.fleet.targets import select

    return select(args.inventory, args.limit or "all", args.vault_password_file)


def _refuse(args, names: dict[str, str]) -> None:
    for dest, why in names.items():
        if getattr(args, dest, None):
            raise UsageError(f"--{dest.replace('_', '-')} does not go with -i/--inventory: {why}")


def _base(run: runner.HostRun, doc: dict | None) -> dict:
    return {
        "name": run.target.name,
        "where": run.target.where,
        "duration_seconds": run.elapsed,
        "started_at": run.started_at,
        "toolkit_version": fleet_result.version_of(run),
        "doc": doc,
    }


def _not_started(base: dict) -> fleet_result.HostResult:
    return fleet_result.HostResult(
        state="not_started", exit_code=EXIT_INTERRUPTED, message="not started (interrupted)", **base
    )


def _no_toolkit(target: Target) -> str:
    return f"no toolkit at {target.toolkit} (install it with the health_report role, or set toolkit_path)"


# -- bench ---------------------------------------------------------------------------------------------


def bench_argv(request, target: Target) -> list[str]:
    """The node's command line: the request's options that travel to a node, the host's own GPU class
    (inventory `gpu_profile`) where the command line names none, and its JSON on stdout."""
    node = request.but(gpu_class=request.gpu_class or target.gpu_profile)
    return ["bench", "--json", "-", "--results-dir", target.results_dir, *node.to_argv(NODE)]


def _bench_preflight(args, targets: list[Target]) -> None:
    """What the controller can check before any host starts: the profiles and names it would pass."""
    from toolkit.catalog import CPU_PROFILE, load_catalog

    _refuse(
        args,
        {
            "plan": "plan on the controller (toolkit bench --plan --gpu A,B)",
            "qdrant_api_key_env": "a controller variable does not reach the nodes",
        },
    )
    catalog = load_catalog()
    for t in targets:
        profile = args.gpu_class or t.gpu_profile
        if profile and profile.lower() != CPU_PROFILE:
            try:
                catalog.get(profile)
            except UsageError as err:
                raise UsageError(f"{t.name}: {err.message}", hint=err.hint) from None
    for recipe in args.recipes:
        if recipe.endswith((".yaml", ".yml")) or "/" in recipe:
            raise UsageError(
                f"--recipe {recipe}: a recipe file on the controller does not reach the nodes",
                hint="use a shipped recipe (toolkit bench --list), or copy the file to each node, run there",
            )
    if args.workloads:
        from toolkit.bench.selection import select_workloads

        select_workloads(args.workloads, measured_peaks=False, distributed=True)  # unknown names: exit 2


def _bench_host(run: runner.HostRun) -> fleet_result.HostResult:
    out = run.outcome
    doc = fleet_result.parse_doc(out.stdout) if out else None
    base = _base(run, doc)
    if out is None:
        return _not_started(base)
    if out.state == "unreachable":
        return fleet_result.HostResult(
            state="unreachable", exit_code=EXIT_HOST_UNREACHABLE, message=out.message, **base
        )
    if out.state in ("timeout", "interrupted"):
        code = EXIT_HOST_UNREACHABLE if out.state == "timeout" else EXIT_INTERRUPTED
        kept = f"; {len(doc['results'])} finished load(s) kept" if doc else ""
        return fleet_result.HostResult(state=out.state, exit_code=code, message=out.message + kept, **base)
    if out.exit_code == transport.EXIT_NO_TOOLKIT and transport.MISSING_PREFIX in out.stderr:
        return fleet_result.HostResult(
            state="error",
            exit_code=EXIT_USAGE,
            message=_no_toolkit(run.target),
            **base,
        )
    code = out.exit_code if out.exit_code not in (None, -1) else EXIT_HOST_UNREACHABLE
    if code in (EXIT_INTERRUPTED, 143):
        return fleet_result.HostResult(
            state="interrupted", exit_code=EXIT_INTERRUPTED, message="interrupted on the node", **base
        )
    if doc is None or code not in (0, 1):
        return fleet_result.HostResult(
            state="error",
            exit_code=code if code in (1, 2) else EXIT_USAGE,
            message=fleet_result.error_line(out.stderr) or f"exit {code}, no result",
            **base,
        )
    verdict = doc.get("verdict", "error")
    return fleet_result.HostResult(
        state=host_state_of_verdict(verdict), exit_code=code, message=f"verdict {verdict}", **base
    )


def _bench_summary(h: dict) -> str:
    doc = h.get("result")
    if not doc:
        return "-"
    counts: dict[str, int] = {}
    for r in doc.get("results", []):
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return " ".join(f"{n} {s}" for s, n in counts.items()) or "no loads"


def run_bench(args) -> int:
    from toolkit import history
    from toolkit.bench import report

    _check_common(args)
    if args.compare and args.compare != "last":
        raise UsageError("with -i/--inventory, --compare takes `last` (each host against its own last run)")
    if args.compare:
        history.parse_threshold(args.threshold)
    targets = _targets(args)
    _bench_preflight(args, targets)
    folder = history.results_dir(args.results_dir)
    _check_folder(folder)
    timeout = args.host_timeout or BENCH_TIMEOUT
    comparisons: dict[str, dict] = {}

    def script(t: Target) -> str:
        return transport.wrapper(t.toolkit, bench_argv(args, t))

    def store(host: fleet_result.HostResult) -> None:
        doc = host.doc
        if not doc or not gpu_class_of(doc) or "started_at" not in doc:
            return
        doc.setdefault("fleet", {})["inventory_host"] = host.name
        path = folder / report.result_filename(
            doc["started_at"],
            doc.get("host", host.name),
            gpu_class_of(doc)["name"],
            fleet_result.safe_name(host.name),
        )
        if args.compare:
            baseline = history.previous(folder, doc, exclude=path)
            if baseline is not None:
                threshold = history.parse_threshold(args.threshold)
                doc["comparison"] = history.comparison_doc(
                    baseline, history.compare(baseline.doc, doc, threshold), threshold
                )
                comparisons[host.name] = doc["comparison"]
        host.saved = str(report.save(doc, path))

    job = _Job("bench", script, _bench_host, store, timeout, folder)
    fleet = _run_fleet(args, targets, job)
    from toolkit.console import err, out

    console = err if args.json == "-" else out
    fleet_result.render(fleet, console, [("loads", _bench_summary)])
    for name, comparison in comparisons.items():
        console.print(f"[bold]{name}[/]", highlight=False)
        report.render_comparison(comparison, console, moved_only=True)
    code = fleet["exit_code"]
    if code == 0 and args.fail_on_regression and any(c["regressions"] for c in comparisons.values()):
        code = 1
    return code


def _check_folder(folder: Path) -> None:
    check_writable(folder, "choose a writable --results-dir")


# -- health --------------------------------------------------------------------------------------------


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
    base = _base(run, doc if doc and "checks" in doc else None)
    if out is None:
        return _not_started(base)
    if out.state != "finished":
        code = EXIT_INTERRUPTED if out.state == "interrupted" else EXIT_UNKNOWN
        return fleet_result.HostResult(state=out.state, exit_code=code, message=out.message, **base)
    if out.exit_code == transport.EXIT_NO_TOOLKIT and transport.MISSING_PREFIX in out.stderr:
        return fleet_result.HostResult(
            state="unknown",
            exit_code=EXIT_UNKNOWN,
            message=_no_toolkit(run.target),
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

    _check_common(args)
    _refuse(
        args,
        {
            "bmc": "each node reads the BMC its settings name (the health_report role writes them)",
            "bmc_password_file": "each node reads the BMC its settings name",
            "prom": "each node's timer writes its own textfile",
            "history": "run `toolkit report` on the gathered results",
            "save_dir": "gathered reports are stored in --results-dir",
        },
    )
    targets = _targets(args)
    folder = history.results_dir(getattr(args, "results_dir", None))
    _check_folder(folder)
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
        stamp = doc["collected_at"].replace("-", "").replace(":", "")
        path = folder / f"health-{stamp}-{fleet_result.safe_name(host.name)}.json"
        host.saved = str(fleet_result.save_json(path, doc))

    timeout = args.host_timeout or HEALTH_TIMEOUT
    job = _Job("health", script, _health_host, store, timeout, folder, exit_code=_health_exit)
    fleet = _run_fleet(args, targets, job)
    from toolkit.console import err, out

    fleet_result.render(fleet, err if args.json else out, [])
    return fleet["exit_code"]


# -- shared --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """What a fleet command runs on each host and how it reads, keeps and sums up what came back."""

    command: str  # bench | health
    script: Callable[[Target], str]  # the sh script a host runs
    interpret: Callable[[runner.HostRun], fleet_result.HostResult]
    store: Callable[[fleet_result.HostResult], None]  # saves a host's document where it belongs
    timeout: float  # per host
    folder: Path  # where the fleet document goes
    exit_code: Callable[[list[int]], int] = max  # the fleet's exit code from the hosts' codes


def _run_fleet(args, targets: list[Target], job: _Job) -> dict:
    from toolkit.console import err
    from toolkit.glossary import utc_now

    command, interpret, timeout = job.command, job.interpret, job.timeout
    results: dict[str, fleet_result.HostResult] = {}

    def on_done(run: runner.HostRun) -> None:
        host = interpret(run)
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
    hosts = [results.get(r.target.name) or interpret(r) for r in runs]
    codes = [h.exit_code for h in hosts]
    code = (
        EXIT_INTERRUPTED if interrupted else job.exit_code([c for c in codes if c != EXIT_INTERRUPTED] or [0])
    )
    recorded = {
        "inventory": str(args.inventory),
        "limit": args.limit or "all",
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
