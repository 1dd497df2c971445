"""`toolkit bench`: run the reference loads and say whether this node reaches its GPU class's figures.

Exit codes (REFERENCE.md): 0 every check passed (warnings allowed), 1 a check
failed (below expectation, out of memory, crashed), 2 usage or environment
error, 130 interrupted (finished loads are kept in the saved result).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from toolkit.errors import EXIT_CHECK_FAILED, EXIT_INTERRUPTED, EXIT_OK, MissingDependency, UsageError

ML_MODULES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate")
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
        help="loads to run: matmul, memory_bandwidth, kto_lora, inference (default: all)",
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
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and data (default 0)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="LOAD.FIELD=VALUE",
        help="override a load's size for this run, e.g. kto_lora.batch_size=8 (repeatable; "
        "the report records it)",
    )


def _workloads(arg: str | None, measured_peaks: bool) -> list[str]:
    from toolkit.bench.workloads import PEAK_WORKLOADS, WORKLOADS

    if not arg:
        return list(WORKLOADS)
    wanted = [w.strip() for w in arg.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in WORKLOADS]
    if unknown or not wanted:
        raise UsageError(
            f"unknown workload(s): {', '.join(unknown) or '(none given)'}",
            hint="known workloads: " + ", ".join(WORKLOADS),
        )
    if measured_peaks:  # the cpu profile's expectations need the peaks measured first
        wanted = [w for w in PEAK_WORKLOADS if w not in wanted] + wanted
    return [w for w in WORKLOADS if w in wanted]


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
    return Path(args.results_dir or os.environ.get("TOOLKIT_RESULTS_DIR") or "results")


def _check_writable(args) -> None:
    """Find out before the first load, not after the last, that a result cannot be written."""
    targets = [_results_dir(args)]
    if args.json and args.json != "-":
        json_path = Path(args.json)
        if json_path.is_dir():
            raise UsageError(f"--json {args.json} is a directory", hint="give a file path, or - for stdout")
        targets.append(json_path.parent)
    for folder in targets:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as err:
            raise UsageError(
                f"cannot write results to {folder}: {err.strerror or err}",
                hint="choose a writable folder (--results-dir, or the folder of --json)",
            ) from None


def _check_ml_stack() -> None:
    import importlib.util

    missing = [m for m in ML_MODULES if importlib.util.find_spec(m) is None]
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


def run(args: argparse.Namespace) -> int:
    from toolkit.bench.settings import load_settings, override
    from toolkit.bench.workloads.kto_lora import resolve_loss
    from toolkit.catalog import load_catalog

    if args.kto_loss:
        resolve_loss(args.kto_loss)  # a bad value is a usage error before anything runs
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    profile, gpu_class, found, mismatch = resolve_profile(args.profile, args.allow_mismatch)
    workloads = _workloads(args.workloads, measured_peaks=gpu_class is None)
    use_gpu = gpu_class is not None and bool(found.devices)
    settings = load_settings()
    scale = override(settings.scales[args.scale or ("full" if use_gpu else "small")], args.overrides)
    _check_writable(args)
    _check_ml_stack()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded, ever
    if not getattr(args, "debug", False):
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
    return _run(args, settings, scale, profile, gpu_class, found, mismatch, workloads, device)


def _run(args, settings, scale, profile, gpu_class, found, mismatch, workloads, device) -> int:
    import signal
    import socket
    import time

    from toolkit.bench import environment, report
    from toolkit.bench.context import Peaks, RunContext
    from toolkit.bench.runner import run_loads, verdict
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
    )
    host = socket.gethostname()
    started = report.utc_now()
    saved_path = _results_dir(args) / report.result_filename(started, host, profile)
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
            "seed": args.seed,
            "dtype": dtype,
            "floors": {k: {"values": v.values, "basis": v.basis} for k, v in settings.floors.items()},
            "warn_ratio": settings.warn_ratio,
        },
        "results": [],
        "verdict": "incomplete",
        "complete": False,
    }

    def save() -> None:
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
        doc.pop("in_progress", None)
        doc["results"].append(rec.as_dict())
        save()
        line = report.summary_line(rec)
        err.print(
            f"[{report.STATUS_STYLE.get(rec.status, '')}]{rec.status:>5}[/] {rec.workload}: {line}",
            highlight=False,
        )

    err.print(
        f"toolkit bench: profile {profile}, device {device} ({found.summary}), scale {scale.name}, "
        f"loads {', '.join(workloads)}",
        highlight=False,
    )
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        save()
        with progress:
            records, interrupted = run_loads(ctx, workloads, on_start, on_done)
    finally:
        signal.signal(signal.SIGTERM, previous)
    doc.pop("in_progress", None)
    doc["verdict"] = verdict(records, interrupted)
    doc["complete"] = not interrupted
    doc["finished_at"] = report.utc_now()
    if len(records) < len(workloads):
        doc["not_run"] = workloads[len(records) :]
    save()

    if args.json == "-":
        sys.stdout.write(report.to_json(doc))
        report.render(doc, err)
    else:
        if args.json:
            report.save(doc, args.json)
        report.render(doc, out)
    err.print(
        f"Saved {saved_path}" + (f" and {args.json}" if args.json and args.json != "-" else ""),
        highlight=False,
    )
    if interrupted:
        err.print("Interrupted: the loads that finished are kept in the saved result.")
        return EXIT_INTERRUPTED
    return EXIT_CHECK_FAILED if doc["verdict"] in ("fail", "error") else EXIT_OK


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt
