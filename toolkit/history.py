"""Stored results: every bench result and gathered health report in a results folder, indexed by host,
profile and time, and the comparison of a result with an earlier one (`toolkit bench --compare`).

The folder is flat and self-describing: `bench-<UTC time>-<host>-<profile>-<id>.json` (one run of
`toolkit bench`, local or gathered from a node), `health-<UTC time>-<host>.json` (a gathered or stored
`toolkit health --json`), `fleet-<command>-<UTC time>.json` (one fleet run: which hosts, how each ended).
The index reads the documents themselves, not the names: a host name may hold dashes.
"""

from __future__ import annotations

import errno
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import UsageError
from toolkit.glossary import gpu_class_of

DEFAULT_THRESHOLD = 0.05
# the newest schema_version of each stored document this toolkit reads (bench/document.py SCHEMA_VERSION,
# health/model.py); a newer one is skipped, never shown as a run nor compared
KNOWN_SCHEMA = {"bench": 2, "health": 1}


def results_dir(arg: str | None = None) -> Path:
    return Path(arg or os.environ.get("TOOLKIT_RESULTS_DIR") or "results")


def name_part(text: object, limit: int = 80) -> str:
    """One part of a stored file's name made from what a peer sent (a host name, a GPU class, a time):
    letters, digits, `.`, `_`, `+` and `-` only, never a dot-only name, at most `limit` characters."""
    part = re.sub(r"[^A-Za-z0-9.+_-]+", "_", str(text))[:limit]
    return part if part.strip(".") else "_" * max(len(part), 1)


def contained(folder: Path, name: str) -> Path:
    """`folder / name`, refused unless it is a file directly inside `folder` (a name from a peer never
    writes elsewhere, whatever it holds)."""
    path = folder / name
    if Path(name).name != name or path.resolve().parent != folder.resolve():
        raise UsageError(
            f"refusing to store {name!r}: it is not a file name inside {folder}",
            hint="the name came from a node's answer; nothing was written outside the results folder",
        )
    return path


@dataclass
class Entry:
    path: Path
    kind: str  # bench | health
    host: str
    profile: str  # the bench profile; "" for health reports
    time: str  # ISO UTC: started_at (bench) or collected_at (health)
    doc: dict = field(repr=False)  # read once by the scan (the index needs its host, profile and time)


@dataclass(frozen=True)
class Skipped:
    """A stored file the history left out, and why (`toolkit report` names each one)."""

    path: Path
    reason: str


def _schema_problem(kind: str, doc: dict) -> str | None:
    """Why a document's schema_version cannot be read here, or None."""
    version = doc.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return f"schema_version {version!r} is not a version number"
    if version > KNOWN_SCHEMA[kind]:
        return (
            f"schema_version {version} is newer than this toolkit reads ({KNOWN_SCHEMA[kind]}): "
            "written by a newer toolkit"
        )
    return None


def _shape_problem(kind: str, doc: dict) -> str | None:
    """Why a document of a known schema cannot be shown (fields of the wrong type), or None."""
    rows, key, fields = (
        ("results", "workload", ("workload", "status"))
        if kind == "bench"
        else ("checks", "name", ("name", "status"))
    )
    if not isinstance(doc.get(rows), list) or not all(
        isinstance(r, dict) and all(isinstance(r.get(f), str) for f in fields) for r in doc[rows]
    ):
        return f"`{rows}` is not a list of {key}/status records"
    stamp = doc.get("started_at" if kind == "bench" else "collected_at")
    if not isinstance(stamp, str):
        return "its time stamp is not a string"
    return None


def document_problem(kind: str, doc: dict) -> str | None:
    """Why a stored `bench` or `health` document cannot be read here (a newer schema, fields of the
    wrong type), or None."""
    return _schema_problem(kind, doc) or _shape_problem(kind, doc)


def _read(path: Path) -> Entry | str | None:
    """The entry of a stored result, the reason it is skipped, or None for a file that is not one
    (the folder also holds fleet documents and reports)."""
    kind = "bench" if path.name.startswith("bench-") else "health" if path.name.startswith("health-") else ""
    if not kind:
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, RuntimeError) as err:
        return _os_reason(err)
    except ValueError as err:  # UnicodeDecodeError too
        return f"not valid JSON ({err})"
    if not isinstance(doc, dict) or not isinstance(doc.get("host"), str):
        return "not a toolkit result (no host)"
    problem = document_problem(kind, doc)
    if problem:
        return problem
    host = node_name(doc)
    if kind == "bench" and gpu_class_of(doc) and doc.get("started_at"):
        return Entry(path, "bench", host, str(gpu_class_of(doc).get("name", "")), doc["started_at"], doc)
    if kind == "health" and doc.get("collected_at"):
        return Entry(path, "health", host, "", doc["collected_at"], doc)
    return "not a toolkit result (no GPU class or time)"


def _os_reason(err: Exception) -> str:
    if isinstance(err, RuntimeError) or getattr(err, "errno", None) == errno.ELOOP:
        return "unreadable (a symlink loop)"
    return f"unreadable ({getattr(err, 'strerror', None) or err})"


def _entry(path: Path) -> Entry | None:
    found = _read(path)
    return found if isinstance(found, Entry) else None


def node_name(doc: dict) -> str:
    """A gathered result is the inventory's host (its name in the fleet); a local one its hostname."""
    fleet = doc.get("fleet") if isinstance(doc.get("fleet"), dict) else {}
    return str(fleet.get("inventory_host") or doc.get("inventory_host") or doc.get("host", ""))


def scan(*folders: Path, kind: str | None = None, skipped: list[Skipped] | None = None) -> list[Entry]:
    """Every stored result in the folders, oldest first (by the time the document states). A result file
    that cannot be read (corrupt, unreadable, a symlink loop, a newer schema) is left out and, when
    `skipped` is given, added to it with the reason."""
    entries: list[Entry] = []
    seen: set[Path] = set()
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.json")):
            if kind and not path.name.startswith(f"{kind}-"):
                continue
            try:
                real = path.resolve(strict=True)
            except (OSError, RuntimeError) as err:  # a dangling link, a symlink loop (RuntimeError < 3.13)
                if skipped is not None and path.name.startswith(("bench-", "health-")):
                    skipped.append(Skipped(path, _os_reason(err)))
                continue
            if real in seen:
                continue
            seen.add(real)
            found = _read(path)
            if isinstance(found, str):
                if skipped is not None:
                    skipped.append(Skipped(path, found))
            elif found and (kind is None or found.kind == kind):
                entries.append(found)
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
    found = _read(path) if path.name.startswith("bench-") else None
    if isinstance(found, str):
        raise UsageError(f"--compare {spec}: cannot be compared: {found}")
    entry = found
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
        problem = _schema_problem("bench", doc)
        if problem:
            raise UsageError(f"--compare {spec}: cannot be compared: {problem}")
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
