"""Stored results: every bench result and gathered health report in a results folder, indexed by host,
profile and time, and the comparison of a result with an earlier one (`toolkit bench --compare`).

The folder is flat and self-describing: `bench-<UTC time>-<host>-<profile>-<id>.json` (one run of
`toolkit bench`, local or gathered from a node), `health-<UTC time>-<host>.json` (a gathered or stored
`toolkit health --json`), `fleet-<command>-<UTC time>.json` (one fleet run: which hosts, how each ended).
The index reads the documents themselves, not the names: a host name may hold dashes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import UsageError
from toolkit.glossary import gpu_class_of

DEFAULT_THRESHOLD = 0.05


def results_dir(arg: str | None = None) -> Path:
    return Path(arg or os.environ.get("TOOLKIT_RESULTS_DIR") or "results")


@dataclass
class Entry:
    path: Path
    kind: str  # bench | health
    host: str
    profile: str  # the bench profile; "" for health reports
    time: str  # ISO UTC: started_at (bench) or collected_at (health)
    doc: dict = field(repr=False)  # read once by the scan (the index needs its host, profile and time)


def _entry(path: Path) -> Entry | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # a foreign or unreadable file is not part of the history
    if not isinstance(doc, dict) or not isinstance(doc.get("host"), str):
        return None
    host = node_name(doc)
    if path.name.startswith("bench-") and gpu_class_of(doc) and doc.get("started_at"):
        return Entry(path, "bench", host, str(gpu_class_of(doc).get("name", "")), doc["started_at"], doc)
    if path.name.startswith("health-") and doc.get("collected_at") and "checks" in doc:
        return Entry(path, "health", host, "", doc["collected_at"], doc)
    return None


def node_name(doc: dict) -> str:
    """A gathered result is the inventory's host (its name in the fleet); a local one its hostname."""
    fleet = doc.get("fleet") if isinstance(doc.get("fleet"), dict) else {}
    return str(fleet.get("inventory_host") or doc.get("inventory_host") or doc.get("host", ""))


def scan(*folders: Path, kind: str | None = None) -> list[Entry]:
    """Every stored result in the folders, oldest first (by the time the document states)."""
    entries: list[Entry] = []
    seen: set[Path] = set()
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.glob("*.json"):
            real = path.resolve()
            if real in seen or (kind and not path.name.startswith(f"{kind}-")):
                continue
            seen.add(real)
            entry = _entry(path)
            if entry and (kind is None or entry.kind == kind):
                entries.append(entry)
    entries.sort(key=lambda e: (e.time, e.path.name))
    return entries


def by_host(entries: list[Entry]) -> dict[str, list[Entry]]:
    index: dict[str, list[Entry]] = {}
    for e in entries:
        index.setdefault(e.host, []).append(e)
    return index


def previous(folder: Path, doc: dict, exclude: Path | None = None) -> Entry | None:
    """The newest complete stored bench result of the same host and profile that started before `doc`
    (an interrupted run is history, but not a baseline)."""
    host, profile, started = node_name(doc), gpu_class_of(doc).get("name"), doc.get("started_at", "")
    skip = exclude.resolve() if exclude else None
    earlier = [
        e
        for e in scan(folder, kind="bench")
        if e.host == host
        and e.profile == profile
        and e.time <= started
        and e.path.resolve() != skip
        and e.doc.get("complete", True)
    ]
    return earlier[-1] if earlier else None


def load_baseline(spec: str) -> Entry:
    """`--compare PATH`: a stored bench result; checked before any load runs."""
    path = Path(spec)
    if not path.is_file():
        raise UsageError(
            f"--compare {spec}: no such result file",
            hint="give `last` (the previous run of this host and profile) or a bench-*.json result file",
        )
    entry = _entry(path) if path.name.startswith("bench-") else None
    if entry is None:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise UsageError(f"--compare {spec}: not a JSON result ({err})") from None
        if not (isinstance(doc, dict) and isinstance(doc.get("results"), list) and gpu_class_of(doc)):
            raise UsageError(
                f"--compare {spec}: not a `toolkit bench` result",
                hint="give a file written by `toolkit bench` (results/bench-*.json or --json PATH)",
            )
        entry = Entry(path, "bench", str(doc.get("host", "")), gpu_class_of(doc).get("name", ""), "", doc)
    return entry


# -- comparison ------------------------------------------------------------------------------------------


def direction(metric: str) -> int:
    """+1 when a larger value is better, -1 when a smaller one is, 0 when the figure is not a
    performance figure (counts, sizes of the load, estimates) and is not compared."""
    if metric.startswith("baseline_") or "estimate" in metric or metric.endswith("_per_rank"):
        return 0
    if "per_second" in metric or metric.endswith(("_ratio", "_speedup_vs_exact")) or "recall_at_" in metric:
        return 1
    if "seconds" in metric or metric.endswith("_bytes"):
        return -1
    return 0


@dataclass
class Change:
    workload: str
    metric: str
    before: float
    after: float
    ratio: float  # after / before
    verdict: str  # regression | improvement | unchanged

    def as_dict(self) -> dict:
        return {
            "workload": self.workload,
            "metric": self.metric,
            "before": self.before,
            "after": self.after,
            "change_ratio": round(self.ratio - 1, 6),
            "verdict": self.verdict,
        }


def _figures(doc: dict) -> dict[tuple[str, str], float]:
    out = {}
    for rec in doc.get("results", []):
        if rec.get("status") in ("error", "skipped"):
            continue
        for name, value in (rec.get("metrics") or {}).items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not direction(name):
                continue
            out[(rec["workload"], name)] = float(value)
    return out


def compare(before: dict, after: dict, threshold: float = DEFAULT_THRESHOLD) -> list[Change]:
    """Every figure both results hold; a move beyond `threshold` (a fraction) in the bad direction is a
    regression, in the good direction an improvement."""
    old, new = _figures(before), _figures(after)
    changes = []
    for key in [k for k in new if k in old]:
        b, a = old[key], new[key]
        if b == 0:
            continue
        ratio = a / b
        moved = abs(ratio - 1) > threshold
        better = (ratio > 1) == (direction(key[1]) > 0)
        verdict = "unchanged" if not moved else ("improvement" if better else "regression")
        changes.append(Change(key[0], key[1], b, a, ratio, verdict))
    return changes


def comparison_doc(baseline: Entry, changes: list[Change], threshold: float) -> dict:
    """What the result document carries under `comparison`."""
    return {
        "baseline": str(baseline.path),
        "baseline_started_at": baseline.doc.get("started_at"),
        "baseline_host": baseline.host,
        "baseline_profile": baseline.profile,
        "threshold_ratio": threshold,
        "regressions": sum(c.verdict == "regression" for c in changes),
        "improvements": sum(c.verdict == "improvement" for c in changes),
        "changes": [c.as_dict() for c in changes],
    }


def parse_threshold(text: str | float | None) -> float:
    if text is None:
        return DEFAULT_THRESHOLD
    raw = str(text).strip()
    try:
        value = float(raw.rstrip("%")) / (100 if raw.endswith("%") else 1)
    except ValueError:
        raise UsageError(f"--threshold {text}: not a number", hint="e.g. 5% or 0.05") from None
    if not 0 < value < 10:
        raise UsageError(f"--threshold {text}: out of range", hint="a fraction such as 0.05, or 5%")
    return value
