"""`toolkit bench`: run the reference loads and say whether this node reaches its GPU class's figures.

Exit codes (REFERENCE.md): 0 every check passed (warnings allowed), 1 a check
failed (below expectation, out of memory, crashed), 2 usage or environment
error, 130 interrupted (finished loads are kept in the saved result).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from toolkit.errors import EXIT_CHECK_FAILED, EXIT_INTERRUPTED, EXIT_OK, MissingDependency, UsageError

ML_MODULES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate")
TORCH_FREE_WORKLOADS = ("vectors",)
INSTALL_HINT = (
    "pip install torch==2.13.0 && pip install 'llm-node-toolkit[ml]'  (torch first, pinned: "
    "an unpinned torch pulls a multi-GB CUDA build)"
)


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
        "(mapped to kto); default: the users' recipe (kto_pair)",
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


def _workloads(arg: str | None, measured_peaks: bool, distributed: bool = False) -> list[str]:
    from toolkit.bench.workloads import DISTRIBUTED_WORKLOADS, PEAK_FREE_WORKLOADS, PEAK_WORKLOADS, WORKLOADS

    known = (*WORKLOADS, *DISTRIBUTED_WORKLOADS)
    if not arg:
        return list(known if distributed else WORKLOADS)
    wanted = [w.strip() for w in arg.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in known]
    if unknown or not wanted:
        raise UsageError(
            f"unknown workload(s): {', '.join(unknown) or '(none given)'}",
            hint="known workloads: " + ", ".join(known),
        )
    # the cpu profile's expectations need the peaks measured first (the vectors load's do not)
    if measured_peaks and any(w not in PEAK_FREE_WORKLOADS for w in wanted):
        wanted = [w for w in PEAK_WORKLOADS if w not in wanted] + wanted
    return [w for w in known if w in wanted]


def _with_recipes(
    workloads: list[str], recipe_list: list, asked: str | None, measured_peaks: bool
) -> list[str]:
    """With --recipe, the training loads are the recipes (`train:NAME`); without --workloads, only the
    recipes run (after the peaks the cpu profile measures its expectations from)."""
    from toolkit.bench.workloads import PEAK_WORKLOADS

    base = [w for w in workloads if w != "kto_lora"] if asked else []
    if measured_peaks:
        base = [w for w in PEAK_WORKLOADS if w not in base] + base
    return base + [f"train:{r.name}" for r in recipe_list]


def resolve_profile(requested: str | None, allow_mismatch: bool, found=None):
    """(profile name, GPU class or None, detection, mismatch text or None); exit 2 on a mismatch."""
    from toolkit.catalog import CPU_PROFILE, load_catalog
    from toolkit.detect import detect

    catalog = load_catalog()
    found = found or detect()
    detected = [c for d in found.devices if (c := catalog.match_device(d.name))]
    if requested is None:
        if not found.devices:
            return CPU_PROFILE, None, found, None
        if not detected:
            raise UsageError(
                f"detected {found.summary}, which is not in the GPU catalog",
                hint="run with --gpu CLASS --allow-mismatch to measure it against a known class "
                "(see `toolkit gpus`)",
            )
        return detected[0].key, detected[0], found, None
    if requested.lower() == CPU_PROFILE:
        note = f"cpu profile requested on a machine with {found.summary}" if found.devices else None
        return CPU_PROFILE, None, found, note
    cls = catalog.get(requested)
    if any(c.key == cls.key for c in detected):
        return cls.key, cls, found, None
    mismatch = f"requested {cls.key} ({cls.name}) but found {found.summary}"
    if allow_mismatch and not found.devices:
        raise UsageError(
            f"{mismatch}: there is no GPU to run {cls.key}'s loads on",
            hint="--allow-mismatch measures another GPU against this class; on a machine without a GPU "
            "run the cpu profile (no --gpu)",
        )
    if not allow_mismatch:
        raise UsageError(
            mismatch,
            hint="run on a matching node, or add --allow-mismatch to run anyway "
            "(the report records the mismatch)",
        )
    return cls.key, cls, found, mismatch


def _results_dir(args) -> Path:
    from toolkit.history import results_dir

    return results_dir(args.results_dir)


def _check_writable(args) -> None:
    """Find out before the first load, not after the last, that a result cannot be written."""
    targets = [_results_dir(args)]
    if args.json and args.json != "-":
        json_path = Path(args.json)
        if json_path.is_dir():
            raise UsageError(f"--json {args.json} is a directory", hint="give a file path, or - for stdout")
        targets.append(json_path.parent)
    from toolkit.atomic import check_writable

    for folder in targets:
        check_writable(folder, "choose a writable folder (--results-dir, or the folder of --json)")


def _check_ml_stack(modules: tuple[str, ...] = ML_MODULES) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependency(
            f"`toolkit bench` needs the ML stack; missing: {', '.join(missing)}", hint=INSTALL_HINT
        )


def _quiet_libraries() -> None:
    """Library progress bars and advice go nowhere near our stdout; --debug keeps them."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    import logging

    logging.getLogger("trl").setLevel(logging.ERROR)


def _recipes(args) -> list:
    """The --recipe list, resolved and with `--set recipe.*` applied; exit 2 on anything wrong."""
    from toolkit.bench import recipes

    if args.arch and not args.recipes:
        raise UsageError("--arch names the architecture of a --recipe", hint="add --recipe NAME|FILE.yaml")
    found = [recipes.load(spec, args.arch) for spec in args.recipes]
    names = [r.name for r in found]
    if len(set(names)) != len(names):
        raise UsageError(f"recipe given twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    assignments = [a.partition(".")[2] for a in args.overrides if a.startswith("recipe.")]
    found = [recipes.override(r, assignments) for r in found]
    for recipe in found:
        if recipe.architecture is None and not args.model:
            raise UsageError(
                f"recipe {recipe.name} does not name its model",
                hint="add --arch NAME (see toolkit bench --list), model_name_or_path with a known Hub id, "
                "or --model PATH_OR_ID",
            )
    return found


def run(args: argparse.Namespace) -> int:
    from toolkit.bench.settings import load_settings, override
    from toolkit.bench.workloads.kto_lora import resolve_loss
    from toolkit.catalog import load_catalog

    rank = None
    if args.distributed_run:  # a rank of a --gpus run: its output goes to its log from here on
        from toolkit.bench.distributed import Rank

        rank = Rank.from_args(args)
    if args.list:
        from toolkit.bench.listing import render_list

        return render_list()
    if args.inventory:
        from toolkit.fleet.commands import run_bench

        return run_bench(args)
    recipe_list = _recipes(args)
    if args.model:
        from toolkit.bench.architectures import resolve_model

        resolve_model(args.model)  # a missing model is a usage error before anything runs
    if args.plan:
        from toolkit.bench.plan import run_plan

        return run_plan(args, recipe_list)
    if args.kto_loss:
        resolve_loss(args.kto_loss)  # a bad value is a usage error before anything runs
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    if args.gpus is not None:
        from toolkit.bench.distributed import check_gpus

        check_gpus(args.gpus, None)  # N < 2 is refused before anything runs; N > GPUs once torch is up
        if getattr(args, "burn_in", None):
            raise UsageError("--burn-in already runs on every visible GPU", hint="drop --gpus")
    burn_in = _burn_in(args, recipe_list)
    profile, gpu_class, found, mismatch = resolve_profile(args.profile, args.allow_mismatch)
    distributed = args.gpus is not None or rank is not None
    workloads = (
        ["burn_in"]
        if burn_in
        else _workloads(args.workloads, measured_peaks=gpu_class is None, distributed=distributed)
    )
    use_gpu = gpu_class is not None and bool(found.devices)
    settings = load_settings()
    scale = override(
        settings.scales[args.scale or ("full" if use_gpu else "small")],
        [a for a in args.overrides if not a.startswith("recipe.")],
    )
    if recipe_list:
        workloads = _with_recipes(workloads, recipe_list, args.workloads, gpu_class is None)
    if args.model and not recipe_list and "kto_lora" not in workloads:
        raise UsageError("--model replaces the weights of a training load", hint="add --recipe NAME")
    _check_writable(args)
    args.baseline = _compare_preflight(args)
    # the vectors load alone needs no torch: a CPU node that serves Qdrant benches it without the ML stack
    needs_torch = use_gpu or distributed or any(w not in TORCH_FREE_WORKLOADS for w in workloads)
    if needs_torch:
        _check_ml_stack(("torch",) if burn_in else ML_MODULES)
    args.qdrant_target = _vector_preflight(args, workloads, scale)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded, ever
    if not needs_torch:
        return _run(args, settings, scale, profile, gpu_class, found, mismatch, workloads, "cpu", recipe_list)
    # (a --gpus launcher runs no load itself: the ranks quiet their own libraries)
    if not getattr(args, "debug", False) and not burn_in and args.gpus is None:
        _quiet_libraries()

    import torch

    if use_gpu and not torch.cuda.is_available():
        raise UsageError(
            f"found {found.summary}, but torch {torch.__version__} cannot use it",
            hint="install a torch build for this GPU's CUDA/ROCm version "
            "(a CPU build was probably installed)",
        )
    device = "cuda" if use_gpu else "cpu"
    if use_gpu and not mismatch:
        # torch's cuda:0 (CUDA_VISIBLE_DEVICES, FASTEST_FIRST order) must be the device the class matched
        torch_name = torch.cuda.get_device_name(0)
        if gpu_class.key != getattr(load_catalog().match_device(torch_name), "key", None):
            mismatch = f"{profile} matched by NVML, but torch's cuda:0 is {torch_name}"
    if args.threads:
        torch.set_num_threads(args.threads)
    if any(w == "kto_lora" or w.startswith("train:") for w in workloads) and not burn_in:
        import peft  # noqa: F401  (~90 MB of RSS: imported before the first load's peak is reset)
        import trl  # noqa: F401
    if args.gpus is not None:  # the launcher: torchrun starts the ranks, rank 0 saves, this prints
        from toolkit.bench.distributed import launch

        return launch(
            args,
            add_arguments,
            profile=profile,
            device=device,
            scale=scale,
            workloads=workloads,
            results_dir=_results_dir(args),
        )
    if rank is not None:
        rank.init_process_group(device)
    return _run(
        args, settings, scale, profile, gpu_class, found, mismatch, workloads, device, recipe_list, rank=rank
    )


def _run(
    args, settings, scale, profile, gpu_class, found, mismatch, workloads, device, recipe_list, rank=None
) -> int:
    import signal
    import socket
    import time

    from toolkit.bench import environment, report
    from toolkit.bench.context import Peaks, RunContext
    from toolkit.bench.runner import Interrupts, run_loads, verdict
    from toolkit.console import err, out
    from toolkit.units import si

    dtype = gpu_class.tensor_dtype if device != "cpu" else "float32"
    peaks = Peaks()
    if gpu_class is not None:
        peaks = Peaks(
            flops=gpu_class.tensor_flops,
            flops_basis=f"{gpu_class.key} dense {dtype} tensor peak {si(gpu_class.tensor_flops, 'FLOP/s')}",
            bandwidth=gpu_class.value("memory_bandwidth_bytes_per_second"),
            bandwidth_basis=f"{gpu_class.key} datasheet bandwidth "
            f"{si(gpu_class.value('memory_bandwidth_bytes_per_second'), 'B/s')}",
        )
    ctx = RunContext(
        device=device,
        dtype=dtype,
        scale=scale,
        settings=settings,
        profile=profile,
        gpu_class=gpu_class,
        peaks=peaks,
        seed=args.seed,
        kto_loss=args.kto_loss,
        recipes={r.name: r for r in recipe_list},
        model_path=args.model,
        qdrant=getattr(args, "qdrant_target", None),
    )
    host = socket.gethostname()
    started = report.utc_now()
    saved_path = _results_dir(args) / report.result_filename(started, host, profile)
    if rank is not None:  # --gpus N: the launcher named the result; only rank 0 writes it
        started, saved_path = rank.started_at, rank.saved_path
    doc = {
        "schema_version": report.SCHEMA_VERSION,
        "host": host,
        "started_at": started,
        "finished_at": None,
        "profile": {
            "name": profile,
            "requested": args.profile,
            "class": gpu_class.as_dict() if gpu_class else {"class": "cpu", "peaks": "measured in this run"},
            "detected": found.summary,
            "mismatch": mismatch,
            "peaks": peaks.as_dict(),
        },
        "environment": environment.collect(device, found),
        "configuration": {
            "scale": scale.name,
            "overrides": args.overrides,
            "workloads": workloads,
            "recipes": [r.summary() for r in recipe_list],
            "model": args.model or "synthetic weights of the recipe's architecture",
            "seed": args.seed,
            "dtype": dtype,
            "floors": {k: {"values": v.values, "basis": v.basis} for k, v in settings.floors.items()},
            "warn_ratio": settings.warn_ratio,
        },
        "results": [],
        "verdict": "incomplete",
        "complete": False,
    }

    if rank is not None:
        rank.annotate(doc, device)

    def save() -> None:
        if rank is not None and not rank.is_main:
            return
        doc["profile"]["peaks"] = ctx.peaks.as_dict()
        report.save(doc, saved_path)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    task = {"id": None}

    def on_start(name: str) -> None:
        task["id"] = progress.add_task(name, total=None)
        task["saved_at"] = time.monotonic()

        def on_progress(done: int, total: int) -> None:
            progress.update(task["id"], completed=done, total=total)
            # the saved file shows the running load's progress, at most once a second
            if time.monotonic() - task["saved_at"] >= 1:
                doc["in_progress"] = {"workload": name, "completed": done, "total": total}
                save()
                task["saved_at"] = time.monotonic()

        ctx.progress = on_progress

    def on_done(rec) -> None:
        progress.remove_task(task["id"])
        # --gpus N: every rank hands its record to rank 0, which keeps the aggregate
        result = rec.as_dict() if rank is None else rank.collect(rec, settings.warn_ratio)
        if result is None:
            return
        doc.pop("in_progress", None)
        doc["results"].append(result)
        save()
        from rich.markup import escape

        line = escape(report.summary_line(rec))  # error messages may quote [bracketed] library text
        err.print(
            f"[{report.STATUS_STYLE.get(rec.status, '')}]{rec.status:>5}[/] {rec.workload}: {line}",
            highlight=False,
        )

    err.print(
        f"toolkit bench: profile {profile}, device {device} ({found.summary}), scale {scale.name}, "
        f"loads {', '.join(workloads)}",
        highlight=False,
    )
    for recipe in recipe_list:
        if recipe.unhonoured:
            err.print(
                f"recipe {recipe.name}: not honoured: {', '.join(k for k, _ in recipe.unhonoured)} "
                "(reasons in the report)",
                highlight=False,
            )
    # a rank tells torchrun's SIGTERM (another rank failed) from the user's Ctrl-C
    guard = Interrupts() if rank is None and workloads != ["burn_in"] else None
    previous = signal.signal(
        signal.SIGTERM, rank.on_sigterm if rank else guard.handler if guard else _raise_interrupt
    )
    # (an ignored SIGINT, as nohup or a background job inherits it, stays ignored)
    keep_int = guard is None or signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    previous_int = None if keep_int else signal.signal(signal.SIGINT, guard.handler)
    try:
        save()
        with progress:
            if workloads == ["burn_in"]:
                records, interrupted = _run_burn_in(ctx, args, doc, save, on_start, on_done)
            else:
                records, interrupted = run_loads(ctx, workloads, on_start, on_done, guard)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)
    if rank is not None:  # a rank that failed or was interrupted has left in rank.collect
        return rank.finish(doc, save)
    doc.pop("in_progress", None)
    doc["verdict"] = verdict(records, interrupted)
    doc["complete"] = not interrupted
    doc["finished_at"] = report.utc_now()
    if len(records) < len(workloads):
        doc["not_run"] = workloads[len(records) :]
    comparison = _comparison(args, doc, saved_path, err)
    if comparison:
        doc["comparison"] = comparison
    save()

    report.publish(doc, saved_path, args.json, out, err)
    if comparison:
        report.render_comparison(comparison, err if args.json == "-" else out)
    if interrupted:
        err.print("Interrupted: the loads that finished are kept in the saved result.")
        return EXIT_INTERRUPTED
    if doc["verdict"] in ("fail", "error"):
        return EXIT_CHECK_FAILED
    if comparison and comparison["regressions"] and args.fail_on_regression:
        return EXIT_CHECK_FAILED
    return EXIT_OK


def _compare_preflight(args):
    """--compare PATH is read before any load runs; `last` is looked up after the run (None here)."""
    from toolkit.history import load_baseline, parse_threshold

    if not args.compare:
        if args.threshold or args.fail_on_regression:
            raise UsageError(
                "--threshold and --fail-on-regression go with --compare", hint="add --compare last"
            )
        return None
    parse_threshold(args.threshold)
    if args.gpus is not None:
        raise UsageError("--compare does not go with --gpus yet", hint="compare a single-process run")
    return None if args.compare == "last" else load_baseline(args.compare)


def _comparison(args, doc: dict, saved_path, err) -> dict | None:
    from toolkit import history

    if not args.compare:
        return None
    baseline = args.baseline or history.previous(saved_path.parent, doc, exclude=saved_path)
    if baseline is None:
        err.print(
            f"--compare last: no earlier result of {doc['host']} ({doc['profile']['name']}) in "
            f"{saved_path.parent}: nothing to compare with yet",
            highlight=False,
        )
        return None
    threshold = history.parse_threshold(args.threshold)
    return history.comparison_doc(baseline, history.compare(baseline.doc, doc, threshold), threshold)


def _burn_in(args, recipe_list) -> float | None:
    """Seconds of --burn-in; it replaces the load list, so it does not go with --workloads or --recipe."""
    if getattr(args, "burn_in", None) is None:
        return None
    from toolkit.bench.burnin import parse_duration

    seconds = parse_duration(args.burn_in)
    if args.workloads or recipe_list:
        raise UsageError(
            "--burn-in replaces the load list",
            hint="drop --workloads/--recipe, or run the loads in a separate `toolkit bench`",
        )
    return seconds


def _run_burn_in(ctx, args, doc, save, on_start, on_done):
    """The burn-in record is saved after every interval, so a killed burn-in keeps the finished ones."""
    from toolkit.bench import burnin

    def on_interval(rec) -> None:
        doc["results"] = [rec.as_dict()]
        save()

    def done(rec) -> None:
        doc["results"] = []
        on_done(rec)

    return burnin.run(ctx, burnin.parse_duration(args.burn_in), on_start, done, on_interval)


def _vector_preflight(args, workloads: list[str], scale):
    """Before any load runs: the vector engine is there, or the Qdrant server answers, takes the key and
    accepts a collection of the load's shape (exit 2 otherwise). The server target, or None in-process."""
    from toolkit.bench.vector_store import IndexSpec, preflight

    url, key_env = getattr(args, "qdrant_url", None), getattr(args, "qdrant_api_key_env", None)
    if "vectors" not in workloads:
        if url or key_env:
            raise UsageError(
                "--qdrant-url/--qdrant-api-key-env are for the vectors load, which this run does not include",
                hint="add vectors to --workloads",
            )
        return None
    v = scale.vectors
    spec = IndexSpec(v.dim, v.m, v.ef_construct, v.full_scan_threshold_kb, v.indexing_threshold_kb)
    return preflight(url, key_env, spec, v.points)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt
