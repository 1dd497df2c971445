"""A session runs one prepared request: it observes the competing load (refusing a busy machine under
`--strict`), starts the run document, runs the loads (or the burn-in) with progress on stderr, keeps
every finished load on disk, and ends with the table, the comparison and the exit code. A rank of a
`--gpus N` run runs the same session; its `Rank` hands the records to rank 0, which alone writes the
document.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time

from toolkit.bench.document import RunDocument
from toolkit.bench.request import BenchRequest
from toolkit.bench.setup import RunSetup
from toolkit.errors import EXIT_CHECK_FAILED, EXIT_INTERRUPTED
from toolkit.glossary import verdict_exit_code


def run(request: BenchRequest, setup: RunSetup, rank=None) -> int:
    from toolkit.bench.runner import Interrupts
    from toolkit.console import err

    ctx = _context(request, setup)
    if rank is not None:  # the other ranks are this run, not competing load
        ctx.exclude_root = os.getppid()
    before = observe_before(request, setup.device, ctx.exclude_root, strict=rank is None)
    doc = _start_document(request, setup, ctx, rank)
    doc.set_contention(before)
    progress = _Progress(doc, rank, setup.settings.warn_ratio)
    err.print(
        f"toolkit bench: profile {setup.gpu_class}, device {setup.device} ({setup.found.summary}), "
        f"scale {setup.scale.name}, loads {', '.join(setup.workloads)}",
        highlight=False,
    )
    for recipe in setup.recipes:
        if recipe.unhonoured:
            err.print(
                f"recipe {recipe.name}: not honoured: {', '.join(k for k, _ in recipe.unhonoured)} "
                "(reasons in the report)",
                highlight=False,
            )
    burn_in = setup.workloads == ("burn_in",)
    guard = Interrupts() if rank is None and not burn_in else None
    with _signals(rank, guard):
        if not doc.save():
            _save_failed(doc, "the result file")
        _records, interrupted = _run_loads(ctx, setup, doc, progress, guard)
    if rank is not None:  # a rank that failed or was interrupted has left in rank.collect
        return rank.finish(doc)
    return _finish(request, doc, interrupted, setup.baseline)


def observe_before(request: BenchRequest, device: str, exclude_root: int | None, strict: bool = True) -> dict:
    """The competing load before the first load (toolkit.bench.contention): recorded in the result,
    said on stderr when the machine is busy, and with `--strict` a busy machine is refused (exit 2,
    nothing run or written)."""
    from toolkit.bench import contention
    from toolkit.console import err

    before = contention.observe(contention.PRE_RUN_SECONDS, device, exclude_root)
    if request.strict and strict:
        contention.refuse_if_busy(before)
    if before["busy"]:
        err.print(
            f"toolkit bench: the machine is busy ({before['evidence']}): a load that falls short is "
            "reported as inconclusive, not as a fail; --strict refuses to run on a busy machine",
            highlight=False,
        )
    return before


def _context(request: BenchRequest, setup: RunSetup):
    from toolkit.bench.context import Peaks, RunContext
    from toolkit.units import si

    spec = setup.spec
    dtype = spec.tensor_dtype if setup.device != "cpu" else "float32"
    peaks = Peaks()
    if spec is not None:
        bandwidth = spec.value("memory_bandwidth_bytes_per_second")
        peaks = Peaks(
            flops=spec.tensor_flops,
            flops_basis=f"{spec.key} dense {dtype} tensor peak {si(spec.tensor_flops, 'FLOP/s')}",
            bandwidth=bandwidth,
            bandwidth_basis=f"{spec.key} datasheet bandwidth {si(bandwidth, 'B/s')}",
        )
    return RunContext(
        device=setup.device,
        dtype=dtype,
        scale=setup.scale,
        settings=setup.settings,
        gpu_class=setup.gpu_class,
        spec=spec,
        peaks=peaks,
        seed=request.seed,
        kto_loss=request.kto_loss,
        recipes={r.name: r for r in setup.recipes},
        model_path=request.model,
        engine=request.engine,
        qdrant=setup.qdrant,
    )


def _start_document(request: BenchRequest, setup: RunSetup, ctx, rank) -> RunDocument:
    from toolkit.bench import environment, report
    from toolkit.glossary import utc_now

    host = socket.gethostname()
    started = utc_now()
    path = setup.results_dir / report.result_filename(started, host, setup.gpu_class)
    if rank is not None:  # --gpus N: the launcher named the result; only rank 0 writes it
        started, path = rank.started_at, rank.saved_path
    settings = setup.settings
    doc = RunDocument.start(
        host=host,
        started_at=started,
        path=path,
        gpu_class={
            "name": setup.gpu_class,
            "requested": request.gpu_class,
            "class": setup.spec.as_dict()
            if setup.spec
            else {"class": "cpu", "peaks": "measured in this run"},
            "detected": setup.found.summary,
            "mismatch": setup.mismatch,
            "peaks": ctx.peaks.as_dict(),
        },
        environment=environment.collect(setup.device, setup.found),
        configuration={
            "scale": setup.scale.name,
            "overrides": list(request.overrides),
            "workloads": list(setup.workloads),
            "recipes": [r.summary() for r in setup.recipes],
            "model": request.model or "synthetic weights of the recipe's architecture",
            "engine": request.engine,
            "seed": request.seed,
            "dtype": ctx.dtype,
            "floors": {k: {"values": v.values, "basis": v.basis} for k, v in settings.floors.items()},
            "warn_ratio": settings.warn_ratio,
        },
        writer=rank is None or rank.is_main,
        peaks=ctx.peaks,
    )
    if rank is not None:
        rank.annotate(doc, setup.device)
    return doc


class _Progress:
    """The running load on stderr (a bar on a terminal) and in the saved file (at most once a second),
    and one line per finished load."""

    def __init__(self, doc: RunDocument, rank, warn_ratio: float):
        from toolkit.console import err, load_progress

        self.doc, self.rank, self.warn_ratio = doc, rank, warn_ratio
        self.bar = load_progress(err)
        self.task = None
        self.saved_at = 0.0

    def on_start(self, ctx, name: str) -> None:
        self.task = self.bar.add_task(name, total=None)
        self.saved_at = time.monotonic()
        ctx.observe_load()  # the competing load during this load; close_load reads it

        def on_progress(done: int, total: int) -> None:
            self.bar.update(self.task, completed=done, total=total)
            if time.monotonic() - self.saved_at >= 1:
                self.doc.progress(name, done, total)
                self.saved_at = time.monotonic()

        ctx.progress = on_progress

    def on_done(self, rec) -> None:
        from toolkit.bench import report
        from toolkit.console import err

        self.bar.remove_task(self.task)
        # --gpus N: every rank hands its record to rank 0, which keeps the aggregate
        result = rec.as_dict() if self.rank is None else self.rank.collect(rec, self.warn_ratio)
        if result is None:
            return
        saved = self.doc.add_result(result)
        report.print_load_line(err, rec)
        if not saved:
            _save_failed(self.doc, f"{rec.workload}'s result")


def _run_loads(ctx, setup: RunSetup, doc: RunDocument, progress: _Progress, guard):
    from toolkit.bench.runner import run_loads

    def on_start(name: str) -> None:
        progress.on_start(ctx, name)

    with progress.bar:
        if setup.workloads != ("burn_in",):
            return run_loads(ctx, list(setup.workloads), on_start, progress.on_done, guard)
        from toolkit.bench import burnin

        # the burn-in record is saved after every interval, so a killed burn-in keeps the finished ones
        def done(rec) -> None:
            doc.replace_running(None)
            progress.on_done(rec)

        return burnin.run(
            ctx, setup.burn_in_seconds, on_start, done, lambda rec: doc.replace_running(rec.as_dict())
        )


@contextlib.contextmanager
def _signals(rank, guard):
    """SIGTERM (and SIGINT, through the guard) for the time the loads run; restored after. A rank tells
    torchrun's SIGTERM (another rank failed) from the user's Ctrl-C."""
    handler = rank.on_sigterm if rank else guard.handler if guard else _raise_interrupt
    previous = signal.signal(signal.SIGTERM, handler)
    # (an ignored SIGINT, as nohup or a background job inherits it, stays ignored)
    keep_int = guard is None or signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    previous_int = None if keep_int else signal.signal(signal.SIGINT, guard.handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)


def _finish(request: BenchRequest, doc: RunDocument, interrupted: bool, baseline) -> int:
    from toolkit.bench import report
    from toolkit.bench.runner import requested_loads
    from toolkit.console import err, out

    doc.finish(interrupted=interrupted, requested=requested_loads(request.workloads, doc.planned))
    comparison = _comparison(request, doc, baseline)
    if comparison:
        doc.set_comparison(comparison)
        doc.save()
    published = report.publish(doc.as_dict(), doc.path, request.json, out, err, unsaved=doc.save_error)
    if comparison:
        report.render_comparison(comparison, err if request.json == "-" else out)
    if doc.save_error:
        _save_failed(doc, "the finished run", final=True)
    if interrupted:
        err.print("Interrupted: the loads that finished are kept in the saved result.")
        return EXIT_INTERRUPTED
    code = verdict_exit_code(doc.verdict)
    if code == 0 and (doc.save_error or not published):  # a result that is not on disk is not a pass
        return EXIT_CHECK_FAILED
    if code == 0 and comparison and comparison["regressions"] and request.fail_on_regression:
        return EXIT_CHECK_FAILED
    return code


def _save_failed(doc: RunDocument, what: str, final: bool = False) -> None:
    """One message for a save that failed (a full disk), naming the file and what it lacks. The run
    goes on; at the end a result not on disk makes the exit code 1 (docs/REFERENCE.md, exit codes)."""
    from rich.text import Text

    from toolkit.console import err

    missing = doc.unsaved
    kept = f"{doc.path.name} keeps its last whole version" + (
        f", without {', '.join(missing)}" if missing else ""
    )
    then = "the table above shows every load" if final else "the run goes on"
    # soft_wrap: a long path stays on one line, whole, for whoever greps the log
    err.print(Text(f"toolkit: error: {what} was not saved: {doc.save_error}"), soft_wrap=True)
    hint = f"  hint: free space in {doc.path.parent} (or pass --results-dir); {then}; {kept}"
    err.print(Text(hint), soft_wrap=True)


def _comparison(request: BenchRequest, doc: RunDocument, baseline) -> dict | None:
    """`baseline`: the result of --compare PATH, read before the run; `last` is looked up now."""
    from toolkit import history
    from toolkit.console import err

    if not request.compare:
        return None
    data = doc.as_dict()
    baseline = baseline or history.previous(doc.path.parent, data, exclude=doc.path)
    if baseline is None:
        err.print(
            f"--compare last: no earlier result of {data['host']} ({doc.gpu_class['name']}) in "
            f"{doc.path.parent}: nothing to compare with yet",
            highlight=False,
        )
        return None
    threshold = history.parse_threshold(request.threshold)
    return history.comparison_doc(baseline, history.compare(baseline.doc, data, threshold), threshold)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt
