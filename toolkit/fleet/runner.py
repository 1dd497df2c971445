"""Run a command on many hosts at once: a bounded pool of workers (`--forks`), a deadline per host, a live
display (host, state, elapsed, the node's last progress line), and a clean stop on Ctrl-C: hosts not yet
started are not started, running ones are told to stop and get a grace period to hand back what they
finished. A second Ctrl-C leaves at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from toolkit.fleet import transport
from toolkit.fleet.targets import Target
from toolkit.glossary import utc_now

DEFAULT_FORKS = 5  # Ansible's default
DEFAULT_CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class RunOptions:
    """How a fleet run reaches and paces its hosts."""

    forks: int  # hosts worked on at once
    timeout: float | None  # per host, from its start; None: no limit
    connect_timeout: float
    strict_host_keys: bool = False


@dataclass
class HostRun:
    target: Target
    state: str = "queued"  # queued | running | done | not_started
    started: float | None = None
    finished: float | None = None
    started_at: str | None = None  # UTC, for the record
    last_line: str = ""
    outcome: transport.Outcome | None = None

    @property
    def elapsed(self) -> float | None:
        if self.started is None:
            return None
        return (self.finished or time.monotonic()) - self.started


class _Display:
    """A live table on a terminal; one line per finished host elsewhere (logs, CI)."""

    def __init__(self, console, title: str, runs: list[HostRun], label: Callable[[HostRun], str]):
        self.console, self.title, self.runs, self.label = console, title, runs, label
        self.live = None
        if console.is_terminal:
            from rich.live import Live

            self.live = Live(self._table(), console=console, refresh_per_second=4, transient=True)

    def _table(self):
        from rich.markup import escape
        from rich.table import Table

        done = sum(r.state in ("done", "not_started") for r in self.runs)
        table = Table(title=f"{self.title} · {done}/{len(self.runs)} hosts done", title_justify="left")
        for col in ("host", "state", "time", "last line"):
            table.add_column(col, no_wrap=True, overflow="ellipsis")
        for r in self.runs:
            elapsed = r.elapsed
            table.add_row(
                r.target.name,
                self.label(r),
                f"{elapsed:.0f} s" if elapsed is not None else "",
                escape(r.last_line[-80:]),
            )
        return table

    def __enter__(self):
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.live.__exit__(*exc)

    def refresh(self) -> None:
        if self.live:
            self.live.update(self._table())

    def finished(self, run: HostRun) -> None:
        if not self.live:
            self.console.print(
                f"{run.target.name}: {self.label(run)} in {run.elapsed or 0:.1f} s", highlight=False
            )


def run_all(
    targets: list[Target],
    script_for: Callable[[Target], str],
    options: RunOptions,
    *,
    console,
    title: str,
    label: Callable[[HostRun], str],
    on_done: Callable[[HostRun], None],
) -> tuple[list[HostRun], bool]:
    """Every target's run (in inventory order) and whether the user interrupted."""
    runs = [HostRun(t) for t in targets]
    cancel = threading.Event()

    def work(r: HostRun) -> HostRun:
        if cancel.is_set():
            r.state = "not_started"
            return r
        r.state, r.started = "running", time.monotonic()
        r.started_at = utc_now()

        def line(text: str) -> None:
            if not text.startswith(transport.VERSION_PREFIX):
                r.last_line = text

        try:
            r.outcome = transport.run(
                r.target,
                script_for(r.target),
                options.timeout,
                options.connect_timeout,
                cancel,
                line,
                options.strict_host_keys,
            )
        except Exception as err:  # one host's surprise (a paramiko corner) must not end the others' runs
            r.outcome = transport.Outcome("unreachable", None, "", "", f"{type(err).__name__}: {err}")
        r.finished = time.monotonic()
        r.state = "done"
        return r

    interrupted = False
    pool = ThreadPoolExecutor(max_workers=max(1, options.forks), thread_name_prefix="fleet")
    futures = [pool.submit(work, r) for r in runs]
    handed: set[Future] = set()
    with _Display(console, title, runs, label) as display:
        while len(handed) < len(futures):
            try:
                wait([f for f in futures if f not in handed], timeout=0.25, return_when=FIRST_COMPLETED)
                # each finished host is handed over once; a Ctrl-C landing mid-hand-over repeats it
                for future in futures:
                    if future.done() and future not in handed:
                        r = future.result()
                        if r.state == "done":
                            on_done(r)
                            display.finished(r)
                        handed.add(future)
                display.refresh()
            except KeyboardInterrupt:
                if interrupted:
                    raise  # the second Ctrl-C: leave now
                interrupted = True
                cancel.set()
                console.print("Interrupted: stopping the running hosts (Ctrl-C again to leave now)")
    pool.shutdown(wait=True)
    return runs, interrupted
