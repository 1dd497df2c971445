"""Stored reports of a node: one JSON file per run in the report folder, written atomically, pruned after
`keep_days`, with a lock so two runs (the timer and a person) never overlap. `summarise()` is --history."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import time
from pathlib import Path

from toolkit import history
from toolkit.atomic import write_text_new
from toolkit.errors import HealthError
from toolkit.glossary import utc_now
from toolkit.health.model import Status, worst

DEFAULT_DIR = "/var/lib/toolkit/health"
PATTERN = "health-*.json"


class LockBusy(HealthError):
    """Another run holds the report folder: this run produced nothing (UNKNOWN)."""

    ref = "locked"  # toolkit/errors.py, the stable references


@contextlib.contextmanager
def locked(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockBusy(
                f"another `toolkit health` run holds {path}; this run is skipped",
                hint="runs must not overlap: lengthen the timer interval if this repeats",
            ) from None
        yield
    finally:
        os.close(fd)


def keep_days(text: str) -> float:
    """`--keep-days`: a number of days, at least 0 (0 keeps only the report just written), as the
    settings file's `keep_days` is checked."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of days, at least 0, not {text}")
    return value


def save(folder: Path, doc: dict, keep_days: float) -> Path:
    """Store `doc` under a name no other report has (two reports of the same second both stay), then
    prune reports older than `keep_days` days; the one just written is never pruned."""
    if not isinstance(keep_days, int | float) or math.isnan(keep_days) or keep_days < 0:
        raise HealthError(
            f"keep_days must be a number of days, at least 0, not {keep_days!r}",
            hint="fix --keep-days or keep_days in the settings file",
        )
    stamp = str(doc["collected_at"]).replace(":", "").replace("-", "")
    path = _write_new(folder, f"health-{stamp}", json.dumps(doc, indent=1, allow_nan=False) + "\n", 0o640)
    cutoff = time.time() - keep_days * 86400
    for old in folder.glob(PATTERN):
        with contextlib.suppress(OSError):
            if old.name != path.name and old.stat().st_mtime < cutoff:
                old.unlink()
    return path


def _write_new(folder: Path, stem: str, text: str, mode: int) -> Path:
    """A new report file, never replacing one stored in the same second (`stem-2.json` ...)."""
    try:
        return write_text_new(folder, stem, text, mode)
    except FileExistsError:
        raise HealthError(f"no free report name for {stem} in {folder}") from None


def _stored(folder: Path, since_days: float | None) -> tuple[list[dict], list[dict]]:
    """The readable stored reports, oldest first, and the files skipped with the reason."""
    docs, skipped = [], []
    cutoff = time.time() - since_days * 86400 if since_days is not None else None
    for f in folder.glob(PATTERN):
        try:
            mtime = f.stat().st_mtime
            if cutoff is not None and mtime < cutoff:
                continue
            doc = json.loads(f.read_text())
        except (OSError, RuntimeError, ValueError) as err:
            reason = "not valid JSON" if isinstance(err, ValueError) else "unreadable"
            skipped.append({"file": str(f), "reason": f"{reason} ({getattr(err, 'strerror', None) or err})"})
            continue
        problem = (
            "not a health report"
            if not isinstance(doc, dict)
            else history.document_problem("health", doc) or _status_problem(doc)
        )
        if problem:
            skipped.append({"file": str(f), "reason": problem})
            continue
        docs.append((str(doc.get("collected_at")), mtime, f.name, doc))
    docs.sort(key=lambda d: d[:3])
    return [d[3] for d in docs], skipped


def _status_problem(doc: dict) -> str | None:
    known = {s.name for s in Status}
    words = [doc.get("status") or "ok", *(c["status"] for c in doc["checks"])]
    bad = [w for w in words if not isinstance(w, str) or w.upper() not in known]
    return f"unknown status word(s): {', '.join(map(str, bad[:3]))}" if bad else None


def _count(checks: dict[str, dict], c: dict, at) -> None:
    status = Status.parse(c["status"])
    entry = checks.setdefault(
        c["name"],
        {
            "name": c["name"],
            "worst": status,
            "runs": 0,
            "not_ok": 0,
            "worst_detail": c.get("detail", ""),
            "worst_at": None,
        },
    )
    entry["runs"] += 1
    if status is not Status.OK:
        entry["not_ok"] += 1
    if status.severity > entry["worst"].severity or (entry["worst_at"] is None and status is not Status.OK):
        entry["worst"], entry["worst_detail"] = status, c.get("detail", "")
        entry["worst_at"] = at
    entry["last"], entry["last_at"] = status, at


def summarise(folder: Path, since_days: float | None = None) -> dict:
    """Worst status per check over the stored reports (oldest first), with counts and last status.
    Files that cannot be read (corrupt, a newer schema, a symlink loop) are counted and listed."""
    docs, skipped = _stored(folder, since_days)
    checks: dict[str, dict] = {}
    reports = []
    for doc in docs:
        reports.append({"collected_at": doc.get("collected_at"), "status": doc.get("status")})
        for c in doc["checks"]:
            _count(checks, c, doc.get("collected_at"))
    rows = sorted(checks.values(), key=lambda e: (-e["worst"].severity, e["name"]))
    for row in rows:
        row["worst"], row["last"] = row["worst"].label, row["last"].label
    return {
        "folder": str(folder),
        "reports": len(reports),
        "unreadable": len(skipped),
        "skipped": skipped,
        "first": reports[0]["collected_at"] if reports else None,
        "last": reports[-1]["collected_at"] if reports else None,
        "status": worst(Status.parse(r["status"]) for r in reports if r["status"]).label
        if reports
        else "unknown",
        "checks": rows,
        "generated_at": utc_now(),
    }
