"""What the burn-in concludes: its checks (no differing element; no board-side throttling) and the
one-line summary of the progress log.

Apart from the loop and the sampler so the conclusions import neither torch nor NVML: the report prints
a saved burn-in's line with `summary_line`, and the checks are held to recorded-shape summaries.
"""

from __future__ import annotations

RELATIVE_TOLERANCE = 0.0
TOLERANCE_BASIS = (
    "exact (relative tolerance 0): the same kernel on the same inputs, shape, device and thread count "
    "reproduces its result bit for bit, so every element that differs from the first result counts, "
    "NaN included"
)


def judge(errors: int, throttle: dict[str, dict]) -> tuple[dict, dict]:
    """The burn-in's checks: (expected entries, throttle verdict).

    `throttle`: `summarize_clock_events` per device. Any differing element fails; HW slowdown, HW
    thermal, HW power brake or SW thermal slowdown in any sample warns; the SW power cap alone passes.
    """
    expected = {
        "errors_total": {
            "min": None,
            "max": 0,
            "basis": f"results compared with the first result of the same inputs, {TOLERANCE_BASIS}",
            "status": "fail" if errors else "pass",
        }
    }
    sampled = {dev: t for dev, t in throttle.items() if t["samples"]}
    if len(sampled) == 1:
        summary = next(iter(sampled.values()))["summary"]
    else:
        summary = "; ".join(f"{dev}: {t['summary']}" for dev, t in sampled.items())
    hw = sorted({r for t in sampled.values() for r in t["hw_reasons"]})
    if sampled:
        expected["throttled_samples_ratio"] = {
            "min": None,
            "basis": f"{summary}. NVML clock-event reasons: HW slowdown, HW thermal, HW power brake or "
            "SW thermal slowdown warn (cooling or power delivery); the SW power cap is normal at the "
            "power limit",
            "status": "warn" if hw else "pass",
        }
    verdict = {
        "throttled": any(t["throttled"] for t in sampled.values()) if sampled else None,
        "hw_reasons": hw,
        "summary": summary if sampled else "not sampled",
    }
    return expected, verdict


def summary_line(rec) -> str:
    """One line for the progress log: iterations, errors, sustained FLOP/s, temperature, power, throttle."""
    from toolkit.units import si

    m, b = rec.metrics, getattr(rec, "burn_in", {}) or {}
    parts = [f"{m.get('iterations_total', 0)} matmuls in {m.get('burn_in_seconds', 0):.0f} s"]
    parts.append(f"{m.get('errors_total', 0)} errors")
    if m.get("last_minute_flops_per_second"):
        ratio = m.get("sustained_flops_ratio")
        parts.append(
            f"last minute {si(m['last_minute_flops_per_second'], 'FLOP/s')}"
            + (f" ({ratio:.0%} of the first)" if ratio else "")
        )
    if m.get("temperature_max_celsius") is not None:
        parts.append(f"max {m['temperature_max_celsius']:g} °C")
    if m.get("power_max_watts") is not None:
        limit = m.get("power_limit_watts")
        parts.append(
            f"power mean {m.get('power_mean_watts') or 0:.0f} W, max {m['power_max_watts']:.0f} W"
            + (f" of {limit:.0f} W" if limit else "")
        )
    parts.append((b.get("throttle") or {}).get("summary") or "throttling not sampled: no NVML readings")
    return ", ".join(parts)
