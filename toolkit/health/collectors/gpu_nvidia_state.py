"""What the NVIDIA GPU section keeps between two health runs, in the health store's folder: the last XID
event it reported (so an event is alerted once) and each GPU's PCIe replay counter with the time it was
read (so growth is judged as a rate). One small JSON file, written atomically; a missing, unreadable or
foreign file is an empty state, never an error: the next run writes a good one."""

from __future__ import annotations

import json
import time
from pathlib import Path

from toolkit.atomic import write_text_atomic

STATE_FILE = "gpu-state.json"
VERSION = 1


def load(folder: str | Path | None) -> dict:
    if folder is None:
        return {}
    try:
        state = json.loads((Path(folder) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) and state.get("version") == VERSION else {}


def next_state(raw: dict, boot: str | None, now: float | None = None) -> dict:
    """The state this run leaves: the last XID event of this boot and every GPU's replay counter."""
    now = time.time() if now is None else now
    events = (raw.get("xid") or {}).get("events") or []
    replays = {
        gpu["uuid"]: {"count": gpu["pcie_replay_count"], "at": now}
        for gpu in raw.get("gpus") or []
        if gpu.get("uuid") and gpu.get("pcie_replay_count") is not None
    }
    return {
        "version": VERSION,
        "boot_id": boot,
        "xid_last_key": events[-1]["key"] if events else None,
        "pcie_replay": replays,
    }


def save(folder: str | Path | None, state: dict) -> str | None:
    """None when written (or when there is no folder); else why not, for the section's detail."""
    if folder is None:
        return None
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(folder) / STATE_FILE, json.dumps(state, indent=1) + "\n", 0o600)
    except OSError as err:
        return f"GPU state not saved ({err.strerror or err}: {err.filename or folder})"
    return None
