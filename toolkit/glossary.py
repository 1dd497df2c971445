"""The words every part of toolkit shares: a load's status, a run's verdict, a health status, and
how they map onto one another and onto exit codes; the one spelling of a UTC timestamp.

A leaf: it imports nothing from toolkit but `errors`, so bench, health, fleet and report all read
their vocabulary from here instead of keeping copies (docs/ARCHITECTURE.md, "Glossary").
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import UTC, datetime

from toolkit.errors import EXIT_CHECK_FAILED, EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK


class LoadStatus(enum.StrEnum):
    """What one benchmark load (or one of its checks) reached."""

    SKIPPED = "skipped"  # could not run here (a --gpus-only load in one process), with the reason
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"  # below its floor, or out of memory
    ERROR = "error"  # crashed, interrupted, or a check whose figure is missing
    # not judged: fell short while other processes used the machine (toolkit.bench.contention), with the
    # evidence; never a fail
    INCONCLUSIVE = "inconclusive"
    UNSTABLE = "unstable"  # the samples' spread is too wide to judge (toolkit.bench.record, CV_LIMIT)


# worst-of order of load statuses; a skipped load never makes a run worse than a pass
STATUS_ORDER: dict[str, int] = {
    LoadStatus.SKIPPED: -1,
    LoadStatus.PASS: 0,
    LoadStatus.WARN: 1,
    LoadStatus.UNSTABLE: 2,
    LoadStatus.INCONCLUSIVE: 3,
    LoadStatus.FAIL: 4,
    LoadStatus.ERROR: 5,
}


class Verdict(enum.StrEnum):
    """A whole `toolkit bench` run."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"
    INTERRUPTED = "interrupted"
    # a load the user named was not judged (skipped, inconclusive, unstable), or any load that ran could not
    # be judged (inconclusive, unstable); also the verdict of a document still being written (`complete`
    # false) or whose run was killed before it could say
    INCOMPLETE = "incomplete"


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


# A load with one of these statuses was not judged: it could not run here (skipped), or it ran and its figure
# could not be judged (inconclusive: short while the machine was busy; unstable: samples too spread).
NOT_JUDGED = (LoadStatus.SKIPPED, LoadStatus.INCONCLUSIVE, LoadStatus.UNSTABLE)
# ... and of these, the ones that leave any run incomplete, named by the user or not: the load ran here
NOT_JUDGED_AFTER_RUNNING = (LoadStatus.INCONCLUSIVE, LoadStatus.UNSTABLE)


def verdict_of(statuses: Iterable[str], interrupted: bool = False, requested: Iterable[str] = ()) -> str:
    """A run's verdict from its loads' statuses (docs/REFERENCE.md, "Statuses and verdicts"): interrupted
    wins, no load at all is an error, a fail or an error stands; then the run is `incomplete` when a load the
    user named (`requested`: the statuses of the loads of --workloads, --recipe, --burn-in) was not judged,
    or any load ran and could not be judged; else the worst of pass and warn. A load of the default set
    that cannot run here (skipped, with its reason) leaves the verdict as it is."""
    if interrupted:
        return Verdict.INTERRUPTED
    statuses = list(statuses)
    if not statuses:
        return Verdict.ERROR
    worst = worst_status(s for s in statuses if s not in NOT_JUDGED)
    if worst in (LoadStatus.FAIL, LoadStatus.ERROR):
        return worst
    if any(s in NOT_JUDGED for s in requested) or any(s in NOT_JUDGED_AFTER_RUNNING for s in statuses):
        return Verdict.INCOMPLETE
    return worst


def verdict_exit_code(verdict: str) -> int:
    """`toolkit bench`'s exit code for a verdict (docs/REFERENCE.md, "Exit codes")."""
    if verdict == Verdict.INTERRUPTED:
        return EXIT_INTERRUPTED
    if verdict == Verdict.INCOMPLETE:
        return EXIT_INCOMPLETE
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
    "inconclusive": Tone.UNKNOWN,
    "unstable": Tone.UNKNOWN,
    "skipped": Tone.QUIET,
    "not_started": Tone.QUIET,
    "unchanged": Tone.QUIET,
}


def tone_of(word: str | None) -> Tone | None:
    return TONE_OF.get(word or "")


def host_state_of_verdict(verdict: str) -> str:
    """A bench node's state in a fleet run: a run that passed or only warned is `ok`, one that left a load
    unjudged `incomplete`, any other `failed` (an interrupted or broken node gets its own state from the
    fleet code, before the verdict counts)."""
    if verdict == Verdict.INCOMPLETE:
        return "incomplete"
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
