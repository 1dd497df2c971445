"""When requests are sent: a closed loop of N concurrent streams (N = 1 is the single stream), a sweep of
concurrency 1, 2, 4, ... that stops at saturation, and Poisson arrivals at fractions of the saturation
rate that stop when the achieved rate falls behind the offered one.

Saturation: doubling the concurrency added under 10 % output-token throughput while TPOT rose (or TTFT,
for a server that queues requests beyond its slots instead of batching them); the saturation level is the
last one before that. A server whose throughput at 2 streams is within 10 % of one
stream's "serves one request at a time".
"""

from __future__ import annotations

import itertools
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from toolkit.bench.serving.client import Outcome

GAIN = 0.10  # doubling must add at least this share of throughput
RISE = 1.05  # a latency "rose" when it grew by more than 5 %
BEHIND = 0.90  # Poisson: achieved rate under this share of the offered rate stops the series
FRACTIONS = (0.25, 0.5, 0.75, 1.0)


@dataclass
class Level:
    mode: str  # single | concurrency | poisson
    concurrency: int
    outcomes: list[Outcome] = field(default_factory=list)
    target_rate_rps: float | None = None


Send = Callable[[int, float | None], Outcome]  # (request index, scheduled time or None) -> Outcome


def closed_loop(send: Send, indices: list[int], concurrency: int, stop: threading.Event) -> list[Outcome]:
    """`concurrency` workers each send the next request as soon as their last one ended."""
    work: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in indices:
        work.put(i)
    results: list[Outcome] = []
    lock = threading.Lock()

    def worker() -> None:
        while not stop.is_set():
            try:
                index = work.get_nowait()
            except queue.Empty:
                return
            outcome = send(index, None)
            with lock:
                results.append(outcome)
            if outcome.status == "unreachable":
                stop.set()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(results, key=lambda o: o.index)


def poisson(send: Send, indices: list[int], rate: float, seed: int, stop: threading.Event) -> list[Outcome]:
    """Requests due at exponential gaps of mean 1/`rate`; each starts on its own thread at its due time, so a
    slow server never slows the arrivals (what lags is recorded as the client's queueing)."""
    rng = random.Random(seed)
    results: list[Outcome] = []
    lock = threading.Lock()
    threads = []

    def one(index: int, due: float) -> None:
        outcome = send(index, due)
        with lock:
            results.append(outcome)

    due = time.monotonic()
    for index in indices:
        if stop.is_set():
            break
        due += rng.expovariate(rate)
        pause = due - time.monotonic()
        if pause > 0:
            stop.wait(pause)
        thread = threading.Thread(target=one, args=(index, due), daemon=True)
        thread.start()
        threads.append(thread)
    for t in threads:
        t.join()
    return sorted(results, key=lambda o: o.index)


def sweep_levels(slots: int | None, cap: int) -> list[int]:
    """1, 2, 4, ... up to twice the server's slots (or `cap` when it does not say)."""
    top = 2 * slots if slots else cap
    levels, c = [], 1
    while c <= max(1, top):
        levels.append(c)
        c *= 2
    if levels[-1] < top:
        levels.append(top)
    return levels


def saturation(points: list[dict]) -> dict | None:
    """points: [{"concurrency", "output_throughput_tps", "tpot_p50"}] in rising concurrency. The level past
    which doubling adds under 10 % throughput while TPOT rises."""
    usable = [p for p in points if p.get("output_throughput_tps")]
    if not usable:
        return None
    best = usable[0]
    for prev, cur in itertools.pairwise(usable):
        gain = cur["output_throughput_tps"] / prev["output_throughput_tps"] - 1
        rose = [k for k in ("tpot_p50", "ttft_p50") if (cur.get(k) or 0) > RISE * (prev.get(k) or 0)]
        if gain < GAIN and rose:
            one = prev["concurrency"] == 1
            return {
                "concurrency": prev["concurrency"],
                "output_throughput_tps": prev["output_throughput_tps"],
                "request_throughput_rps": prev.get("request_throughput_rps"),
                "one_at_a_time": one,
                "reason": f"concurrency {cur['concurrency']} added {gain * 100:+.0f} % throughput while "
                + " and ".join(k.split("_")[0].upper() for k in rose)
                + " rose"
                + ("; the server serves one request at a time" if one else ""),
                "found": True,
            }
        best = cur
    return {
        "concurrency": best["concurrency"],
        "output_throughput_tps": best["output_throughput_tps"],
        "request_throughput_rps": best.get("request_throughput_rps"),
        "one_at_a_time": False,
        "reason": f"not reached up to concurrency {best['concurrency']}: throughput still rose",
        "found": False,
    }


def should_stop_sweep(points: list[dict]) -> bool:
    """Stop the sweep once saturation is found (one more level is not worth its time)."""
    found = saturation(points)
    return bool(found and found["found"])


def behind(level_rate: float | None, target: float) -> bool:
    return level_rate is None or level_rate < BEHIND * target
