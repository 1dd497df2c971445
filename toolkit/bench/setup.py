"""From a request to a run that can start: the GPU class found, the loads, their sizes, the recipes,
the device, and every check that must pass before the first load (exit 2, nothing run, nothing
written). What this computes is one frozen `RunSetup`; the request itself is never written to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from toolkit.bench.request import BenchRequest
from toolkit.errors import MissingDependency, UsageError

ML_MODULES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate")
TORCH_FREE_WORKLOADS = ("vectors",)
INSTALL_HINT = (
    "pip install torch==2.13.0 && pip install 'llm-node-toolkit[ml]'  (torch first, pinned: "
    "an unpinned torch pulls a multi-GB CUDA build)"
)


@dataclass(frozen=True)
class RunSetup:
    gpu_class: str  # the class's key, or "cpu"
    spec: object | None  # catalog.GpuClass; None on the cpu profile, which measures its own peaks
    found: object  # detect.Detection
    mismatch: str | None
    workloads: tuple[str, ...]
    settings: object  # settings.BenchSettings
    scale: object  # settings.Scale, with --set applied
    recipes: tuple = ()
    device: str = "cpu"  # torch device, once torch is up
    burn_in_seconds: float | None = None
    needs_torch: bool = True
    baseline: object | None = None  # history.Baseline of --compare PATH (`last` is looked up after the run)
    qdrant: object | None = None  # vector_store.QdrantTarget of --qdrant-url; None: in-process
    results_dir: Path = Path("results")

    @property
    def use_gpu(self) -> bool:
        return self.spec is not None and bool(self.found.devices)


def load_recipes(request: BenchRequest) -> list:
    """The --recipe list, resolved and with `--set recipe.*` applied; exit 2 on anything wrong."""
    from toolkit.bench import recipes

    if request.arch and not request.recipes:
        raise UsageError("--arch names the architecture of a --recipe", hint="add --recipe NAME|FILE.yaml")
    found = [recipes.load(spec, request.arch) for spec in request.recipes]
    names = [r.name for r in found]
    if len(set(names)) != len(names):
        raise UsageError(f"recipe given twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    found = [recipes.override(r, request.recipe_assignments) for r in found]
    for recipe in found:
        if recipe.architecture is None and not request.model:
            raise UsageError(
                f"recipe {recipe.name}: no architecture known for {recipe.model_name}"
                if getattr(recipe, "model_name", None)
                else f"recipe {recipe.name} does not name its model",
                hint="give the model's config.json: --plan --model DIR (a folder with config.json, or a Hub "
                "id in the local Hugging Face cache), or --arch NAME (see toolkit bench --list)",
            )
    if request.model:
        from toolkit.bench.architectures import resolve_model

        resolve_model(request.model)  # a missing model is a usage error before anything runs
    return found


def prepare(request: BenchRequest, recipe_list: list, distributed: bool) -> RunSetup:
    """Everything a run needs decided before its first load; exit 2 on anything that cannot run."""
    from toolkit.bench.selection import resolve_profile, select_workloads, with_recipes
    from toolkit.bench.settings import load_settings, override
    from toolkit.history import results_dir

    request.check()
    if request.engine == "llamafactory":  # its own environment: missing is exit 2 with the install hint
        from toolkit.bench.engine_llamafactory import check_available

        check_available()
    burn_in = _burn_in_seconds(request)
    name, spec, found, mismatch = resolve_profile(request.gpu_class, request.allow_mismatch)
    measured_peaks = spec is None
    workloads = ["burn_in"] if burn_in else select_workloads(request.workloads, measured_peaks, distributed)
    use_gpu = spec is not None and bool(found.devices)
    settings = load_settings()
    scale = override(
        settings.scales[request.scale or ("full" if use_gpu else "small")], request.set_assignments
    )
    if recipe_list:
        workloads = with_recipes(workloads, recipe_list, request.workloads, measured_peaks)
    if request.model and not recipe_list and "kto_lora" not in workloads:
        raise UsageError("--model replaces the weights of a training load", hint="add --recipe NAME")
    folder = results_dir(request.results_dir)
    _check_writable(folder, request.json)
    request.check_compare()
    baseline = baseline_of(request)
    # the vectors load alone needs no torch: a CPU node that serves Qdrant benches it without the ML stack
    needs_torch = use_gpu or distributed or any(w not in TORCH_FREE_WORKLOADS for w in workloads)
    if needs_torch:
        check_ml_stack(("torch",) if burn_in else ML_MODULES)
    qdrant = _vector_preflight(request, workloads, scale)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded, ever
    return RunSetup(
        gpu_class=name,
        spec=spec,
        found=found,
        mismatch=mismatch,
        workloads=tuple(workloads),
        settings=settings,
        scale=scale,
        recipes=tuple(recipe_list),
        burn_in_seconds=burn_in,
        needs_torch=needs_torch,
        baseline=baseline,
        qdrant=qdrant,
        results_dir=folder,
    )


def start_torch(request: BenchRequest, setup: RunSetup) -> RunSetup:
    """Import torch (and the trainers a training load needs) before the first load, bind the device,
    and check torch sees the GPU the class was matched on; the setup with its device."""
    burn_in = setup.burn_in_seconds is not None
    _say_loading(request, setup)
    # (a --gpus launcher runs no load itself: the ranks quiet their own libraries)
    if not request.debug and not burn_in and request.gpus is None:
        _quiet_libraries()

    import torch

    if setup.use_gpu and not torch.cuda.is_available():
        from toolkit.cuda_match import bench_reason

        why, hint = bench_reason(
            torch.__version__, torch.version.cuda, getattr(torch.version, "hip", None), setup.found.devices
        )
        raise UsageError(f"found {setup.found.summary}, but {why}", hint=hint)
    mismatch = setup.mismatch
    if setup.use_gpu and not mismatch:
        from toolkit.catalog import load_catalog

        # torch's cuda:0 (CUDA_VISIBLE_DEVICES, FASTEST_FIRST order) must be the device the class matched
        torch_name = torch.cuda.get_device_name(0)
        if setup.spec.key != getattr(load_catalog().match_device(torch_name), "key", None):
            mismatch = f"{setup.gpu_class} matched by NVML, but torch's cuda:0 is {torch_name}"
    if request.threads:
        torch.set_num_threads(request.threads)
    if any(w == "kto_lora" or w.startswith("train:") for w in setup.workloads) and not burn_in:
        import peft  # noqa: F401  (~90 MB of RSS: imported before the first load's peak is reset)
        import trl  # noqa: F401
    return replace(setup, device="cuda" if setup.use_gpu else "cpu", mismatch=mismatch)


def _say_loading(request: BenchRequest, setup: RunSetup) -> None:
    """The first line of a run, before the seconds torch (and the trainers) take to import: on stderr,
    whether a terminal or a log, so stdout stays the table or the JSON; a rank of a `--gpus N` run says
    nothing (its launcher did)."""
    if request.distributed_run:
        return
    from toolkit.console import err

    trainers = any(w == "kto_lora" or w.startswith("train:") for w in setup.workloads)
    err.print(f"toolkit bench: loading torch{' and the trainers' if trainers else ''} …", highlight=False)


def check_ml_stack(modules: tuple[str, ...] = ML_MODULES) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependency(
            f"`toolkit bench` needs the ML stack; missing: {', '.join(missing)}", hint=INSTALL_HINT
        )


def _burn_in_seconds(request: BenchRequest) -> float | None:
    if request.burn_in is None:
        return None
    from toolkit.bench.burnin import parse_duration

    return parse_duration(request.burn_in)


def _check_writable(folder: Path, json_target: str | None) -> None:
    """Find out before the first load, not after the last, that a result cannot be written."""
    from toolkit.atomic import check_writable

    targets = [folder]
    if json_target and json_target != "-":
        json_path = Path(json_target)
        if json_path.is_dir():
            raise UsageError(f"--json {json_target} is a directory", hint="give a file path, or - for stdout")
        targets.append(json_path.parent)
    for target in targets:
        check_writable(target, "choose a writable folder (--results-dir, or the folder of --json)")


def baseline_of(request: BenchRequest):
    """--compare PATH is read before any load runs; `last` is looked up after the run (None here)."""
    if not request.compare or request.compare == "last":
        return None
    from toolkit.history import load_baseline

    return load_baseline(request.compare)


def _vector_preflight(request: BenchRequest, workloads: list[str], scale):
    """Before any load runs: the vector engine is there, or the Qdrant server answers, takes the key and
    accepts a collection of the load's shape (exit 2 otherwise). The server target, or None in-process."""
    from toolkit.bench.vector_store import IndexSpec, preflight

    if "vectors" not in workloads:
        if request.qdrant_url or request.qdrant_api_key_env:
            raise UsageError(
                "--qdrant-url/--qdrant-api-key-env are for the vectors load, which this run does not include",
                hint="add vectors to --workloads",
            )
        return None
    v = scale.vectors
    spec = IndexSpec(v.dim, v.m, v.ef_construct, v.full_scan_threshold_kb, v.indexing_threshold_kb)
    return preflight(request.qdrant_url, request.qdrant_api_key_env, spec, v.points)


def _quiet_libraries() -> None:
    """Library progress bars and advice go nowhere near our stdout; --debug keeps them."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    logging.getLogger("trl").setLevel(logging.ERROR)
