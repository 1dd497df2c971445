"""`toolkit bench --plan`: does each recipe fit each profile's memory, and by what margin? Runs nothing.

    toolkit bench --plan                                      # every shipped recipe on its own profile
    toolkit bench --plan --gpu a40,rtx-3090,a10g,h100-sxm     # ... on each of these classes
    toolkit bench --plan --recipe my.yaml --arch gemma2-9b --gpu a40 --json plan.json

The estimate (toolkit.bench.estimate) is arithmetic on the recipe's shape: no torch, no device. It is
made at the recipe's full size (or at --scale tiny/small, as a run at that scale would size it), with
every sequence at the recipe's max length. A profile's memory is the catalog's figure; `cpu` is this
machine's RAM (MemTotal); 4-bit/8-bit recipes are estimated there as bitsandbytes' CPU backend runs
them (fp32 compute).

Each row is planned for the trainer that will run the file (LLaMA-Factory for a user's LF file, TRL for
the shipped recipes) and also as the other trainers hold it (`trainers` in the JSON, the "as" column and
the line under the table; toolkit.bench.memory_plan). Fits: the estimate plus the runtime's reserve (the
CUDA context, cited in memory_plan) against the memory: "yes" with at least 10 % to spare (allocator
fragmentation), "tight" within the last 10 %, "no" above it. Keys of the file the plan does not model
(recipe.unhonoured) and the importer's notes are listed under the table, on stderr and in the JSON.

Exit codes: 0 the plan was made; 1 a recipe named with --recipe does not fit a profile it was planned
on (a survey of the shipped recipes, without --recipe, is information and exits 0); 2 usage error
(unknown profile or recipe).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

from toolkit.errors import EXIT_CHECK_FAILED, EXIT_OK, UsageError

PLAN_SCHEMA_VERSION = 2
HEADROOM = 0.10  # share of the memory left for what the estimate does not count


def _profiles(arg: str | None) -> list[str] | None:
    """The --gpu list, validated against the catalog (None: each recipe's own profile)."""
    from toolkit.catalog import CPU_PROFILE, load_catalog

    if not arg:
        return None
    names = [p.strip().lower() for p in arg.split(",") if p.strip()]
    if not names:
        raise UsageError("--gpu names no profile", hint="e.g. --gpu a40,rtx-3090 (see `toolkit gpus`)")
    catalog = load_catalog()
    for name in names:
        if name != CPU_PROFILE:
            catalog.get(name)  # UsageError with the known profiles as hint
    return list(dict.fromkeys(names))


def host_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _memory(profile: str) -> tuple[int | None, str]:
    from toolkit.catalog import CPU_PROFILE, load_catalog

    if profile == CPU_PROFILE:
        return host_memory_bytes(), "this machine's RAM (MemTotal)"
    cls = load_catalog().get(profile)
    fig = cls.figures["memory_bytes"]
    return (int(fig.value) if fig.value else None), fig.source


def _sized(recipe, scale: str | None):
    """The recipe as a run at `scale` would size it (workloads/train.py for_scale); full: as written."""
    if not scale or scale == "full":
        return recipe
    from toolkit.bench.recipes import sized
    from toolkit.bench.settings import load_settings

    t = load_settings().scales[scale].train
    return sized(
        recipe,
        t.model,
        t.max_length or recipe.max_length,
        t.max_batch_size or recipe.batch_size,
        (t.warmup_steps, t.measured_steps),
    )


def _with_model(recipe, spec: str | None):
    """--model: the shape of a local config.json (a folder, a config.json file, or a Hub id in the local
    Hugging Face cache); read, never loaded, nothing downloaded."""
    if not spec:
        return recipe
    from toolkit.bench import architectures, model_config

    found = model_config.local_config(spec)
    if found is None:
        folder, _ = architectures.resolve_model(spec)  # the clear refusal, with where it looked
        found = folder / "config.json"
    config = model_config.read(found)
    return replace(
        recipe, model=architectures.shape_from_config(config), model_config=config, architecture=None
    )


def _verdict(total: float, memory: int | None) -> tuple[str, bool | None]:
    if memory is None:
        return "unknown memory", None
    fits = total <= memory
    return ("yes" if total <= memory * (1 - HEADROOM) else "tight" if fits else "no"), fits


def _row(recipe, profile: str, gpus: int) -> dict:
    from toolkit.bench import memory_plan, model_config
    from toolkit.catalog import CPU_PROFILE

    device = "cpu" if profile == CPU_PROFILE else "cuda"
    estimates = memory_plan.trainer_estimates(recipe, device, gpus)
    trainer = next(iter(estimates))
    est = estimates[trainer]
    reserve = memory_plan.reserve_bytes(device)
    memory, memory_source = _memory(profile)
    total = est.total + reserve
    verdict, fits = _verdict(total, memory)
    largest = est.largest
    observed = getattr(recipe, "observed_peak_gb", None)
    counts = model_config.param_counts(recipe.model_config) if recipe.model_config.get("vocab_size") else None
    return {
        "recipe": recipe.name,
        "profile": profile,
        "device": device,
        "trainer": trainer,
        "memory_bytes": memory,
        "memory_source": memory_source,
        "estimate_bytes": int(est.total),
        "reserve_bytes": reserve,
        "reserve_source": memory_plan.RESERVE_SOURCE if reserve else None,
        "margin_bytes": int(memory - total) if memory else None,
        "margin_ratio": (memory - total) / memory if memory else None,
        "fits": fits,
        "verdict": verdict,
        "largest_part": largest.name,
        "largest_part_bytes": int(largest.bytes),
        "observed_peak_gb": observed,
        "estimate_vs_observed": (est.total + reserve) / (observed * 2**30) if observed else None,
        "trainers": {
            t: {"estimate_bytes": int(e.total), "estimate": e.as_dict()} for t, e in estimates.items()
        },
        "parameters": counts.as_dict() if counts else None,
        "unhonoured": [{"key": k, "reason": why} for k, why in recipe.unhonoured],
        "notes": list(recipe.notes),
        "recipe_summary": recipe.summary(),
        "estimate": est.as_dict(),
    }


def plan_rows(
    recipe_list: list, profiles: list[str] | None, scale: str | None = None, model=None, gpus: int = 1
) -> list[dict]:
    from toolkit.catalog import CPU_PROFILE

    rows = []
    for recipe in recipe_list:
        recipe = _sized(_with_model(recipe, model), scale)
        for profile in profiles or [recipe.profile or CPU_PROFILE]:
            rows.append(_row(recipe, profile, gpus))
    return rows


def _size(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 2**30:
        return f"{value / 2**30:.1f} GiB"
    return f"{value / 2**20:.0f} MiB"


def render(rows: list[dict], console, scale: str = "full") -> None:
    from rich.table import Table

    size = "the recipes' full size" if scale == "full" else f"scale {scale}"
    table = Table(title=f"Memory plan at {size} (estimated; nothing was run)", title_justify="left")
    for col, justify in (
        ("recipe", "left"),
        ("profile", "left"),
        ("memory", "right"),
        ("as", "left"),
        ("estimate", "right"),
        ("observed", "right"),
        ("margin", "right"),
        ("margin %", "right"),
        ("fits", "left"),
        ("largest part", "left"),
    ):
        table.add_column(col, justify=justify)
    style = {"yes": "green", "tight": "yellow", "no": "red"}
    for r in rows:
        pct = "-" if r["margin_ratio"] is None else f"{100 * r['margin_ratio']:.0f}"
        table.add_row(
            r["recipe"],
            r["profile"],
            _size(r["memory_bytes"]),
            r["trainer"],
            _size(r["estimate_bytes"]),
            f"{r['observed_peak_gb']:g} GB" if r.get("observed_peak_gb") else "-",
            _size(r["margin_bytes"]),
            pct,
            f"[{style.get(r['verdict'], '')}]{r['verdict']}[/]" if r["verdict"] in style else r["verdict"],
            f"{r['largest_part']} ({_size(r['largest_part_bytes'])})",
        )
    console.print(table)
    console.print(
        f"fits: estimate + {RESERVE_WORDS} against the memory; yes = at least {HEADROOM:.0%} to spare, "
        "tight = within it, no = above it. Estimates count live tensors with every sequence at the "
        "recipe's max length; `--json` has every part with its formula.",
        highlight=False,
    )
    for line in notes_lines(rows):
        console.print(line, highlight=False, markup=False)


RESERVE_WORDS = "the CUDA context reserve (512 MiB a GPU, cited in --json)"


def notes_lines(rows: list[dict]) -> list[str]:
    """The words under the table: per-trainer estimates, observed peaks, unhonoured keys, notes."""
    lines, seen = [], set()
    for r in rows:
        others = ", ".join(f"{t} {_size(v['estimate_bytes'])}" for t, v in r["trainers"].items())
        lines.append(f"{r['recipe']} on {r['profile']}: as {others}")
        if r.get("observed_peak_gb"):
            lines.append(
                f"  observed {r['observed_peak_gb']:g} GB (toolkit: observed_peak_gb, read as GiB: "
                f"nvidia-smi reports MiB); the plan is {r['estimate_vs_observed']:.2f} of it"
            )
        if r["recipe"] in seen:
            continue
        seen.add(r["recipe"])
        lines += [f"  unhonoured {u['key']}: {u['reason']}" for u in r["unhonoured"]]
        lines += [f"  note: {n}" for n in r["notes"]]
    return lines


def run_plan(request, recipe_list: list) -> int:
    """`toolkit bench --plan`: `request` is the run's BenchRequest."""
    from toolkit.bench import recipes
    from toolkit.console import err, out

    requested = bool(recipe_list)
    if not recipe_list:
        recipe_list = [recipes.override(r, request.recipe_assignments) for r in recipes.shipped().values()]
    profiles = _profiles(request.gpu_class)
    rows = plan_rows(recipe_list, profiles, request.scale, request.model, request.gpus or 1)
    from toolkit.bench.estimate import NOT_COUNTED

    doc = {
        "schema_version": PLAN_SCHEMA_VERSION,
        "document": "toolkit bench --plan",
        "scale": request.scale or "full",
        "headroom_ratio": HEADROOM,
        "not_counted": NOT_COUNTED,
        "rows": rows,
    }
    text = json.dumps(doc, indent=2) + "\n"
    scale = doc["scale"]
    if request.json == "-":
        sys.stdout.write(text)
        render(rows, err, scale)
    elif requested:
        for line in notes_lines(rows):
            if line.lstrip().startswith(("unhonoured ", "note:")):
                err.print(line.strip(), highlight=False, markup=False)
    if request.json != "-":
        if request.json:
            from toolkit.atomic import write_text_atomic

            try:
                write_text_atomic(request.json, text)
            except OSError as e:
                raise UsageError(
                    f"cannot write --json {request.json}: {e.strerror or e}",
                    hint="give a writable file path, or - for stdout",
                ) from None
        render(rows, out, scale)
    if requested and any(r["verdict"] == "no" for r in rows):
        misses = ", ".join(f"{r['recipe']} on {r['profile']}" for r in rows if r["verdict"] == "no")
        err.print(f"does not fit: {misses}", highlight=False)
        return EXIT_CHECK_FAILED
    return EXIT_OK
