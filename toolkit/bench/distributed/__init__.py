"""`toolkit bench --gpus N`: the same loads in N processes under torch.distributed, one document.

The command the user runs is the launcher (`launcher.launch`). It checks its arguments like a
single-process run, then starts

    python -m torch.distributed.run --standalone --nproc-per-node N -m toolkit bench \\
        <the same arguments, without --gpus and --json> --distributed-run DIR

Every rank (`rank.Rank`) binds its device (cuda:LOCAL_RANK; on a machine without a GPU, CPU processes
joined by gloo), joins the process group and runs the same loads. The training loads use the
Trainer's own DDP: it finds the process group and the ranks torchrun set. After each load the ranks
hand their records to rank 0 (`gather_object`), which aggregates them (`aggregation`, by the rules
declared in `toolkit.bench.metrics`) and saves the one document; the launcher follows that document,
prints the progress, the table or the JSON, and exits with the run's code. The ranks' own output goes
to DIR/rank-R.log (kept when a run fails; --debug shows everything instead).

On a machine without a GPU this is a functional test of the multi-GPU path: N CPU processes share
the cores, and the figures are CPU figures.

Failures. A load that raises in one rank leaves the ranks' collectives out of step, so that rank
writes what it reached to DIR/rank-R.json and exits; torchrun stops the others (SIGTERM, SIGKILL
after SHUTDOWN_TIMEOUT_S) and the launcher completes the saved document with an error naming the
rank (`forensics`), and lists the loads that did not run. Ctrl-C reaches every rank (from the
terminal, or forwarded by the launcher and torchrun): each records how far it got, and the run exits
130 with the finished loads kept. A rank stuck in a collective is ended by the process group's
timeout (PROCESS_GROUP_TIMEOUT_S).
"""

from __future__ import annotations

from toolkit.bench.distributed.aggregation import aggregate, rule_for, tokens_over_all_ranks
from toolkit.bench.distributed.launcher import SHUTDOWN_TIMEOUT_S, check_gpus, launch
from toolkit.bench.distributed.rank import PROCESS_GROUP_TIMEOUT_S, Rank

__all__ = [
    "PROCESS_GROUP_TIMEOUT_S",
    "SHUTDOWN_TIMEOUT_S",
    "Rank",
    "aggregate",
    "check_gpus",
    "launch",
    "rule_for",
    "tokens_over_all_ranks",
]
