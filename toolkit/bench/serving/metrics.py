"""One definition per metric (`DEFINITIONS`, written into the docs and every result), matching vLLM's
`bench serve` where the published tools disagree (vLLM's TPOT is what AIPerf and GuideLLM call "ITL").

Per request, from the client's stamps (`client.Outcome`) and the server's token count:
TTFT, TPOT, e2e, chunk gaps, tokens per chunk, ITL (only where one token per chunk is verified), queueing.
Per level: p50/p90/p99 (linear interpolation between order statistics), mean, min, max; request and
output-token throughput; goodput under the user's SLO.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

DEFINITIONS = {
    "ttft_s": "time to first token: request sent -> first chunk that carries generated text "
    "(role-only, empty and usage-only chunks do not count)",
    "tpot_s": "time per output token, per request: (last token chunk time - first token chunk time) / "
    "(output tokens - 1), output tokens as the server counted them (vLLM's TPOT)",
    "itl_s": "inter-token latency: gaps between consecutive token chunks, reported only where every "
    "chunk carried exactly one token (verified against the server's count); else null",
    "chunk_gap_s": "gaps between consecutive chunks that carry generated text, always reported",
    "tokens_per_chunk": "output tokens / chunks carrying generated text, per request",
    "e2e_s": "end-to-end latency: request sent -> end of the stream",
    "queue_s": "client-side queueing: when a Poisson arrival was due -> when it was sent (0 in closed loops)",
    "request_throughput_rps": "completed valid requests / (last stream end - first request sent)",
    "output_throughput_tps": "output tokens of valid requests / the same duration",
    "goodput_rps": "valid requests meeting every --slo target / the same duration (null without --slo)",
}


@dataclass(frozen=True)
class RequestFigures:
    ttft: float | None
    tpot: float | None
    e2e: float
    queue: float
    tokens: int  # output tokens (server's count, else counted chunks)
    chunk_gaps: list[float]
    tokens_per_chunk: float | None
    one_per_chunk: bool


def output_tokens(outcome) -> int:
    stream = outcome.stream
    if stream.output_tokens is not None:
        return stream.output_tokens
    return sum(n if n else 1 for _, n in stream.token_chunks)


def figures(outcome) -> RequestFigures:
    chunks = outcome.stream.token_chunks
    times = [t for t, _ in chunks]
    tokens = output_tokens(outcome)
    told = [n for _, n in chunks if n is not None]
    one_per_chunk = bool(chunks) and (
        all(n == 1 for n in told) if len(told) == len(chunks) else tokens == len(chunks)
    )
    first = times[0] if times else None
    tpot = (times[-1] - times[0]) / (tokens - 1) if len(times) > 1 and tokens > 1 else None
    return RequestFigures(
        ttft=first - outcome.sent if first is not None else None,
        tpot=tpot,
        e2e=outcome.end - outcome.sent,
        queue=max(0.0, outcome.sent - outcome.scheduled) if outcome.scheduled is not None else 0.0,
        tokens=tokens,
        chunk_gaps=[b - a for a, b in itertools.pairwise(times)],
        tokens_per_chunk=tokens / len(chunks) if chunks else None,
        one_per_chunk=one_per_chunk,
    )


def percentile(ordered: list[float], q: float) -> float:
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary(values: list[float]) -> dict | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "mean": sum(values) / len(values),
        "min": values[0],
        "max": values[-1],
        "n": len(values),
    }


def meets(fig: RequestFigures, slo: dict[str, float]) -> bool:
    """Whether one request met every SLO target (`ttft`, `tpot`, `e2e`, seconds)."""
    values = {"ttft": fig.ttft, "tpot": fig.tpot, "e2e": fig.e2e}
    for key, limit in slo.items():
        value = values[key]
        if value is None and key == "tpot":  # a one-token answer has no TPOT to miss
            continue
        if value is None or value > limit:
            return False
    return True


def level_metrics(outcomes: list, slo: dict[str, float] | None) -> dict:
    """The level's figures over its valid requests (status ok); throughput over the level's span."""
    valid = [o for o in outcomes if o.status == "ok"]
    figs = [figures(o) for o in valid]
    span = (max(o.end for o in outcomes) - min(o.sent for o in outcomes)) if outcomes else 0.0
    every_one = bool(figs) and all(f.one_per_chunk for f in figs)
    tokens = sum(f.tokens for f in figs)
    result = {
        "ttft_s": summary([f.ttft for f in figs]),
        "tpot_s": summary([f.tpot for f in figs]),
        "itl_s": summary([g for f in figs for g in f.chunk_gaps]) if every_one else None,
        "chunk_gap_s": summary([g for f in figs for g in f.chunk_gaps]),
        "tokens_per_chunk": summary([f.tokens_per_chunk for f in figs]),
        "e2e_s": summary([f.e2e for f in figs]),
        "queue_s": summary([f.queue for f in figs]),
        "request_throughput_rps": len(valid) / span if span > 0 else None,
        "output_throughput_tps": tokens / span if span > 0 else None,
        "goodput_rps": None,
        "duration_s": span,
        "output_tokens": tokens,
    }
    if slo and span > 0:
        result["goodput_rps"] = sum(1 for f in figs if meets(f, slo)) / span
    return result


def server_side(outcomes: list, client: dict) -> dict | None:
    """The server's own timings (llama.cpp `timings`, Ollama's durations) beside the client's: means, never
    histogram percentiles; the difference of the means is the serving stack's overhead."""
    valid = [o.stream for o in outcomes if o.status == "ok"]
    prefill = [s.server_prefill_s for s in valid if s.server_prefill_s is not None]
    per_token = [
        s.server_decode_s / s.server_decode_tokens
        for s in valid
        if s.server_decode_s is not None and s.server_decode_tokens
    ]
    if not prefill and not per_token:
        return None
    ttft, tpot = summary(prefill), summary(per_token)
    return {
        "ttft_s": ttft,
        "tpot_s": tpot,
        "overhead_ttft_s": client["ttft_s"]["mean"] - ttft["mean"] if ttft and client["ttft_s"] else None,
        "overhead_tpot_s": client["tpot_s"]["mean"] - tpot["mean"] if tpot and client["tpot_s"] else None,
    }
