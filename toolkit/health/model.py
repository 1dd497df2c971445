"""Checks, statuses and the report every collector and output shares.

Statuses follow the Nagios plugin convention (docs/REFERENCE.md, exit codes): the numeric value
of a status is the exit code a monitoring system reads. `Status` is the shared one of `toolkit.glossary`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from toolkit.glossary import Status


def worst(statuses) -> Status:
    result = Status.OK
    for status in statuses:
        if status.severity > result.severity:
            result = status
    return result


def finite_tree(value):
    """`value` with every float that is not finite (NaN, ±Infinity) replaced by None: JSON has no such
    numbers (Python would write a bare `NaN` that strict parsers reject) and a report never shows one."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_tree(v) for v in value]
    return value


@dataclass
class Check:
    """One observation with a verdict. `metric` + `labels` name it in Prometheus; a value of None
    means "not measured" and is never exported as a number."""

    name: str
    status: Status
    value: Any = None
    unit: str | None = None
    detail: str = ""
    metric: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    collector: str = ""
    prom_value: float | None = None  # numeric form for Prometheus when `value` is text ("on" -> 1)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "status": self.status.label,
            "value": finite_tree(self.value),
            "unit": self.unit,
            "detail": self.detail,
            "collector": self.collector,
        }


@dataclass
class CollectorResult:
    """What one collector returns. `up` is False when its source could not be read at all."""

    name: str
    checks: list[Check] = field(default_factory=list)
    up: bool = True
    detail: str = ""
    duration_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def add(
        self,
        name: str,
        status: Status,
        value: Any = None,
        unit: str | None = None,
        detail: str = "",
        metric: str | None = None,
        prom_value: float | None = None,
        **labels: str,
    ) -> Check:
        check = Check(
            name,
            status,
            value,
            unit,
            detail,
            metric,
            {k: str(v) for k, v in labels.items()},
            self.name,
            prom_value,
        )
        self.checks.append(check)
        return check

    @property
    def status(self) -> Status:
        return worst(c.status for c in self.checks)


@dataclass
class Report:
    host: str
    collectors: list[CollectorResult]
    collected_at: str
    duration_seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def checks(self) -> list[Check]:
        return [c for r in self.collectors for c in r.checks]

    @property
    def status(self) -> Status:
        return worst(c.status for c in self.checks)

    def to_json(self) -> dict:
        """The report as JSON data; no float in it is NaN or infinite (write it with allow_nan=False)."""
        return finite_tree(self._document())

    def _document(self) -> dict:
        return {
            "schema_version": 1,
            "host": self.host,
            "status": self.status.label,
            "collected_at": self.collected_at,
            "duration_seconds": round(self.duration_seconds, 4),
            "checks": [c.to_json() for c in self.checks],
            "collectors": [
                {
                    "name": r.name,
                    "up": r.up,
                    "status": r.status.label,
                    "detail": r.detail,
                    "duration_seconds": round(r.duration_seconds, 4),
                    "info": r.info,
                }
                for r in self.collectors
            ],
            "notes": self.notes,
        }


def timed(name: str, func, *args, **kwargs) -> CollectorResult:
    """Run one collector; a crash becomes an UNKNOWN check of that collector, never the whole report's."""
    start = time.perf_counter()
    from toolkit.errors import ToolkitError

    try:
        result = func(*args, **kwargs)
    except ToolkitError:
        raise  # a settings problem (bad BMC URL, no password) is the user's to fix: exit 3 with a hint
    except Exception as err:  # one collector's bug must not lose the others' checks
        result = CollectorResult(name, up=False, detail=f"collector failed: {type(err).__name__}: {err}")
        result.add(f"{name}.collector", Status.UNKNOWN, detail=result.detail)
    result.duration_seconds = time.perf_counter() - start
    return result
