"""What one load produced: metrics, warm-up figures kept apart, and checks against expectations.

A load fills its record as it goes, so a load that runs out of memory, crashes or
is interrupted still reports what it reached.

Judging a check (`judge`, after the load, with the competing load observed during it):

- a shortfall (below the floor: `warn` or `fail`) while the machine was busy
  (`toolkit.bench.contention`) is **inconclusive**, with the evidence: it says nothing about the node;
- on a machine that was not busy, a figure whose samples spread wider than `CV_LIMIT` (coefficient of
  variation, stdev / mean) *and* straddle the floor (some samples above it, some below) is
  **unstable**: the samples disagree on the verdict, so there is none. A wide spread entirely above (or
  below) the floor still judges; on a busy machine a median that reached the floor passes (the spread
  is the competing load's). Every spread above the limit is said in a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toolkit.glossary import STATUS_ORDER as STATUS_ORDER  # re-exported for importers of record
from toolkit.glossary import LoadStatus, worst_status

# a figure whose samples' coefficient of variation is above this (and whose samples straddle the floor)
# is unstable: pyperf calls a benchmark unstable from 10 % up
CV_LIMIT = 0.10
SHORTFALL = (LoadStatus.WARN, LoadStatus.FAIL)


@dataclass
class WorkloadRecord:
    workload: str
    status: str = "pass"
    metrics: dict = field(default_factory=dict)
    warmup: dict = field(default_factory=dict)
    expected: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    flops: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: dict | None = None
    duration_seconds: float | None = None
    spread: dict = field(default_factory=dict)  # metric -> {n, median, min, max, cv} of its samples
    contention: dict | None = None  # the competing load observed during the load

    def check(
        self,
        metric: str,
        minimum: float | None,
        basis: str,
        warn_ratio: float,
        source: str | None = None,
        calibrated: bool = True,
        timed: bool = True,
    ) -> None:
        """Compare metrics[metric] with `minimum`; a check without a minimum warns (never a silent pass).

        `basis` says how the minimum was derived; `source` where its efficiency floor comes from.
        `timed=False`: a figure no competing load can move (a recall, a count), judged on a busy machine too.
        """
        measured = self.metrics.get(metric)
        entry: dict = {"min": minimum, "basis": basis}
        if not timed:
            entry["timed"] = False
        if source:
            entry["floor_source"] = source
        if minimum is None or minimum <= 0:
            entry["status"] = "warn"
            entry["basis"] = f"no expectation: {basis}"
        elif measured is None:
            entry["status"] = "error"
        else:
            ratio = measured / minimum
            entry["ratio"] = round(ratio, 4)
            entry["status"] = "pass" if ratio >= 1 else "warn" if ratio >= warn_ratio else "fail"
            if not calibrated:
                entry["calibrated"] = False
                if entry["status"] == "fail":
                    entry["status"] = "warn"
                    entry["basis"] += (
                        " (floor not yet calibrated on hardware: a shortfall warns, never fails)"
                    )
        self.expected[metric] = entry

    def judge(self, contention: dict | None) -> None:
        """Re-judge the checks with the competing load observed during the load and the samples' spread
        (module docstring); each re-judged check carries its `evidence`, and the load a note."""
        self.contention = contention
        busy = bool(contention and contention.get("busy"))
        for metric, entry in self.expected.items():
            if not entry.get("min") or entry["status"] not in (*SHORTFALL, LoadStatus.PASS):
                continue  # no expectation, or an error: nothing to re-judge
            if busy and entry["status"] in SHORTFALL and entry.get("timed", True):
                entry["status"] = LoadStatus.INCONCLUSIVE
                entry["evidence"] = f"fell short while the machine was busy: {contention['evidence']}"
                self.notes.append(f"{metric} inconclusive: {entry['evidence']}")
                continue
            sp = self.spread.get(metric)
            # on a busy machine the spread is the competing load's (said in a note below): a median that
            # reached the floor despite it passes
            if sp and not busy and sp["cv"] > CV_LIMIT and sp["min"] < entry["min"] <= sp["max"]:
                entry["status"] = LoadStatus.UNSTABLE
                entry["evidence"] = (
                    f"samples spread {sp['cv']:.0%} (CV, limit {CV_LIMIT:.0%}) from {sp['min']:.4g} to "
                    f"{sp['max']:.4g}, across the floor {entry['min']:.4g}"
                )
                self.notes.append(f"{metric} unstable: {entry['evidence']}")
        for metric, sp in self.spread.items():  # a wide spread the checks above did not judge: said
            if sp["cv"] > CV_LIMIT and self.expected.get(metric, {}).get("status") not in (
                LoadStatus.INCONCLUSIVE,
                LoadStatus.UNSTABLE,
            ):
                why = " while the machine was busy" if busy else ""
                self.notes.append(
                    f"{metric}: samples spread {sp['cv']:.0%} (CV, limit {CV_LIMIT:.0%}){why}, from "
                    f"{sp['min']:.4g} to {sp['max']:.4g} over {sp['n']} samples"
                )

    def settle(self) -> str:
        """The load's status: the worst of its checks unless an error already decided it."""
        if self.status in (LoadStatus.ERROR, LoadStatus.FAIL, LoadStatus.SKIPPED):
            return self.status
        worst = worst_status(e["status"] for e in self.expected.values())
        self.status = worst
        return worst

    def fail(self, status: str, kind: str, message: str, traceback: str | None = None) -> None:
        self.status = status
        self.error = {"kind": kind, "message": message}
        if traceback:
            self.error["traceback"] = traceback

    def as_dict(self) -> dict:
        doc = {
            "workload": self.workload,
            "status": self.status,
            "metrics": self.metrics,
            "expected": self.expected,
            "warmup": self.warmup,
            "config": self.config,
            "flops": self.flops,
            "notes": self.notes,
            "duration_seconds": self.duration_seconds,
        }
        if self.spread:
            doc["spread"] = self.spread
        if self.contention is not None:
            doc["contention"] = self.contention
        if self.error:
            doc["error"] = self.error
        return doc
