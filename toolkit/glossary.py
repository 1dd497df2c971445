"""The words every part of toolkit shares: a load's status, a run's verdict, a health status, and
how they map onto one another and onto exit codes; the one spelling of a UTC timestamp.

A leaf: it imports nothing from toolkit but `errors`, so bench, health, fleet and report all read
their vocabulary from here instead of keeping copies (docs/ARCHITECTURE.md, "Glossary").
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import UTC, datetime

from toolkit.errors import EXIT_CHECK_FAILED, EXIT_INTERRUPTED, EXIT_OK


class LoadStatus(enum.StrEnum):
    """What one benchmark load (or one of its checks) reached."""

    SKIPPED = "skipped"  # could not run here (a --gpus-only load in one process), with the reason
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"  # below its floor, or out of memory
    ERROR = "error"  # crashed, interrupted, or a check whose figure is missing


# worst-of order of load statuses; a skipped load never makes a run worse than a pass
STATUS_ORDER: dict[str, int] = {
    LoadStatus.SKIPPED: -1,
    LoadStatus.PASS: 0,
    LoadStatus.WARN: 1,
    LoadStatus.FAIL: 2,
    LoadStatus.ERROR: 3,
}


class Verdict(enum.StrEnum):
    """A whole `toolkit bench` run."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"
    INTERRUPTED = "interrupted"
    INCOMPLETE = "incomplete"  # the run is still going (or was killed before it could say)


class Status(enum.IntEnum):
    """A health check's status, in the Nagios plugin convention: the value is the exit code a
    monitoring system reads."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def severity(self) -> int:
        # Worst-of order for the overall status: critical > warning > unknown > ok. An unknown
        # check (a BMC that does not answer) never hides a real warning elsewhere.
        return {Status.OK: 0, Status.UNKNOWN: 1, Status.WARNING: 2, Status.CRITICAL: 3}[self]

    @classmethod
    def parse(cls, text: str) -> Status:
        return cls[text.upper()]


def worst_status(statuses: Iterable[str], default: str = LoadStatus.PASS) -> str:
    """The worst of some load or check statuses (`default` for none)."""
    return max(statuses, key=STATUS_ORDER.__getitem__, default=default)


def verdict_of(statuses: Iterable[str], interrupted: bool = False) -> str:
    """A run's verdict from its loads' statuses: interrupted wins, no load at all is an error, and a
    run whose loads were all skipped passes (the skip reasons are in the report)."""
    if interrupted:
        return Verdict.INTERRUPTED
    statuses = list(statuses)
    if not statuses:
        return Verdict.ERROR
    worst = worst_status(statuses)
    return Verdict.PASS if worst == LoadStatus.SKIPPED else worst


def verdict_exit_code(verdict: str) -> int:
    """`toolkit bench`'s exit code for a verdict (docs/REFERENCE.md, "Exit codes")."""
    if verdict == Verdict.INTERRUPTED:
        return EXIT_INTERRUPTED
    return EXIT_CHECK_FAILED if verdict in (Verdict.FAIL, Verdict.ERROR) else EXIT_OK


class Tone(enum.StrEnum):
    """How a status word reads, whatever family it comes from: the one mapping the terminal styles and
    the HTML report's classes are drawn from."""

    GOOD = "good"
    WARN = "warn"
    BAD = "bad"
    SEVERE = "severe"  # the run itself broke: a crash, an unreachable host
    UNKNOWN = "unknown"
    STOPPED = "stopped"  # interrupted by the user
    QUIET = "quiet"  # nothing to see: skipped, not started, unchanged


# every status word toolkit prints: load statuses and verdicts (bench), health statuses (Nagios labels),
# fleet host states, provisioning states, and the moves of a --compare
TONE_OF: dict[str, Tone] = {
    "pass": Tone.GOOD,
    "ok": Tone.GOOD,
    "improvement": Tone.GOOD,
    "warn": Tone.WARN,
    "warning": Tone.WARN,
    "fail": Tone.BAD,
    "failed": Tone.BAD,
    "critical": Tone.BAD,
    "regression": Tone.BAD,
    "error": Tone.SEVERE,
    "unreachable": Tone.SEVERE,
    "timeout": Tone.SEVERE,
    "unknown": Tone.UNKNOWN,
    "interrupted": Tone.STOPPED,
    "incomplete": Tone.STOPPED,
    "skipped": Tone.QUIET,
    "not_started": Tone.QUIET,
    "unchanged": Tone.QUIET,
}


def tone_of(word: str | None) -> Tone | None:
    return TONE_OF.get(word or "")


def host_state_of_verdict(verdict: str) -> str:
    """A bench node's state in a fleet run: a run that passed or only warned is `ok`, any other `failed`
    (an interrupted or broken node gets its own state from the fleet code, before the verdict counts)."""
    return "ok" if verdict in (Verdict.PASS, Verdict.WARN) else "failed"


def health_label(code: int) -> str | None:
    """A `toolkit health` exit code as its status word ("ok" … "unknown"); None for any other code."""
    return Status(code).label if code in Status._value2member_map_ else None


# A result document names the GPU class it was measured against under this key (`--gpu` on the command
# line, `gpu_class` in code and JSON). Documents written before the rename call it "profile"; every
# reader goes through `gpu_class_of`, which takes either.
CLASS_KEY = "gpu_class"
OLD_CLASS_KEY = "profile"


def gpu_class_of(doc: dict) -> dict:
    """A bench document's GPU class section (`name`, `requested`, `class`, `detected`, `mismatch`,
    `peaks`), from a new or an old document; {} when it has none."""
    section = doc.get(CLASS_KEY) or doc.get(OLD_CLASS_KEY)
    return section if isinstance(section, dict) else {}


def utc_now() -> str:
    """Now as toolkit writes every timestamp: ISO 8601, UTC, whole seconds, `Z` (2026-12-03T15:21:12Z)."""
    return utc_stamp(datetime.now(UTC))


def utc_stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_utc(stamp: str) -> datetime:
    """The inverse of `utc_stamp` (also reads `+00:00` and fractions of a second)."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
