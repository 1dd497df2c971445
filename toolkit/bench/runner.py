"""Runs the reference loads one after another and keeps what each reached.

A load that runs out of memory is recorded as `fail`, one that crashes as
`error`; the remaining loads still run. Ctrl-C (or SIGTERM) stops the run, keeps
the finished loads and marks the interrupted one. After every load the document
is handed to `on_update`, which saves it atomically, so even a killed process
leaves the loads that finished on disk.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from collections.abc import Callable

from toolkit.bench.context import RunContext
from toolkit.bench.epilogue import close_load
from toolkit.bench.memory import PeakMemory
from toolkit.bench.record import WorkloadRecord
from toolkit.glossary import verdict_of

OOM_MARKERS = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "not enough memory",
    "cublas_status_alloc_failed",
    "hiperroroutofmemory",
)


def classify(exc: BaseException) -> tuple[str, str]:
    """(status, kind) of a load's exception: out-of-memory fails the check, anything else is an error."""
    torch = sys.modules.get("torch")

    if isinstance(exc, MemoryError) or (torch is not None and isinstance(exc, torch.OutOfMemoryError)):
        return "fail", "out_of_memory"
    if isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in OOM_MARKERS):
        return "fail", "out_of_memory"
    return "error", "crashed"


def _reached(rec: WorkloadRecord) -> str:
    steps = rec.metrics.get("steps_completed")
    return f" (reached {steps} step(s))" if steps is not None else ""


def run_loads(
    ctx: RunContext,
    workloads: list[str],
    on_start: Callable[[str], None],
    on_done: Callable[[WorkloadRecord], None],
    guard: Interrupts | None = None,
) -> tuple[list[WorkloadRecord], bool]:
    """Run `workloads` in order; returns the records and whether the run was interrupted."""
    torch = sys.modules.get("torch")  # not imported for a run of torch-free loads (vectors)

    records: list[WorkloadRecord] = []
    for name in workloads:
        if guard is not None and guard.pending:
            return records, True
        rec = WorkloadRecord(name)
        records.append(rec)
        memory = PeakMemory("cuda" if ctx.device != "cpu" else "cpu")
        on_start(name)
        t0 = time.perf_counter()
        interrupted = False
        try:
            if guard is not None:
                guard.enter()
            memory.reset()
            module = importlib.import_module(load_module(name, ctx.engine))
            if torch is not None:
                torch.manual_seed(ctx.seed)
            module.run(ctx, rec)
        except KeyboardInterrupt:
            rec.fail("error", "interrupted", f"interrupted by the user{_reached(rec)}")
            interrupted = True
        except Exception as exc:  # a load's failure must not end the run
            status, kind = classify(exc)
            message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            rec.fail(
                status,
                kind,
                f"{'out of memory' if kind == 'out_of_memory' else 'crashed'}{_reached(rec)}: {message}",
                traceback.format_exc(limit=8),
            )
        finally:
            if guard is not None:
                guard.inside = False
            usable = close_load(ctx, rec, memory, t0)
        on_done(rec)
        if not usable:  # the loads left would only fail on the poisoned context
            return records, False
        if interrupted or (guard is not None and guard.pending):
            return records, True
    return records, False


def load_module(name: str, engine: str = "trl") -> str:
    """The module that runs load `name`: `train:NAME` runs the recipe NAME through the train load (TRL),
    or through the trainer `--engine` names (`toolkit.bench.engine_<engine>`)."""
    kind = name.partition(":")[0]
    if kind == "train" and engine != "trl":
        return f"toolkit.bench.engine_{engine}"
    return f"toolkit.bench.workloads.{kind}"


class Interrupts:
    """Ctrl-C and SIGTERM interrupt a load at once, but between loads (saving a finished one, starting
    the next) they are held until the boundary: a stop that lands while a result is being saved must not
    lose it (a fleet run stops its nodes with SIGTERM the moment the user presses Ctrl-C)."""

    def __init__(self) -> None:
        self.inside = False
        self.pending = False

    def enter(self) -> None:
        self.inside = True
        if self.pending:
            raise KeyboardInterrupt

    def handler(self, signum, frame) -> None:
        self.pending = True
        if self.inside:
            raise KeyboardInterrupt


def requested_loads(workloads_arg: str | None, planned: list[str]) -> list[str]:
    """The planned loads the user named: those of `--workloads`, every recipe of `--recipe` (`train:NAME`)
    and the burn-in of `--burn-in`. The others are the default set, or the peaks the cpu profile measures
    first: one of those that cannot run here (skipped, with its reason) does not make a run incomplete."""
    named = {w.strip() for w in (workloads_arg or "").split(",") if w.strip()}
    return [w for w in planned if w in named or w.startswith("train:") or w == "burn_in"]


def verdict(records: list[WorkloadRecord], interrupted: bool, requested: list[str] = ()) -> str:
    """The run's verdict for callers that hold records (`requested`: the names of the loads the user
    named, `requested_loads`); the rule itself is the glossary's."""
    return verdict_of(
        [r.status for r in records], interrupted, [r.status for r in records if r.workload in requested]
    )
