"""Whether a level's figures may be believed. A check that fails makes the level (and the run) fail
instead of passing quietly:

- `streams_complete`: every stream ended properly (finish_reason / [DONE] / done / stop), HTTP 200,
  parseable, in time;
- `exact_lengths`: every answer had exactly the tokens asked for where the API can force it (`ignore_eos`);
  Ollama cannot, so its figures are per token and the check says so;
- `counts_reconcile`: the server's per-request counts sum to its /metrics counter delta, and no answer has
  more token-carrying chunks than the server says it generated; without any count from the server the
  chunks are counted instead, flagged (warn);
- `cached_prompt_tokens`: zero prompt tokens served from a cache (prompts are unique per run);
- `chunking`: chunks that bunch several tokens (ITL is then not reported; warn) or arrive in one burst
  at the end (fail where the server's own decode time shows it; warn from the client's stamps alone);
- `slo`: with --slo, every request at concurrency 1 met the targets (the server cannot meet them even
  unloaded otherwise); at higher levels goodput is reported, not judged.
"""

from __future__ import annotations

from toolkit.bench.serving.metrics import figures, meets, output_tokens

BURST_SHARE = 0.5  # a stream whose token chunks span under this share of the server's decode time bursts
BUNCHED = 1.05  # mean tokens per chunk above this: chunks carry several tokens


def _check(name: str, status: str, detail: str) -> dict:
    return {"name": name, "status": status, "detail": detail}


def streams_complete(outcomes: list) -> dict:
    bad = [o for o in outcomes if o.status not in ("ok", "short")]
    if not bad:
        return _check(
            "streams_complete", "pass", f"{len(outcomes)} of {len(outcomes)} streams ended properly"
        )
    kinds: dict[str, int] = {}
    for o in bad:
        kinds[o.status] = kinds.get(o.status, 0) + 1
    spelled = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    return _check(
        "streams_complete", "fail", f"{len(bad)} of {len(outcomes)} streams did not end properly: {spelled}"
    )


def mark_short(outcomes: list, requested: int, forced: bool) -> None:
    """A valid stream with fewer tokens than forced becomes `short` (it no longer counts as valid)."""
    if not forced:
        return
    for o in outcomes:
        if o.status == "ok" and output_tokens(o) != requested:
            o.status, o.detail = "short", f"{output_tokens(o)} tokens, {requested} asked (ignore_eos)"


def exact_lengths(outcomes: list, requested: int, forced: bool) -> dict:
    if not forced:
        return _check("exact_lengths", "pass", "not forceable with this API: figures are per token")
    short = [o for o in outcomes if o.status == "short"]
    if short:
        return _check(
            "exact_lengths",
            "fail",
            f"{len(short)} of {len(outcomes)} answers were not {requested} tokens long",
        )
    return _check("exact_lengths", "pass", f"every answer {requested} tokens (ignore_eos)")


def counts_reconcile(outcomes: list, server_deltas: dict) -> dict:
    valid = [o for o in outcomes if o.status in ("ok", "short")]
    sources = {o.stream.count_source for o in valid}
    if not valid:
        return _check("counts_reconcile", "fail", "no valid answer to count")
    over = [
        o
        for o in valid
        if o.stream.output_tokens is not None and len(o.stream.token_chunks) > o.stream.output_tokens
    ]
    if over:
        return _check(
            "counts_reconcile", "fail", f"{len(over)} answers carried more chunks than counted tokens"
        )
    counted = sum(output_tokens(o) for o in outcomes if o.status != "unreachable")
    if "output_tokens" in server_deltas:
        delta = round(server_deltas["output_tokens"])
        if delta != counted:
            return _check(
                "counts_reconcile", "fail", f"client counted {counted} output tokens, server /metrics {delta}"
            )
        if None not in sources:
            return _check(
                "counts_reconcile", "pass", f"{counted} tokens: per-request counts = /metrics delta"
            )
        return _check("counts_reconcile", "pass", f"{counted} tokens from /metrics (no per-request counts)")
    if None in sources:
        return _check(
            "counts_reconcile",
            "warn",
            "the server sent no token counts and has no /metrics: chunks were counted (flagged)",
        )
    return _check(
        "counts_reconcile", "pass", f"per-request counts from the server ({', '.join(sorted(sources))})"
    )


def cached_prompt_tokens(outcomes: list, server_deltas: dict) -> dict:
    per_request = sum(o.stream.cached_prompt_tokens or 0 for o in outcomes)
    from_metrics = round(server_deltas.get("cached_prompt_tokens") or 0)
    total = max(per_request, from_metrics)
    if total:
        return _check("cached_prompt_tokens", "fail", f"{total} prompt tokens came from a cache")
    return _check("cached_prompt_tokens", "pass", "0 prompt tokens from a cache (unique prompts)")


def chunking(outcomes: list) -> dict:
    valid = [o for o in outcomes if o.status == "ok"]
    figs = [figures(o) for o in valid]
    bursts, suspects = 0, 0
    for o, f in zip(valid, figs, strict=True):
        times = [t for t, _ in o.stream.token_chunks]
        if f.tokens < 4 or len(times) < 2:
            continue
        span = times[-1] - times[0]
        decode = o.stream.server_decode_s
        if decode and span < BURST_SHARE * decode:
            bursts += 1
        elif decode is None and len(times) < f.tokens / 2 and span < 0.1 * f.e2e:
            suspects += 1
    if bursts:
        return _check("chunking", "fail", f"{bursts} answers arrived in a burst (server decoded for longer)")
    bunched = [f.tokens_per_chunk for f in figs if f.tokens_per_chunk and f.tokens_per_chunk > BUNCHED]
    if suspects:
        return _check("chunking", "warn", f"{suspects} answers arrived in a burst at the end")
    if bunched:
        worst = max(bunched)
        return _check(
            "chunking",
            "warn",
            f"{len(bunched)} answers bunched tokens (up to {worst:.1f} per chunk): ITL not reported",
        )
    return _check(
        "chunking", "pass", "one token per chunk" if figs and all(f.one_per_chunk for f in figs) else "ok"
    )


def slo(outcomes: list, targets: dict | None, concurrency: int | None) -> dict | None:
    if not targets:
        return None
    valid = [o for o in outcomes if o.status == "ok"]
    met = sum(1 for o in valid if meets(figures(o), targets))
    detail = f"{met} of {len(outcomes)} requests met " + ", ".join(
        f"{k}<={v * 1e3:g} ms" for k, v in targets.items()
    )
    if concurrency == 1 and met < len(outcomes):
        return _check("slo", "fail", detail + " at concurrency 1")
    return _check("slo", "pass", detail)


def level_checks(
    outcomes: list, requested: int, forced: bool, server_deltas: dict, targets, concurrency
) -> list:
    mark_short(outcomes, requested, forced)
    found = [
        streams_complete(outcomes),
        exact_lengths(outcomes, requested, forced),
        counts_reconcile(outcomes, server_deltas),
        cached_prompt_tokens(outcomes, server_deltas),
        chunking(outcomes),
        slo(outcomes, targets, concurrency),
    ]
    return [c for c in found if c]


def worst(statuses) -> str:
    order = {"pass": 0, "warn": 1, "fail": 2, "error": 3}
    return max(statuses, key=lambda s: order.get(s, 3), default="pass")
