"""Which GPU class a run is measured against and which loads it runs: the choices a single run, a
`--gpus N` launcher and a fleet controller (checking names before any host starts) make alike."""

from __future__ import annotations

from toolkit.errors import UsageError


def select_workloads(arg: str | None, measured_peaks: bool, distributed: bool = False) -> list[str]:
    """The loads of `--workloads A,B` (default: all) in run order; on the cpu profile the loads that
    measure the peaks come first, since the other loads' expectations derive from them."""
    from toolkit.bench.workloads import DISTRIBUTED_WORKLOADS, PEAK_FREE_WORKLOADS, PEAK_WORKLOADS, WORKLOADS

    known = (*WORKLOADS, *DISTRIBUTED_WORKLOADS)
    if arg is None:  # not given: all; given empty (`--workloads ''`) is an error below, never "all"
        return list(known if distributed else WORKLOADS)
    wanted = [w.strip() for w in arg.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in known]
    if unknown or not wanted:
        import difflib

        close = [m for w in unknown for m in difflib.get_close_matches(w, known, n=1, cutoff=0.6)]
        raise UsageError(
            f"unknown workload(s): {', '.join(unknown) or '(none given)'}",
            hint=(f"did you mean {', '.join(close)}? " if close else "")
            + "known workloads: "
            + ", ".join(known),
        )
    # the cpu profile's expectations need the peaks measured first (the vectors load's do not)
    if measured_peaks and any(w not in PEAK_FREE_WORKLOADS for w in wanted):
        wanted = [w for w in PEAK_WORKLOADS if w not in wanted] + wanted
    return [w for w in known if w in wanted]


def with_recipes(
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
    """(GPU class name, GpuClass or None, detection, mismatch text or None); exit 2 on a mismatch."""
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
