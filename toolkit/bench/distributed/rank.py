"""One rank of a `toolkit bench --gpus N` run: started by torchrun with `--distributed-run DIR`.

It binds its device, joins the process group, hands its record of each load to rank 0 and, when a
load ended it (a crash, out of memory, Ctrl-C, another rank gone), writes what it reached to
DIR/rank-R.json for the launcher and leaves at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from toolkit.bench.document import RunDocument
from toolkit.errors import EXIT_CHECK_FAILED, EXIT_INTERRUPTED, UsageError
from toolkit.glossary import verdict_exit_code

PROCESS_GROUP_TIMEOUT_S = 300  # longest wait in one collective (skew between ranks included)
# a rank whose load ended this way cannot take part in further collectives
FATAL_KINDS = ("crashed", "out_of_memory", "interrupted")
LAUNCH_FILE = "launch.json"  # the launcher's hand-over: where rank 0 saves, when the run started

CPU_NOTE = (
    "CPU processes joined by gloo: a functional test of the multi-GPU path; the processes share "
    "this machine's cores and every figure is a CPU figure"
)


def rank_file(run_dir: Path, rank: int) -> Path:
    """Where a rank that left writes what it reached."""
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
    def start(cls, run_dir: str, debug: bool) -> Rank:
        """This rank, from torchrun's environment and the launcher's hand-over in `run_dir`; without
        `debug` its output goes to run_dir/rank-R.log from here on."""
        folder = Path(run_dir)
        try:
            rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
            world_size = int(os.environ["WORLD_SIZE"])
            launch = json.loads((folder / LAUNCH_FILE).read_text(encoding="utf-8"))
        except (KeyError, ValueError, OSError):
            raise UsageError(
                "--distributed-run is internal to `toolkit bench --gpus N`", hint="use --gpus N"
            ) from None
        if not debug:
            # library noise of every rank goes to its log; the launcher prints the run
            fd = os.open(folder / f"rank-{rank}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
        return cls(folder, rank, local_rank, world_size, launch)

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

    def annotate(self, doc: RunDocument, device: str) -> None:
        """The run's shape in its document: the ranks, the backend, how the results were combined."""
        doc.annotate_distributed(
            self.world_size,
            {
                "world_size": self.world_size,
                "backend": self.backend,
                "launcher": "python -m torch.distributed.run --standalone",
                "devices": f"cuda:0..{self.world_size - 1}, one per rank" if device != "cpu" else CPU_NOTE,
                "process_group_timeout_seconds": PROCESS_GROUP_TIMEOUT_S,
                "aggregation": "rank 0 gathers every rank's record after each load; each result keeps "
                "the ranks under `ranks` and says under `aggregation` how each metric was combined",
            },
        )

    def collect(self, rec, warn_ratio: float) -> dict | None:
        """Hand this rank's record to rank 0; rank 0 gets the aggregate, the others None.

        A rank whose load crashed, ran out of memory or was interrupted leaves instead: its
        collectives are out of step with the other ranks'.
        """
        import torch.distributed as dist

        from toolkit.bench.distributed.aggregation import aggregate

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
        write_text_atomic(rank_file(self.run_dir, self.rank), json.dumps(note, default=str))
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(EXIT_INTERRUPTED if state == "interrupted" else EXIT_CHECK_FAILED)

    def finish(self, doc: RunDocument) -> int:
        """Every load ran in every rank: the document is closed (rank 0 alone saves it), the group
        ends; the run's exit code."""
        import torch.distributed as dist

        verdict = doc.finish()
        try:
            dist.barrier()
            dist.destroy_process_group()
        except Exception:  # the document is saved; a peer gone at the very end changes nothing
            pass
        return verdict_exit_code(verdict)
