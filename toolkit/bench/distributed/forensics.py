"""How the ranks of a `--gpus N` run that did not all finish ended, and the result of the load that
was running: which rank failed first (its own report, torchrun's failure summary, or a rank that died
without a word), how each rank ended, and how far they got.

A load that raises in one rank leaves the ranks' collectives out of step, so that rank writes what it
reached to DIR/rank-R.json and exits; torchrun stops the others (SIGTERM, SIGKILL after its shutdown
timeout). The launcher reads those reports and torchrun's log here.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
from dataclasses import dataclass
from pathlib import Path

from toolkit.bench.distributed.aggregation import rank_entry
from toolkit.bench.distributed.rank import rank_file
from toolkit.bench.document import RunDocument, failed_result

# errors a rank sees when another rank went away: consequences, not causes
PEER_LOST_MARKERS = (
    "connection reset",
    "connection closed",
    "broken pipe",
    "communicator was aborted",
    "remote process exited",
    "by peer",
)
# torchrun's failure summary: one block per failed rank, the first one again under "Root Cause"
_FAILURE = r"rank\s*:\s*(\d+)\s*\(local_rank:\s*\d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)"


@dataclass
class Ending:
    """What the launcher found once torchrun was gone: each rank's report (None for a rank that
    died without one), the exit codes of the failed ranks, the rank torchrun saw fail first."""

    world_size: int
    states: dict[int, dict | None]
    codes: dict[int, int]
    root: int | None
    interrupted: bool


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_ending(run_dir: Path, world_size: int, interrupted: bool) -> Ending:
    """The ranks' reports and torchrun's summary; `interrupted` also when a rank says it was."""
    states = {r: _read_json(rank_file(run_dir, r)) for r in range(world_size)}
    interrupted = interrupted or any(s and s["state"] == "interrupted" for s in states.values())
    codes, root = exit_codes(run_dir)
    return Ending(world_size, states, codes, root, interrupted)


def exit_codes(run_dir: Path) -> tuple[dict[int, int], int | None]:
    """Global rank -> exit code of the failed ranks, and the rank torchrun saw fail first, from its
    failure summary in torchrun.log (best effort: None when there is no summary)."""
    text = ""
    with contextlib.suppress(OSError):
        text = (run_dir / "torchrun.log").read_text(encoding="utf-8", errors="replace")
    codes = {int(r): int(c) for r, c in re.findall(_FAILURE, text)}
    _, _, root_part = text.rpartition("Root Cause")
    root = re.search(_FAILURE, root_part) if root_part else None
    return codes, int(root[1]) if root else None


def how_it_ended(code: int | None) -> str:
    """A rank without a report, from its exit code: 'was killed by SIGKILL (...)'."""
    if code is None:
        return "ended without a report"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        extra = " (the kernel's out-of-memory killer sends SIGKILL too)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{extra}"
    return f"exited with code {code} without a report"


def lost_a_peer(state: dict) -> bool:
    """A rank whose error is only the consequence of another rank going away."""
    if state["state"] == "peer_lost":
        return True
    message = str((state["record"].get("error") or {}).get("message", "")).lower()
    return any(m in message for m in PEER_LOST_MARKERS)


def root_cause(ending: Ending) -> tuple[int, dict | None]:
    """The rank that failed first, and its report (None for a rank that died without one).

    A rank that reports its own crash comes first; then a rank that died without a report (killed),
    preferring the one torchrun saw first; a rank that only lost its peers comes last."""
    states, codes, root = ending.states, ending.codes, ending.root
    reported = [s for s in states.values() if s and s["state"] in ("crashed", "peer_lost")]
    own = sorted((s for s in reported if not lost_a_peer(s)), key=lambda s: s["at"])
    if own:
        return own[0]["rank"], own[0]
    silent = [r for r in range(ending.world_size) if not states.get(r)]
    if silent:
        who = root if root in silent else next((r for r in silent if r in codes), silent[0])
        return who, None
    lost = sorted(reported, key=lambda s: s["at"])
    if lost:
        return lost[0]["rank"], lost[0]
    return (root if root is not None else 0), None


def _running_load(doc: RunDocument, ending: Ending) -> str | None:
    """The load the ranks were in: a rank's report names it, else rank 0's progress, else the next
    planned load (None when every planned load has a result)."""
    planned, done = doc.planned, len(doc.results)
    reported = [s for s in ending.states.values() if s]
    return next(
        (s["record"]["workload"] for s in reported),
        (doc.running or {}).get("workload") or (planned[done] if done < len(planned) else None),
    )


def _rank_state(rank: int, ending: Ending) -> dict:
    """How one rank ended: its own record and state, or `gone` with how it died."""
    s = ending.states.get(rank)
    if not s:
        return {
            "rank": rank,
            "state": "gone",
            "detail": f"rank {rank} {how_it_ended(ending.codes.get(rank))}",
        }
    entry = rank_entry(rank, s["record"])
    entry["state"] = s["state"]
    if s.get("detail"):
        entry["detail"] = s["detail"]
    return entry


def _error(ending: Ending, reached: list[int]) -> tuple[str, str, str]:
    """(status, kind, message) of the load the ranks did not finish."""
    if ending.interrupted:
        message = "interrupted by the user" + (f" (reached {min(reached)} step(s))" if reached else "")
        return "error", "interrupted", message
    who, report = root_cause(ending)
    error = (report or {}).get("record", {}).get("error") or {}
    if report is not None and error:
        status = "fail" if error.get("kind") == "out_of_memory" else "error"
        kind, message = error.get("kind", "crashed"), f"rank {who} {error.get('message', 'failed')}"
    else:
        status, kind, message = "error", "crashed", f"rank {who} {how_it_ended(ending.codes.get(who))}"
    return status, kind, message + "; the other ranks were stopped"


def failed_load(doc: RunDocument, ending: Ending) -> dict | None:
    """The result of the load that was running when the ranks stopped, naming the rank that failed
    first (or the interruption) and keeping how each rank ended under `ranks`; None when no load was
    running."""
    name = _running_load(doc, ending)
    if name is None:
        return None
    ranks = [_rank_state(r, ending) for r in range(ending.world_size)]
    reached = [
        e["metrics"]["steps_completed"]
        for e in ranks
        if isinstance(e.get("metrics", {}).get("steps_completed"), int)
    ]
    status, kind, message = _error(ending, reached)
    reported = [s for s in ending.states.values() if s]
    return failed_result(
        name,
        status,
        kind,
        message,
        metrics={"steps_completed": min(reached)} if reached else {},
        config=next((s["record"]["config"] for s in reported if s["record"].get("config")), {}),
        duration_seconds=max((e.get("duration_seconds") or 0 for e in ranks), default=None),
        ranks=ranks,
    )
