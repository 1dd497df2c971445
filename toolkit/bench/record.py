"""What one load produced: metrics, warm-up figures kept apart, and checks against expectations.

A load fills its record as it goes, so a load that runs out of memory, crashes or
is interrupted still reports what it reached.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toolkit.glossary import STATUS_ORDER as STATUS_ORDER  # re-exported for importers of record
from toolkit.glossary import LoadStatus, worst_status


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

    def check(
        self,
        metric: str,
        minimum: float | None,
        basis: str,
        warn_ratio: float,
        source: str | None = None,
        calibrated: bool = True,
    ) -> None:
        """Compare metrics[metric] with `minimum`; a check without a minimum warns (never a silent pass).

        `basis` says how the minimum was derived; `source` where its efficiency floor comes from.
        """
        measured = self.metrics.get(metric)
        entry: dict = {"min": minimum, "basis": basis}
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
        if self.error:
            doc["error"] = self.error
        return doc
