"""The command the user runs for `toolkit bench --gpus N`: it starts the ranks through torchrun,
follows rank 0's document, and prints and exits like a single-process run.

    python -m torch.distributed.run --standalone --nproc-per-node N -m toolkit bench \\
        <the request's rank options> --distributed-run DIR

When the ranks did not all finish, it completes rank 0's document with the result of the load that
was running (`forensics`) and closes it as a failed run.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from toolkit.bench.distributed.rank import LAUNCH_FILE
from toolkit.bench.document import RunDocument
from toolkit.console import load_progress
from toolkit.errors import EXIT_INTERRUPTED, EXIT_USAGE, ToolkitError, UsageError
from toolkit.glossary import Verdict, verdict_exit_code

SHUTDOWN_TIMEOUT_S = 10  # torchrun: SIGTERM to the other ranks, SIGKILL after this


def check_gpus(n: int, visible_gpus: int | None) -> None:
    """Exit 2 for a process count that cannot run: fewer than 2, or more than the GPUs in sight.

    `visible_gpus` None: a run without a GPU (N CPU processes, allowed as a functional test).
    """
    if n < 2:
        raise UsageError(
            f"--gpus {n}: a distributed run needs at least 2 processes",
            hint="run without --gpus to measure one device",
        )
    if visible_gpus is not None and n > visible_gpus:
        raise UsageError(
            f"--gpus {n}: only {visible_gpus} GPU(s) visible to torch",
            hint="lower --gpus, or check CUDA_VISIBLE_DEVICES",
        )


def _as_record(result: dict):
    from dataclasses import fields

    from toolkit.bench.record import WorkloadRecord

    names = {f.name for f in fields(WorkloadRecord)}
    return WorkloadRecord(**{k: v for k, v in result.items() if k in names})


class _Follower:
    """Prints the run as rank 0 saves it: one line per finished load, a progress bar on a terminal."""

    def __init__(self, path: Path, console):
        self.path, self.console, self.shown = path, console, 0
        self.progress = load_progress(console)
        self.task, self.task_name = None, None

    def poll(self) -> None:
        doc = RunDocument.read(self.path)
        if doc is None:
            return
        for result in doc.results[self.shown :]:
            self.drop_task()
            self.print_result(result)
        self.shown = len(doc.results)
        running = doc.running
        if running:
            name = f"{running['workload']} (rank 0)"
            if self.task_name != name:
                self.drop_task()
                self.task, self.task_name = self.progress.add_task(name, total=None), name
            self.progress.update(self.task, completed=running["completed"], total=running["total"])

    def print_result(self, result: dict) -> None:
        from toolkit.bench import report

        report.print_load_line(self.console, _as_record(result))

    def drop_task(self) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task, self.task_name = None, None


def _parent_death_signal() -> None:
    """torchrun gets SIGTERM if the launcher dies, and stops the ranks (Linux prctl)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def launch(request, *, gpu_class: str, device: str, scale, workloads: list[str], results_dir: Path) -> int:
    """Run the bench in `request.gpus` ranks through torchrun; print and return like a single-process run.

    `request`: the user's BenchRequest; this reads its `gpus`, `threads`, `json`, `debug` and
    `rank_argv()` (the bench options each rank is started with).
    """
    import shutil
    import socket
    import tempfile

    import torch

    from toolkit.bench import report
    from toolkit.console import err, out
    from toolkit.glossary import utc_now

    n, debug = request.gpus, bool(request.debug)
    check_gpus(n, torch.cuda.device_count() if device != "cpu" else None)
    run_dir = Path(tempfile.mkdtemp(prefix="toolkit-bench-ranks-"))
    started = utc_now()
    saved_path = (results_dir / report.result_filename(started, socket.gethostname(), gpu_class)).resolve()
    (run_dir / LAUNCH_FILE).write_text(
        json.dumps({"saved_path": str(saved_path), "started_at": started, "world_size": n}), encoding="utf-8"
    )
    kind = f"{n} GPUs, NCCL" if device != "cpu" else f"{n} CPU processes, gloo: a functional test path"
    err.print(
        f"toolkit bench: profile {gpu_class}, {kind}, scale {scale.name}, loads {', '.join(workloads)}",
        highlight=False,
    )
    follower = _Follower(saved_path, err)
    returncode, interrupted = _run_torchrun(request, run_dir, follower)
    doc = RunDocument.read(saved_path)
    if doc is None:
        if interrupted:
            err.print("Interrupted before the ranks started.")
            return EXIT_INTERRUPTED
        raise ToolkitError(
            f"the {n} ranks did not start (torchrun exited {returncode})",
            hint=f"the ranks' logs are in {run_dir}; run with --debug to see them on the terminal",
            exit_code=EXIT_USAGE,
        )
    failed = not doc.complete
    if failed:
        _complete_failed(doc, run_dir, n, interrupted)
        follower.poll()
    report.publish(doc.as_dict(), saved_path, request.json, out, err)
    if failed and doc.verdict != Verdict.INTERRUPTED and not debug:
        err.print(f"The ranks' logs are kept in {run_dir}", highlight=False)
    elif not debug:
        shutil.rmtree(run_dir, ignore_errors=True)
    if doc.verdict == Verdict.INTERRUPTED:
        err.print("Interrupted: the loads that finished are kept in the saved result.")
    return verdict_exit_code(doc.verdict)


def _command(request, run_dir: Path) -> list[str]:
    n = request.gpus
    return [
        sys.executable,
        *("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n)),
        *("--local-addr", "127.0.0.1", "--monitor-interval", "0.5"),
        *("--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S)),
        *("-m", "toolkit", *(["--debug"] if request.debug else []), "bench"),
        *request.rank_argv(),
        *("--distributed-run", str(run_dir)),
    ]


def _environment(request) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(request.threads or max(1, (os.cpu_count() or 1) // request.gpus)))
    # one host: the ranks talk over loopback only
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env.setdefault("NCCL_SOCKET_IFNAME", "lo")
    return env


def _run_torchrun(request, run_dir: Path, follower: _Follower) -> tuple[int | None, bool]:
    """Start torchrun and follow rank 0's document until it ends; Ctrl-C (or SIGTERM) reaches the
    ranks through torchrun. Returns torchrun's exit code and whether the user interrupted."""
    import subprocess

    interrupted = False
    log = None if request.debug else open(run_dir / "torchrun.log", "w", encoding="utf-8")  # noqa: SIM115
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        proc = subprocess.Popen(
            _command(request, run_dir),
            env=_environment(request),
            stdout=log,
            stderr=log,
            preexec_fn=_parent_death_signal,
        )
        try:
            with follower.progress:
                while proc.poll() is None:
                    follower.poll()
                    time.sleep(0.25)
        except KeyboardInterrupt:
            interrupted = True
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            _stop(proc)
        follower.drop_task()
        follower.poll()
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if log:
            log.close()
    return proc.returncode, interrupted


def _stop(proc) -> None:
    """Ctrl-C: torchrun forwards SIGINT to the ranks; SIGKILL if they are not gone in time."""
    import subprocess

    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=SHUTDOWN_TIMEOUT_S + 20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _complete_failed(doc: RunDocument, run_dir: Path, n: int, interrupted: bool) -> None:
    """The ranks did not all finish: the result of the load that was running, naming the rank that
    failed first, and the run closed as failed (or interrupted), with the loads that did not run."""
    from toolkit.bench.distributed import forensics

    ending = forensics.read_ending(run_dir, n, interrupted)
    result = forensics.failed_load(doc, ending)
    if result is not None:
        doc.add_result(result)
    doc.finish(interrupted=ending.interrupted, failed=True)
