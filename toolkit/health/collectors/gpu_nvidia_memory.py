"""NVIDIA GPU memory health: ECC error counts, and row remapping (Ampere and later) or page retirement
(older GPUs), the two ways a board sets bad memory aside. The rules are listed in `gpu_nvidia_rules`."""

from __future__ import annotations

from toolkit.health.collectors.gpu_rules import add, flag
from toolkit.health.model import CollectorResult, Status

RETIRED_PAGES_LIMIT = 60  # NVIDIA: a board with 60+ retired pages qualifies for replacement


def ecc_checks(result: CollectorResult, prefix: str, gpu: dict, labels: dict):
    counts = {
        (kind, scope): gpu.get(f"ecc_{kind}_{scope}")
        for kind in ("corrected", "uncorrected")
        for scope in ("volatile", "aggregate")
    }
    mode, pending = gpu.get("ecc_mode_current"), gpu.get("ecc_mode_pending")
    vol_unc, agg_unc = counts["uncorrected", "volatile"], counts["uncorrected", "aggregate"]
    corrected = counts["corrected", "aggregate"]
    if corrected is None:
        corrected = counts["corrected", "volatile"]
    if vol_unc:
        status = Status.CRITICAL
        detail = f"{vol_unc} uncorrectable ECC error(s) since the driver loaded: drain the GPU and reset it"
    elif agg_unc:
        status = Status.WARNING
        detail = f"{agg_unc} uncorrectable ECC error(s) in the GPU's lifetime (none since the driver loaded)"
    elif all(v is None for v in counts.values()):
        status = Status.OK
        detail = "ECC disabled" if mode is False else "ECC error counters not supported"
    else:
        status = Status.OK
        detail = f"no uncorrectable ECC errors, {corrected or 0} corrected"
    if pending is not None and mode is not None and pending != mode:
        detail += f"; ECC {'enable' if pending else 'disable'} pending a reboot"
    value = None if mode is None else ("enabled" if mode else "disabled")
    add(result, f"{prefix}.ecc", status, value, None, detail, None, **labels)
    for (kind, scope), count in counts.items():
        add(
            result,
            f"{prefix}.ecc.{scope}_{kind}",
            Status.OK,
            count,
            None,
            f"{kind} ECC errors, {scope}" if count is not None else "not supported",
            "toolkit_gpu_ecc_errors_total",
            **labels,
            type=kind,
            scope=scope,
        )


def row_remapping_checks(result: CollectorResult, prefix: str, gpu: dict, labels: dict):
    corr, unc = gpu.get("remapped_rows_correctable"), gpu.get("remapped_rows_uncorrectable")
    pending, failure = gpu.get("remapped_rows_pending"), gpu.get("remapped_rows_failure")
    counts = f"{corr or 0} row(s) remapped for correctable, {unc or 0} for uncorrectable errors"
    if failure:
        status, value = Status.CRITICAL, "failure"
        detail = f"row remapping failed: no spare rows left; replace the GPU ({counts})"
    elif pending:
        status, value = Status.WARNING, "pending"
        detail = f"a row remap is pending: reset the GPU to remap ({counts})"
    else:
        status, value = Status.OK, "ok"
        detail = counts
    add(result, f"{prefix}.row_remapping", status, value, None, detail, None, **labels)
    for kind, count in (("correctable", corr), ("uncorrectable", unc)):
        add(
            result,
            f"{prefix}.row_remapping.{kind}",
            Status.OK,
            count,
            None,
            f"rows remapped for {kind} errors",
            "toolkit_gpu_remapped_rows_total",
            **labels,
            type=kind,
        )
    add(
        result,
        f"{prefix}.row_remapping.pending",
        Status.OK,
        flag(pending),
        None,
        "remap pending a GPU reset",
        "toolkit_gpu_row_remap_pending",
        **labels,
    )
    add(
        result,
        f"{prefix}.row_remapping.failure",
        Status.OK,
        flag(failure),
        None,
        "remapping failure occurred",
        "toolkit_gpu_row_remap_failure",
        **labels,
    )


def retired_pages_checks(result: CollectorResult, prefix: str, gpu: dict, labels: dict):
    sbe, dbe = gpu.get("retired_pages_single_bit"), gpu.get("retired_pages_double_bit")
    pending = gpu.get("retired_pages_pending")
    if sbe is None and dbe is None and pending is None:
        add(
            result,
            f"{prefix}.retired_pages",
            Status.OK,
            None,
            None,
            "not supported (neither page retirement nor row remapping)",
            None,
            **labels,
        )
        return
    total = (sbe or 0) + (dbe or 0)
    counts = f"{total} page(s) retired ({sbe or 0} for single-bit, {dbe or 0} for double-bit errors)"
    if pending:
        status, detail = Status.WARNING, f"a page retirement is pending: reset the GPU to retire; {counts}"
    elif total >= RETIRED_PAGES_LIMIT:
        status, detail = Status.WARNING, f"{counts}: at NVIDIA's replacement threshold of 60"
    else:
        status, detail = Status.OK, counts
    add(result, f"{prefix}.retired_pages", status, total, None, detail, None, **labels)
    for cause, count in (("single_bit_ecc", sbe), ("double_bit_ecc", dbe)):
        add(
            result,
            f"{prefix}.retired_pages.{cause}",
            Status.OK,
            count,
            None,
            f"pages retired for {cause.replace('_', ' ')} errors" if count is not None else "not supported",
            "toolkit_gpu_retired_pages_total",
            **labels,
            cause=cause,
        )
    add(
        result,
        f"{prefix}.retired_pages.pending",
        Status.OK,
        flag(pending),
        None,
        "retirement pending a GPU reset" if pending is not None else "not supported",
        "toolkit_gpu_retired_pages_pending",
        **labels,
    )
