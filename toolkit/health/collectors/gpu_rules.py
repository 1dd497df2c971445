"""The GPU rules NVIDIA and AMD share, so a temperature, a power draw or the memory in use reads the same
in either vendor's section: one wording, one metric name, one temperature judgement."""

from __future__ import annotations

from typing import Any

from toolkit.health.collector import Context
from toolkit.health.model import Check, CollectorResult, Status

COLLECTOR = "gpu"
SLOWDOWN_MARGIN_C = 5.0


def gpu_settings(ctx: Context) -> tuple[int | None, dict]:
    """(expected GPU count, temperature thresholds); `--expect-gpus` wins over the settings file."""
    opts = ctx.opts
    expect = opts.expect_gpus if opts.expect_gpus is not None else ctx.config.get("expect_gpus")
    return expect, ctx.config.get("thresholds") or {}


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def fmt_number(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def add(
    result: CollectorResult,
    name: str,
    status: Status,
    /,
    value: Any = None,
    unit: str | None = None,
    detail: str = "",
    metric: str | None = None,
    prom_value: float | None = None,
    **labels: Any,
) -> Check:
    """`CollectorResult.add` for GPU checks, whose labels include `name` (the GPU model): the result, the
    check's name and its status are positional-only, so a `name=` label is a label, not a clash."""
    check = result.add(name, status, value, unit, detail, metric, prom_value)
    check.labels = {k: str(v) for k, v in labels.items()}
    return check


def report_no_driver(result: CollectorResult, check: str, missing: str, error: str, expect_gpus: int | None):
    """`missing` says what is absent ("no NVIDIA driver"); the collector is down either way."""
    result.up = False
    result.detail = f"{missing} ({error})"
    if expect_gpus:
        detail = f"expected {expect_gpus} GPU(s), but {missing} ({error})"
        add(result, check, Status.CRITICAL, detail=detail)
    else:
        add(result, check, Status.OK, detail=result.detail)


def temperature_limits(
    slowdown: float | None, thresholds: dict | None, default_warning: float, default_critical: float
) -> tuple[float, float, str]:
    """(warning, critical, where the critical level comes from)."""
    t = thresholds or {}
    if slowdown:
        warning, critical, source = slowdown - SLOWDOWN_MARGIN_C, float(slowdown), "slowdown threshold"
    else:
        warning, critical, source = default_warning, default_critical, "default limit"
    if t.get("temperature_warning_c") is not None:
        warning = float(t["temperature_warning_c"])
    if t.get("temperature_critical_c") is not None:
        critical, source = float(t["temperature_critical_c"]), "configured limit"
    return warning, critical, source


def judge_temperature(
    temp: float, warning: float, critical: float, source: str, shutdown: float | None = None
) -> tuple[Status, str]:
    """The status and the detail that names the limits, so a reader sees how close the GPU is."""
    limits = f"warning at {fmt_number(warning)} °C, critical at {fmt_number(critical)} °C ({source})"
    if shutdown:
        limits += f", shutdown at {fmt_number(shutdown)} °C"
    if temp >= critical:
        return Status.CRITICAL, f"{fmt_number(temp)} °C: at or above the {source}; {limits}"
    if temp >= warning:
        return Status.WARNING, f"{fmt_number(temp)} °C: near the {source}; {limits}"
    return Status.OK, limits


def power_checks(
    result: CollectorResult,
    prefix: str,
    gpu: dict,
    labels: dict,
    limit_name="enforced power limit",
    source: str | None = None,
):
    """Power draw and limit; AMD names its limit "power cap" and says which sensor the draw comes from."""
    power, limit = gpu.get("power_w"), gpu.get("power_limit_w")
    if power is None:
        detail = "power draw not supported"
    elif limit:
        detail = f"{power:.0f} W of {limit:.0f} W limit ({100 * power / limit:.0f}%)"
    else:
        detail = f"{power:.0f} W (power limit not supported)"
    if power is not None and source:
        detail += f"; {source.replace('_', ' ')}"
    add(result, f"{prefix}.power", Status.OK, power, "W", detail, "toolkit_gpu_power_watts", **labels)
    add(
        result,
        f"{prefix}.power.limit",
        Status.OK,
        limit,
        "W",
        limit_name if limit is not None else "power limit not supported",
        "toolkit_gpu_power_limit_watts",
        **labels,
    )


def memory_checks(
    result: CollectorResult,
    prefix: str,
    gpu: dict,
    labels: dict,
    noun: str = "memory",
    total_note: str = "visible to applications",
):
    """Memory used and total; AMD says VRAM."""
    used, total = gpu.get("memory_used_bytes"), gpu.get("memory_total_bytes")
    which = "" if noun == "memory" else f"{noun} "
    if used is None:
        detail = f"{noun} usage not supported"
    elif total:
        detail = f"{gib(used)} of {gib(total)} {which}used ({100 * used / total:.0f}%)"
    else:
        detail = f"{gib(used)} {which}used"
    add(
        result,
        f"{prefix}.memory",
        Status.OK,
        used,
        "bytes",
        detail,
        "toolkit_gpu_memory_used_bytes",
        **labels,
    )
    add(
        result,
        f"{prefix}.memory.total",
        Status.OK,
        total,
        "bytes",
        f"{gib(total)} {total_note}" if total is not None else f"{noun} size not supported",
        "toolkit_gpu_memory_total_bytes",
        **labels,
    )


def flag(value: bool | None) -> int | None:
    """A yes/no reading as the 0/1 Prometheus takes; unread stays None, never a number."""
    return None if value is None else int(value)
