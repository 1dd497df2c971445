"""`toolkit bench -i INVENTORY`: the node command each host runs (the request's own options, through
`BenchRequest.to_argv(NODE)`), what its end means, and the fleet's exit code.

Exit codes per host and for the fleet (the worst host's): 0 pass, 4 incomplete (a load not judged), 1 a
check failed, 2 usage or environment error on the node (no toolkit there, missing ML stack), 3 unreachable
or timed out, 130 interrupted — in that order of worse, so an incomplete node never hides a failed one.
"""

from __future__ import annotations

from toolkit.bench.request import NODE
from toolkit.errors import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_USAGE, UsageError
from toolkit.fleet import result as fleet_result
from toolkit.fleet import runner, transport
from toolkit.fleet.jobs import (
    EXIT_HOST_UNREACHABLE,
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
from toolkit.glossary import gpu_class_of, host_state_of_verdict

BENCH_TIMEOUT = 4 * 3600.0
# a fleet bench's exit code is its worst host's, in this order of worse (130 is the fleet's own)
WORSE = (0, EXIT_INCOMPLETE, 1, EXIT_USAGE, EXIT_HOST_UNREACHABLE)


def worst_code(codes: list[int]) -> int:
    return max(codes, key=lambda c: WORSE.index(c) if c in WORSE else len(WORSE))


def bench_argv(request, target: Target) -> list[str]:
    """The node's command line: the request's options that travel to a node, the host's own GPU class
    (inventory `gpu_profile`) where the command line names none, and its JSON on stdout."""
    node = request.but(gpu_class=request.gpu_class or target.gpu_profile)
    return ["bench", "--json", "-", "--results-dir", target.results_dir, *node.to_argv(NODE)]


def _bench_preflight(args, targets: list[Target]) -> None:
    """What the controller can check before any host starts: the profiles and names it would pass."""
    from toolkit.catalog import CPU_PROFILE, load_catalog

    refuse(
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
    base = base_fields(run, doc)
    if out is None:
        return not_started(base)
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
            message=no_toolkit(run.target),
            **base,
        )
    code = out.exit_code if out.exit_code not in (None, -1) else EXIT_HOST_UNREACHABLE
    if code in (EXIT_INTERRUPTED, 143):
        return fleet_result.HostResult(
            state="interrupted", exit_code=EXIT_INTERRUPTED, message="interrupted on the node", **base
        )
    if doc is None or code not in (0, 1, EXIT_INCOMPLETE):
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

    check_common(args)
    if args.compare and args.compare != "last":
        raise UsageError("with -i/--inventory, --compare takes `last` (each host against its own last run)")
    if args.compare:
        history.parse_threshold(args.threshold)
    targets = targets_of(args)
    _bench_preflight(args, targets)
    folder = history.results_dir(args.results_dir)
    check_folder(folder)
    timeout = args.host_timeout or BENCH_TIMEOUT
    comparisons: dict[str, dict] = {}

    def script(t: Target) -> str:
        return transport.wrapper(t.toolkit, bench_argv(args, t))

    def store(host: fleet_result.HostResult) -> None:
        doc = host.doc
        if not doc or not gpu_class_of(doc) or "started_at" not in doc:
            return
        if not isinstance(doc.get("fleet"), dict):
            doc["fleet"] = {}
        doc["fleet"]["inventory_host"] = host.name
        # every part of the name is the node's word: kept to one plain file name inside the folder
        name = report.result_filename(
            history.name_part(str(doc["started_at"]).replace(":", "")),
            history.name_part(doc.get("host", host.name)),
            history.name_part(gpu_class_of(doc).get("name", "")),
            history.name_part(host.name),
        )
        try:
            path = history.contained(folder, name)
        except UsageError as err:
            host.message += f"; not stored: {err.message}"
            return
        if args.compare:
            baseline = history.previous(folder, doc, exclude=path)
            if baseline is not None:
                threshold = history.parse_threshold(args.threshold)
                doc["comparison"] = history.comparison_doc(
                    baseline, history.compare(baseline.doc, doc, threshold), threshold
                )
                comparisons[host.name] = doc["comparison"]
        host.saved = str(report.save(doc, path))

    job = Job("bench", script, _bench_host, store, timeout, folder, exit_code=worst_code)
    fleet = run_fleet(args, targets, job)
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
