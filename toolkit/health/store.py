"""Stored reports of a node: one JSON file per run in the report folder, written atomically, pruned after
`keep_days`, with a lock so two runs (the timer and a person) never overlap. `summarise()` is --history."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

from toolkit.atomic import write_text_atomic
from toolkit.errors import HealthError
from toolkit.glossary import utc_now
from toolkit.health.model import Status, worst

DEFAULT_DIR = "/var/lib/toolkit/health"
PATTERN = "health-*.json"


class LockBusy(HealthError):
    """Another run holds the report folder: this run produced nothing (UNKNOWN)."""


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


def save(folder: Path, doc: dict, keep_days: float) -> Path:
    stamp = doc["collected_at"].replace(":", "").replace("-", "")
    path = write_text_atomic(folder / f"health-{stamp}.json", json.dumps(doc, indent=1) + "\n", mode=0o640)
    cutoff = time.time() - keep_days * 86400
    for old in folder.glob(PATTERN):
        with contextlib.suppress(OSError):
            if old.stat().st_mtime < cutoff:
                old.unlink()
    return path


def summarise(folder: Path, since_days: float | None = None) -> dict:
    """Worst status per check over the stored reports (oldest first), with counts and last status."""
    files = sorted(folder.glob(PATTERN))
    if since_days is not None:
        cutoff = time.time() - since_days * 86400
        files = [f for f in files if f.stat().st_mtime >= cutoff]
    checks: dict[str, dict] = {}
    reports, unreadable = [], 0
    for f in files:
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            unreadable += 1
            continue
        reports.append({"collected_at": doc.get("collected_at"), "status": doc.get("status")})
        for c in doc.get("checks", []):
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
            if status.severity > entry["worst"].severity or (
                entry["worst_at"] is None and status is not Status.OK
            ):
                entry["worst"], entry["worst_detail"] = status, c.get("detail", "")
                entry["worst_at"] = doc.get("collected_at")
            entry["last"], entry["last_at"] = status, doc.get("collected_at")
    rows = sorted(checks.values(), key=lambda e: (-e["worst"].severity, e["name"]))
    for row in rows:
        row["worst"], row["last"] = row["worst"].label, row["last"].label
    return {
        "folder": str(folder),
        "reports": len(reports),
        "unreadable": unreadable,
        "first": reports[0]["collected_at"] if reports else None,
        "last": reports[-1]["collected_at"] if reports else None,
        "status": worst(Status.parse(r["status"]) for r in reports if r["status"]).label
        if reports
        else "unknown",
        "checks": rows,
        "generated_at": utc_now(),
    }
