"""`toolkit bench`: run the reference loads and say whether this node reaches its GPU class's figures.

This module is the command line only: it declares the options and sends the parsed request to what
does the work (docs/ARCHITECTURE.md): `--list`, `--plan`, a fleet run (`-i`), the `--gpus N`
launcher, or one session on this machine (`toolkit.bench.session`).

Exit codes (docs/REFERENCE.md): 0 every check passed (warnings allowed), 1 a check
failed (below expectation, out of memory, crashed), 2 usage or environment
error, 130 interrupted (finished loads are kept in the saved result).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gpu",
        "--profile",
        dest="profile",
        metavar="CLASS",
        help="GPU class to measure against (see `toolkit gpus`), or `cpu`; default: detected",
    )
    parser.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="run even when the detected device is not the requested class (the report says so)",
    )
    parser.add_argument(
        "--workloads",
        metavar="A,B",
        help="loads to run: matmul, memory_bandwidth, kto_lora, inference, vectors (default: all)",
    )
    parser.add_argument(
        "--burn-in",
        metavar="DURATION",
        help="burn-in instead of the loads (not with --workloads/--recipe): sustained matmul for DURATION "
        "(90s, 10m, 1h, or seconds) on every visible GPU (fp32 on the CPU profile), each result checked "
        "against the first one, while NVML samples temperature, power, clocks and throttle reasons",
    )
    parser.add_argument(
        "--scale",
        choices=("tiny", "small", "full"),
        help="size of the loads (default: small on the CPU, full on a GPU)",
    )
    parser.add_argument(
        "--json", metavar="PATH", help="also write the JSON document to PATH (`-` for stdout)"
    )
    parser.add_argument(
        "--results-dir",
        metavar="DIR",
        help="folder for the saved run (default: $TOOLKIT_RESULTS_DIR or ./results)",
    )
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch (default: torch's)")
    parser.add_argument(
        "--kto-loss",
        metavar="LOSS",
        help="LLaMA-Factory pref_loss for the KTO load: kto, apo_zero_unpaired, or kto_pair "
        "(mapped to kto); default: the A40 KTO recipe's (kto_pair)",
    )
    parser.add_argument(
        "--list", action="store_true", help="list the shipped training recipes and architectures, then exit"
    )
    parser.add_argument(
        "--recipe",
        dest="recipes",
        action="append",
        default=[],
        metavar="NAME|FILE.yaml",
        help="training recipe to run: a shipped one (see --list) or a LLaMA-Factory training YAML "
        "(repeatable; keys it cannot honour are listed)",
    )
    parser.add_argument(
        "--arch",
        metavar="NAME",
        help="architecture for a recipe whose model is not named (see --list), e.g. gemma2-9b",
    )
    parser.add_argument(
        "--model",
        metavar="PATH_OR_ID",
        help="real weights from a local folder or the local Hugging Face cache instead of synthetic "
        "weights (nothing is downloaded)",
    )
    parser.add_argument(
        "--engine",
        choices=("trl", "llamafactory"),
        default="trl",
        help="trainer that runs each --recipe: trl (toolkit's own TRL + PEFT run, default) or llamafactory "
        "(LLaMA-Factory itself, in the environment scripts/install_llamafactory.sh creates; same metrics)",
    )
    parser.add_argument(
        "--plan",
        action="store_true",
        help="estimate each recipe's memory against the profile(s) and say whether it fits; runs nothing "
        "(--gpu takes a comma-separated list here)",
    )
    parser.add_argument(
        "--qdrant-url",
        metavar="URL",
        help="run the vectors load against this Qdrant server (REST, e.g. http://HOST:6333) in a collection "
        "of its own, created and deleted; default: Qdrant in-process (qdrant-edge)",
    )
    parser.add_argument(
        "--qdrant-api-key-env",
        metavar="VAR",
        help="name of the environment variable that holds the Qdrant API key (the key never goes on the "
        "command line)",
    )
    parser.add_argument(
        "--gpus",
        type=int,
        metavar="N",
        help="run the loads in N processes, one per GPU, under torch.distributed (DDP for training) and "
        "add the all-reduce bus-bandwidth load; without a GPU, N CPU processes with gloo (a functional test)",
    )
    # internal: a rank of a --gpus run, started by torchrun; DIR holds the run's hand-over files
    parser.add_argument("--distributed-run", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument(
        "--compare",
        metavar="last|PATH",
        help="compare the figures with an earlier result: `last` (the newest stored run of this host and "
        "profile in the results folder) or a result file; moves beyond --threshold are marked",
    )
    parser.add_argument(
        "--threshold",
        metavar="FRACTION",
        help="with --compare: a move larger than this is a regression or an improvement (default 5%%)",
    )
    parser.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="with --compare: exit 1 when a figure regressed beyond the threshold",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="an acceptance run: refuse to start (exit 2) when other processes use the machine (at least "
        "a quarter of a core per core, or 5%% steal, or another process on the GPU); without it such a run "
        "goes on and a load that falls short is inconclusive",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and data (default 0)")
    from toolkit.fleet.options import add_arguments as add_fleet_arguments

    add_fleet_arguments(parser, default_timeout="4 h")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="LOAD.FIELD=VALUE",
        help="override a load's size for this run, e.g. kto_lora.batch_size=8 (repeatable; "
        "the report records it)",
    )
    from toolkit.bench.serving.options import add_arguments as add_serving_arguments

    add_serving_arguments(parser)
    from toolkit.bench.adapter_check import add_arguments as add_adapter_arguments

    add_adapter_arguments(parser)


def _sigterm_interrupts() -> None:
    """SIGTERM before the loads start (while torch loads, a fleet stopping its nodes) ends the run as
    Ctrl-C does: exit 130 and a clear line, not death by signal. The session installs its own while the
    loads run and restores this one after."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "serve", None):  # measure a running inference server (docs/SERVING.md)
        from toolkit.bench.serving.run import run_serving

        return run_serving(args)
    if getattr(args, "adapter", None):  # merge -> GGUF -> serve -> token agreement (docs/SERVING.md)
        from toolkit.bench.adapter_check import run_command

        return run_command(args)
    from toolkit.bench.request import BenchRequest

    request = BenchRequest.from_args(args)
    if not request.distributed_run:  # a rank's SIGTERM is the session's to tell apart (bench/session.py)
        _sigterm_interrupts()
    rank = None
    if request.distributed_run:  # a rank of a --gpus run: its output goes to its log from here on
        from toolkit.bench.distributed import Rank

        rank = Rank.start(request.distributed_run, request.debug)
    if request.list_only:
        from toolkit.bench.listing import render_list

        return render_list()
    if request.inventory:
        from toolkit.fleet.bench import run_bench

        return run_bench(request)
    from toolkit.bench import setup as bench_setup

    recipe_list = bench_setup.load_recipes(request)
    if request.plan:
        from toolkit.bench.plan import run_plan

        return run_plan(request, recipe_list)
    prepared = bench_setup.prepare(
        request, recipe_list, distributed=request.gpus is not None or rank is not None
    )
    from toolkit.bench import session

    if not prepared.needs_torch:
        return session.run(request, prepared)
    prepared = bench_setup.start_torch(request, prepared)
    if request.gpus is not None:  # the launcher: torchrun starts the ranks, rank 0 saves, this prints
        from toolkit.bench.distributed import launch

        if request.strict:  # checked once, here: the ranks record what they observe
            session.observe_before(request, prepared.device, None)

        return launch(
            request,
            gpu_class=prepared.gpu_class,
            device=prepared.device,
            scale=prepared.scale,
            workloads=list(prepared.workloads),
            results_dir=prepared.results_dir,
        )
    if rank is not None:
        rank.init_process_group(prepared.device)
    return session.run(request, prepared, rank=rank)
