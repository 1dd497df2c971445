"""The time budget of an acceptance run, the child processes the parts run in, and the part files.

Each part has a planned share of the run and a minimum below which it is not started. When a part
starts it gets `left x share / (its share + the shares of the parts after it)`, at least its minimum,
never more than what is left: a part that finishes early leaves its time to the later ones, and a part
that overruns is stopped at its allowance, so the later parts keep theirs. A part that cannot get its
minimum is skipped with that reason. Every part's JSON is written as soon as it ends, atomically, so a
run that is cut short keeps every finished part.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STATUSES = ("done", "failed", "timeout", "skipped")


@dataclass(frozen=True)
class Plan:
    name: str
    share: float  # planned seconds: the part's weight in the budget
    minimum: float  # seconds below which the part is not started


class Budget:
    def __init__(self, total: float, clock: Callable[[], float] = time.monotonic):
        self.total = float(total)
        self.clock = clock
        self.started = clock()

    def spent(self) -> float:
        return self.clock() - self.started

    def left(self) -> float:
        return max(0.0, self.total - self.spent())

    def allowance(self, plan: Plan, later: list[Plan]) -> tuple[float | None, str | None]:
        """(seconds this part may run, None) or (None, why it is skipped)."""
        left = self.left()
        if left < plan.minimum:
            return None, (
                f"budget spent: {left:.0f} s of the {self.total:.0f} s budget left, "
                f"this part needs at least {plan.minimum:.0f} s"
            )
        weight = plan.share + sum(p.share for p in later)
        fair = left * plan.share / weight if weight > 0 else left
        return min(left, max(plan.minimum, fair)), None


def write_json(path: Path, doc: dict) -> Path:
    """Atomically: a reader (or a run cut short) never sees half a file."""
    from toolkit.atomic import write_text_atomic

    return write_text_atomic(path, json.dumps(doc, indent=1, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass
class Child:
    rc: int | None
    timed_out: bool
    seconds: float
    stdout: str
    stderr_tail: str


def run_child(
    cmd: list[str], timeout: float, log: Path, env: dict | None = None, grace: float = 10.0
) -> Child:
    """Run `cmd` in its own process group with its output in `log` (kept, even when cut short).

    At `timeout - grace` it gets SIGINT (`toolkit bench` then finishes its document as interrupted),
    at `timeout` the group gets SIGKILL."""
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120", "PYTHONUNBUFFERED": "1", **(env or {})}
    grace = min(grace, timeout / 4)
    t0 = time.monotonic()
    with (
        open(log, "w", encoding="utf-8") as err,
        open(log.with_suffix(".stdout"), "w+", encoding="utf-8") as out,
    ):
        proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=out, stderr=err, start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=max(0.1, timeout - grace))
        except subprocess.TimeoutExpired:
            timed_out = True
            _signal_group(proc, signal.SIGINT)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        except BaseException:  # the whole run is stopped: its child goes with it, never left running
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
            raise
        out.seek(0)
        stdout = out.read()
    return Child(proc.returncode, timed_out, time.monotonic() - t0, stdout, _tail(log))


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # the group this run started for the child (start_new_session)


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return ""


def child_command(part: str, tiny: bool, result: Path, *extra: str) -> list[str]:
    """This script again, running one part's measuring code in a fresh process."""
    script = REPO / "benchmarks" / "gpu_acceptance.py"
    return [sys.executable, str(script), "--child", part, "--child-out", str(result), *extra] + (
        ["--tiny"] if tiny else []
    )


def outcome_of(child: Child, what: str) -> dict:
    """The part's status from how its process ended: done, timeout (cut at its allowance) or failed."""
    if child.timed_out:
        return {
            "status": "timeout",
            "reason": f"{what} stopped at its time allowance ({child.seconds:.0f} s)",
        }
    if child.rc != 0:
        last = [line for line in child.stderr_tail.splitlines() if line.strip()][-3:]
        return {"status": "failed", "reason": f"{what} exited {child.rc}: {' | '.join(last) or 'no output'}"}
    return {"status": "done", "reason": None}
