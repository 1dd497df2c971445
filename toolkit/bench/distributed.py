"""`toolkit bench --gpus N`: the same loads in N processes under torch.distributed, one document.

The command the user runs is the launcher. It checks its arguments like a single-process
run, then starts

    python -m torch.distributed.run --standalone --nproc-per-node N -m toolkit bench \\
        <the same arguments, without --gpus and --json> --distributed-run DIR

Every rank binds its device (cuda:LOCAL_RANK; on a machine without a GPU, CPU processes
joined by gloo), joins the process group and runs the same loads. The training loads
use the Trainer's own DDP: it finds the process group and the ranks torchrun set. After
each load the ranks hand their records to rank 0 (`gather_object`), which aggregates
them and saves the one document; the launcher follows that document, prints the
progress, the table or the JSON, and exits with the run's code. The ranks' own output
goes to DIR/rank-R.log (kept when a run fails; --debug shows everything instead).

On a machine without a GPU this is a functional test of the multi-GPU path: N CPU
processes share the cores, and the figures are CPU figures.

Failures. A load that raises in one rank leaves the ranks' collectives out of step, so
that rank writes what it reached to DIR/rank-R.json and exits; torchrun stops the
others (SIGTERM, SIGKILL after SHUTDOWN_TIMEOUT_S) and the launcher completes the saved
document with an error naming the rank, and lists the loads that did not run. Ctrl-C
reaches every rank (from the terminal, or forwarded by the launcher and torchrun): each
records how far it got, and the run exits 130 with the finished loads kept. A rank stuck
in a collective is ended by the process group's timeout (PROCESS_GROUP_TIMEOUT_S).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

from toolkit.errors import EXIT_CHECK_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, ToolkitError, UsageError

SHUTDOWN_TIMEOUT_S = 10  # torchrun: SIGTERM to the other ranks, SIGKILL after this
PROCESS_GROUP_TIMEOUT_S = 300  # longest wait in one collective (skew between ranks included)
# a rank whose load ended this way cannot take part in further collectives
FATAL_KINDS = ("crashed", "out_of_memory", "interrupted")
# options of `toolkit bench` the launcher keeps for itself
LAUNCHER_ONLY = ("gpus", "json", "distributed_run", "help")
STATUS_ORDER = {"skipped": -1, "pass": 0, "warn": 1, "fail": 2, "error": 3}

CPU_NOTE = (
    "CPU processes joined by gloo: a functional test of the multi-GPU path; the processes share "
    "this machine's cores and every figure is a CPU figure"
)


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


def rank_arguments(args: argparse.Namespace, add_arguments) -> list[str]:
    """The `toolkit bench` options the user gave, rebuilt from the parsed arguments, minus the
    launcher's own: every option a later change adds is passed on without being listed here."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    argv: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest in LAUNCHER_ONLY:
            continue
        value = getattr(args, action.dest, action.default)
        if value is None or value == action.default:
            continue
        option = next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])
        if action.nargs == 0:
            argv.append(option)
        elif isinstance(value, list):
            for item in value:
                argv += [option, str(item)]
        else:
            argv += [option, str(value)]
    return argv


# --------------------------------------------------------------------------- aggregation


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def tokens_over_all_ranks(record: dict) -> bool:
    """True when a load's token count already covers every rank.

    The Trainer gathers `num_input_tokens_seen` over the processes, so under DDP each rank's
    tokens/s is all ranks' tokens over that rank's time; summing the ranks would count them N times.
    """
    config = record.get("config") or {}
    scope = config.get("tokens_scope")
    if scope:
        return scope == "all_ranks"
    return "num_input_tokens_seen" in str(config.get("tokens_counted", ""))


def rule_for(metric: str, all_ranks_tokens: bool) -> str:
    """How the ranks' values of one metric combine: sum, slowest (min), max, min, or rank0."""
    if re.search(r"_per_second(_|$)", metric):
        if all_ranks_tokens and ("tokens_per_second" in metric or metric.startswith("flops_per_second")):
            return "all_ranks"
        return "sum"
    if "_seconds" in metric or metric.endswith("_bytes"):
        return "max"
    if metric == "steps_completed":
        return "min"
    return "rank0"


RULE_TEXT = {
    "sum": "sum over the ranks",
    "all_ranks": "the Trainer counts the tokens of all ranks (num_input_tokens_seen is gathered): "
    "that count over the slowest rank's time, i.e. the lowest rank figure",
    "max": "highest rank (slowest step, largest memory)",
    "min": "lowest rank",
    "rank0": "rank 0's value",
}


def aggregate(records: list[dict], warn_ratio: float, shared_cores: bool = False) -> dict:
    """One result from the ranks' records of the same load, with the ranks kept under `ranks`.

    `shared_cores`: CPU processes on one machine. The CPU floors were set for one process with
    every core, so a shortfall of N processes sharing them warns and never fails.
    """
    from toolkit.bench.record import WorkloadRecord

    n = len(records)
    base = records[0]
    out = WorkloadRecord(base["workload"])
    out.config, out.flops, out.warmup = base["config"], base["flops"], base["warmup"]
    out.notes = list(base["notes"])
    out.duration_seconds = max((r["duration_seconds"] or 0) for r in records)
    same = bool(base["config"].get("same_on_all_ranks"))
    all_ranks = tokens_over_all_ranks(base)
    rules: dict[str, str] = {}
    for metric, value in base["metrics"].items():
        values = [r["metrics"].get(metric) for r in records]
        # a load whose figures are the same on every rank still has its own memory per rank
        if (same and not metric.endswith("memory_bytes")) or not all(_is_number(v) for v in values):
            out.metrics[metric] = value
            continue
        rule = rule_for(metric, all_ranks)
        rules[metric] = RULE_TEXT[rule]
        if rule == "sum":
            out.metrics[metric] = sum(values)
        elif rule in ("all_ranks", "min"):
            out.metrics[metric] = min(values)
        elif rule == "max":
            out.metrics[metric] = max(values)
        else:
            out.metrics[metric] = value
        if rule != "rank0" and metric != "steps_completed":
            out.metrics[f"{metric}_per_rank"] = values
    mfu = [r["metrics"].get("mfu_ratio") for r in records]
    flops = [r["metrics"].get("flops_per_second") for r in records]
    if not same and all(_is_number(m) and m > 0 for m in mfu) and all(_is_number(f) for f in flops):
        # aggregate FLOP/s over the sum of the ranks' peaks (each rank's peak = its FLOP/s / its MFU)
        out.metrics["mfu_ratio"] = out.metrics["flops_per_second"] / sum(
            f / m for f, m in zip(flops, mfu, strict=True)
        )
        rules["mfu_ratio"] = "aggregate FLOP/s over the sum of the ranks' peaks"
    for metric, entry in base["expected"].items():
        additive = not same and rule_for(metric, all_ranks) in ("sum", "all_ranks")
        basis = entry["basis"].removeprefix("no expectation: ")
        minimum = entry.get("min")
        if additive and minimum is not None:
            mins = [r["expected"].get(metric, {}).get("min") for r in records]
            minimum = sum(mins) if all(_is_number(m) for m in mins) else None
            basis = f"sum of the {n} ranks' minimums, each: {basis}"
        if shared_cores and minimum is not None:
            basis += f" (a floor set for one process using every core; {n} processes share them here)"
        out.check(
            metric,
            minimum,
            basis,
            warn_ratio,
            entry.get("floor_source"),
            calibrated=entry.get("calibrated", True) and not shared_cores,
        )
    errors = [(i, r) for i, r in enumerate(records) if r.get("error")]
    if errors:
        _, worst = max(errors, key=lambda e: STATUS_ORDER.get(e[1]["status"], 3))
        ranks = ", ".join(str(i) for i, _ in errors)
        out.fail(worst["status"], worst["error"]["kind"], f"rank {ranks}: {worst['error']['message']}")
    elif all(r["status"] == "skipped" for r in records):
        out.status = "skipped"
    else:
        out.settle()
    doc = out.as_dict()
    steps = [r["metrics"].get("step_time_seconds_p50") for r in records]
    timed = steps if all(_is_number(s) for s in steps) else [r["duration_seconds"] or 0 for r in records]
    doc["aggregation"] = {
        "world_size": n,
        "rules": rules if not same else "every rank reports the same figures: rank 0's are kept",
        "slowest_rank": max(range(n), key=timed.__getitem__),
        "slowest_by": "step_time_seconds_p50" if timed is steps else "duration_seconds",
    }
    doc["ranks"] = [_rank_entry(i, r) for i, r in enumerate(records)]
    return doc


def _rank_entry(rank: int, record: dict) -> dict:
    entry = {
        "rank": rank,
        "metrics": record.get("metrics", {}),
        "warmup": record.get("warmup", {}),
        "duration_seconds": record.get("duration_seconds"),
    }
    if record.get("error"):
        entry["error"] = record["error"]
    return entry


def overall_verdict(results: list[dict]) -> str:
    if not results:
        return "error"
    worst = max((r["status"] for r in results), key=STATUS_ORDER.__getitem__)
    return "pass" if worst == "skipped" else worst


# --------------------------------------------------------------------------- a rank


def _rank_file(run_dir: Path, rank: int) -> Path:
    return run_dir / f"rank-{rank}.json"


class Rank:
    """This process's place in a `--gpus N` run: started by torchrun with `--distributed-run DIR`."""

    def __init__(self, run_dir: Path, rank: int, local_rank: int, world_size: int, launch: dict):
        self.run_dir, self.rank, self.local_rank, self.world_size = run_dir, rank, local_rank, world_size
        self.saved_path = Path(launch["saved_path"])
        self.started_at = launch["started_at"]
        self.backend = "gloo"
        self.terminated = False  # SIGTERM: torchrun stops the group because another rank failed

    @classmethod
    def from_args(cls, args) -> Rank:
        run_dir = Path(args.distributed_run)
        try:
            rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
            world_size = int(os.environ["WORLD_SIZE"])
            launch = json.loads((run_dir / "launch.json").read_text(encoding="utf-8"))
        except (KeyError, ValueError, OSError):
            raise UsageError(
                "--distributed-run is internal to `toolkit bench --gpus N`", hint="use --gpus N"
            ) from None
        if not getattr(args, "debug", False):
            # library noise of every rank goes to its log; the launcher prints the run
            fd = os.open(run_dir / f"rank-{rank}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
        return cls(run_dir, rank, local_rank, world_size, launch)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def on_sigterm(self, signum, frame):
        """torchrun sends SIGTERM to the remaining ranks when one fails (Ctrl-C comes as SIGINT)."""
        self.terminated = True
        raise KeyboardInterrupt

    def init_process_group(self, device: str) -> None:
        """Bind cuda:LOCAL_RANK (NCCL) or stay on the CPU (gloo), with a timeout on every collective."""
        from datetime import timedelta

        import torch
        import torch.distributed as dist

        kwargs = {}
        if device != "cpu":
            torch.cuda.set_device(self.local_rank)
            self.backend = "nccl"
            kwargs["device_id"] = torch.device("cuda", self.local_rank)
        dist.init_process_group(
            backend=self.backend, timeout=timedelta(seconds=PROCESS_GROUP_TIMEOUT_S), **kwargs
        )

    def annotate(self, doc: dict, device: str) -> None:
        doc["configuration"]["gpus"] = self.world_size
        doc["distributed"] = {
            "world_size": self.world_size,
            "backend": self.backend,
            "launcher": "python -m torch.distributed.run --standalone",
            "devices": f"cuda:0..{self.world_size - 1}, one per rank" if device != "cpu" else CPU_NOTE,
            "process_group_timeout_seconds": PROCESS_GROUP_TIMEOUT_S,
            "aggregation": "rank 0 gathers every rank's record after each load; each result keeps the "
            "ranks under `ranks` and says under `aggregation` how each metric was combined",
        }

    def collect(self, rec, warn_ratio: float) -> dict | None:
        """Hand this rank's record to rank 0; rank 0 gets the aggregate, the others None.

        A rank whose load crashed, ran out of memory or was interrupted leaves instead: its
        collectives are out of step with the other ranks'.
        """
        import torch.distributed as dist

        if rec.error and rec.error["kind"] in FATAL_KINDS:
            self.leave(rec, "interrupted" if rec.error["kind"] == "interrupted" else "crashed")
        gathered = [None] * self.world_size if self.is_main else None
        try:
            dist.gather_object(rec.as_dict(), gathered, dst=0)
        except KeyboardInterrupt:
            self.leave(rec, "interrupted")
        except Exception as exc:  # a rank that died: the launcher names it
            self.leave(rec, "peer_lost", f"{type(exc).__name__}: {str(exc).strip()[:300]}")
        return aggregate(gathered, warn_ratio, shared_cores=self.backend == "gloo") if self.is_main else None

    def leave(self, rec, state: str, detail: str | None = None) -> None:
        """Write what this rank reached for the launcher, then exit at once (no collective runs again)."""
        from toolkit.atomic import write_text_atomic

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if state == "interrupted" and self.terminated:
            state = "stopped"
        note = {
            "rank": self.rank,
            "state": state,
            "at": time.time(),
            "detail": detail,
            "record": rec.as_dict(),
        }
        write_text_atomic(_rank_file(self.run_dir, self.rank), json.dumps(note, default=str))
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(EXIT_INTERRUPTED if state == "interrupted" else EXIT_CHECK_FAILED)

    def finish(self, doc: dict, save) -> int:
        """Every load ran in every rank: rank 0 completes and saves the document."""
        import torch.distributed as dist

        from toolkit.bench.report import utc_now

        doc.pop("in_progress", None)
        doc["verdict"] = overall_verdict(doc["results"])
        doc["complete"] = True
        doc["finished_at"] = utc_now()
        if self.is_main:
            save()
        try:
            dist.barrier()
            dist.destroy_process_group()
        except Exception:  # the document is saved; a peer gone at the very end changes nothing
            pass
        return EXIT_CHECK_FAILED if doc["verdict"] in ("fail", "error") else EXIT_OK


# --------------------------------------------------------------------------- the launcher


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _as_record(result: dict):
    from dataclasses import fields

    from toolkit.bench.record import WorkloadRecord

    names = {f.name for f in fields(WorkloadRecord)}
    return WorkloadRecord(**{k: v for k, v in result.items() if k in names})


class _Follower:
    """Prints the run as rank 0 saves it: one line per finished load, a progress bar on a terminal."""

    def __init__(self, path: Path, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.path, self.console, self.shown = path, console, 0
        self.progress = Progress(
            TextColumn("{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self.task, self.task_name = None, None

    def poll(self) -> None:
        doc = _read_json(self.path)
        if doc is None:
            return
        for result in doc["results"][self.shown :]:
            self._drop_task()
            self.print_result(result)
        self.shown = len(doc["results"])
        running = doc.get("in_progress")
        if running:
            name = f"{running['workload']} (rank 0)"
            if self.task_name != name:
                self._drop_task()
                self.task, self.task_name = self.progress.add_task(name, total=None), name
            self.progress.update(self.task, completed=running["completed"], total=running["total"])

    def print_result(self, result: dict) -> None:
        from rich.markup import escape

        from toolkit.bench import report

        line = escape(report.summary_line(_as_record(result)))
        style = report.STATUS_STYLE.get(result["status"], "")
        self.console.print(f"[{style}]{result['status']:>5}[/] {result['workload']}: {line}", highlight=False)

    def _drop_task(self) -> None:
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


def launch(
    args, add_arguments, *, profile: str, device: str, scale, workloads: list[str], results_dir: Path
) -> int:
    """Run the bench in `args.gpus` ranks through torchrun; print and return like a single-process run."""
    import shutil
    import socket
    import subprocess
    import tempfile

    import torch

    from toolkit.bench import report
    from toolkit.console import err, out

    n = args.gpus
    check_gpus(n, torch.cuda.device_count() if device != "cpu" else None)
    debug = bool(getattr(args, "debug", False))
    run_dir = Path(tempfile.mkdtemp(prefix="toolkit-bench-ranks-"))
    started = report.utc_now()
    saved_path = (results_dir / report.result_filename(started, socket.gethostname(), profile)).resolve()
    (run_dir / "launch.json").write_text(
        json.dumps({"saved_path": str(saved_path), "started_at": started, "world_size": n}), encoding="utf-8"
    )
    command = [
        sys.executable,
        *("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n)),
        *("--local-addr", "127.0.0.1", "--monitor-interval", "0.5"),
        *("--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S)),
        *("-m", "toolkit", *(["--debug"] if debug else []), "bench"),
        *rank_arguments(args, add_arguments),
        *("--distributed-run", str(run_dir)),
    ]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(args.threads or max(1, (os.cpu_count() or 1) // n)))
    # one host: the ranks talk over loopback only
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env.setdefault("NCCL_SOCKET_IFNAME", "lo")
    kind = f"{n} GPUs, NCCL" if device != "cpu" else f"{n} CPU processes, gloo: a functional test path"
    err.print(
        f"toolkit bench: profile {profile}, {kind}, scale {scale.name}, loads {', '.join(workloads)}",
        highlight=False,
    )
    follower = _Follower(saved_path, err)
    interrupted = False
    log = None if debug else open(run_dir / "torchrun.log", "w", encoding="utf-8")  # noqa: SIM115
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=log, preexec_fn=_parent_death_signal)
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
        follower._drop_task()
        follower.poll()
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if log:
            log.close()

    doc = _read_json(saved_path)
    if doc is None:
        if interrupted:
            err.print("Interrupted before the ranks started.")
            return EXIT_INTERRUPTED
        raise ToolkitError(
            f"the {n} ranks did not start (torchrun exited {proc.returncode})",
            hint=f"the ranks' logs are in {run_dir}; run with --debug to see them on the terminal",
            exit_code=EXIT_USAGE,
        )
    failed = not doc.get("complete")
    if failed:
        states = {r: _read_json(_rank_file(run_dir, r)) for r in range(n)}
        interrupted = interrupted or any(s and s["state"] == "interrupted" for s in states.values())
        codes, root = _exit_codes(run_dir)
        _complete_failed(doc, states, codes, root, interrupted, n)
        report.save(doc, saved_path)
        follower.poll()
    report.publish(doc, saved_path, args.json, out, err)
    if failed and doc["verdict"] != "interrupted" and not debug:
        err.print(f"The ranks' logs are kept in {run_dir}", highlight=False)
    elif not debug:
        shutil.rmtree(run_dir, ignore_errors=True)
    if doc["verdict"] == "interrupted":
        err.print("Interrupted: the loads that finished are kept in the saved result.")
        return EXIT_INTERRUPTED
    return EXIT_CHECK_FAILED if doc["verdict"] in ("fail", "error") else EXIT_OK


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


def _exit_codes(run_dir: Path) -> tuple[dict[int, int], int | None]:
    """Global rank -> exit code of the failed ranks, and the rank torchrun saw fail first, from its
    failure summary in torchrun.log (best effort: None when there is no summary)."""
    text = ""
    with contextlib.suppress(OSError):
        text = (run_dir / "torchrun.log").read_text(encoding="utf-8", errors="replace")
    pattern = r"rank\s*:\s*(\d+)\s*\(local_rank:\s*\d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)"
    codes = {int(r): int(c) for r, c in re.findall(pattern, text)}
    _, _, root_part = text.rpartition("Root Cause")
    root = re.search(pattern, root_part) if root_part else None
    return codes, int(root[1]) if root else None


def _how_it_ended(code: int | None) -> str:
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


# errors a rank sees when another rank went away: consequences, not causes
PEER_LOST_MARKERS = (
    "connection reset",
    "connection closed",
    "broken pipe",
    "communicator was aborted",
    "remote process exited",
    "by peer",
)


def _lost_a_peer(state: dict) -> bool:
    if state["state"] == "peer_lost":
        return True
    message = str((state["record"].get("error") or {}).get("message", "")).lower()
    return any(m in message for m in PEER_LOST_MARKERS)


def _root_cause(states: dict, codes: dict[int, int], root: int | None, n: int) -> tuple[int, dict | None]:
    """The rank that failed first, and its report (None for a rank that died without one).

    A rank that reports its own crash comes first; then a rank that died without a report (killed),
    preferring the one torchrun saw first; a rank that only lost its peers comes last."""
    reported = [s for s in states.values() if s and s["state"] in ("crashed", "peer_lost")]
    own = sorted((s for s in reported if not _lost_a_peer(s)), key=lambda s: s["at"])
    if own:
        return own[0]["rank"], own[0]
    silent = [r for r in range(n) if not states.get(r)]
    if silent:
        who = root if root in silent else next((r for r in silent if r in codes), silent[0])
        return who, None
    lost = sorted(reported, key=lambda s: s["at"])
    if lost:
        return lost[0]["rank"], lost[0]
    return (root if root is not None else 0), None


def _complete_failed(
    doc: dict, states: dict, codes: dict[int, int], root: int | None, interrupted: bool, n: int
) -> None:
    """The launcher's part when the ranks did not all finish: one result for the load that was
    running, naming the rank that failed first, and the loads that did not run."""
    from toolkit.bench.report import utc_now

    planned = doc["configuration"]["workloads"]
    done = len(doc["results"])
    reported = [s for s in states.values() if s]
    name = next(
        (s["record"]["workload"] for s in reported),
        (doc.get("in_progress") or {}).get("workload") or (planned[done] if done < len(planned) else None),
    )
    doc.pop("in_progress", None)
    if name is not None:
        ranks = []
        for r in range(n):
            s = states.get(r)
            if s:
                entry = _rank_entry(r, s["record"])
                entry["state"] = s["state"]
                if s.get("detail"):
                    entry["detail"] = s["detail"]
            else:
                entry = {"rank": r, "state": "gone", "detail": f"rank {r} {_how_it_ended(codes.get(r))}"}
            ranks.append(entry)
        reached = [
            e["metrics"]["steps_completed"]
            for e in ranks
            if isinstance(e.get("metrics", {}).get("steps_completed"), int)
        ]
        if interrupted:
            status, kind = "error", "interrupted"
            message = "interrupted by the user" + (f" (reached {min(reached)} step(s))" if reached else "")
        else:
            who, report = _root_cause(states, codes, root, n)
            error = (report or {}).get("record", {}).get("error") or {}
            if report is not None and error:
                status = "fail" if error.get("kind") == "out_of_memory" else "error"
                kind, message = error.get("kind", "crashed"), f"rank {who} {error.get('message', 'failed')}"
            else:
                status, kind, message = "error", "crashed", f"rank {who} {_how_it_ended(codes.get(who))}"
            message += "; the other ranks were stopped"
        config = next((s["record"]["config"] for s in reported if s["record"].get("config")), {})
        doc["results"].append(
            {
                "workload": name,
                "status": status,
                "metrics": {"steps_completed": min(reached)} if reached else {},
                "expected": {},
                "warmup": {},
                "config": config,
                "flops": {},
                "notes": [],
                "duration_seconds": max((e.get("duration_seconds") or 0 for e in ranks), default=None),
                "error": {"kind": kind, "message": message},
                "ranks": ranks,
            }
        )
    verdict = overall_verdict(doc["results"])
    # the ranks did not all finish: never a passing run
    doc["verdict"] = "interrupted" if interrupted else verdict if verdict in ("fail", "error") else "error"
    doc["complete"] = False
    doc["finished_at"] = utc_now()
    not_run = planned[planned.index(name) + 1 :] if name in planned else planned[done:]
    if not_run:
        doc["not_run"] = not_run
