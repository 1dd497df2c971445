"""The `--serve` client's own overhead against a server with known timing (tests/serving_server.py,
simulated), at 1,000 tokens/s: one token every 1 ms. Target: under 1 % of that gap (10 µs).

Three figures, median/min/max over `--runs` runs:
- parse: the client's CPU time per chunk (readline from memory + the API's parser), the work that sits
  between two reads of the socket;
- TPOT error: |client TPOT - the server's TPOT from its own send stamps| / the server's TPOT, one stream of
  `--tokens` tokens per run (the same CLOCK_MONOTONIC on both sides);
- stamp lag: client stamp - server send stamp per chunk (the kernel's loopback delivery and thread wake-up
  included: not the client's code alone, shown for scale).

    .venv/bin/python benchmarks/serving_overhead.py                 # 5 runs, 500 tokens, gap 1 ms
    .venv/bin/python benchmarks/serving_overhead.py --api ollama --runs 3
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from serving_server import Scenario, ServingServer  # noqa: E402

from toolkit.bench.serving.api import Stream, feed, request_for  # noqa: E402
from toolkit.bench.serving.client import Target, stream_request  # noqa: E402
from toolkit.bench.serving.metrics import figures  # noqa: E402

LINES = {
    "openai": lambda i: (
        "data: "
        + json.dumps(
            {
                "id": "cmpl-1",
                "object": "text_completion",
                "choices": [{"index": 0, "text": f" t{i}", "finish_reason": None}],
            }
        )
        + "\n\n"
    ),
    "llamacpp": lambda i: "data: " + json.dumps({"content": f" t{i}", "stop": False}) + "\n\n",
    "ollama": lambda i: (
        json.dumps({"model": "m", "created_at": "2024-01-01T00:00:00Z", "response": f" t{i}", "done": False})
        + "\n"
    ),
}


def parse_cost(api: str, chunks: int = 20000) -> float:
    """Seconds of client CPU per chunk: readline from an in-memory stream and parse."""
    data = io.BytesIO("".join(LINES[api](i) for i in range(chunks)).encode())
    stream = Stream()
    start = time.perf_counter()
    while True:
        raw = data.readline(1 << 20)
        if not raw:
            break
        feed(api, stream, raw, time.monotonic())
    took = time.perf_counter() - start
    assert len(stream.token_chunks) == chunks
    return took / chunks


def live(server: ServingServer, api: str, tokens: int) -> tuple[float, list[float]]:
    target = Target.parse(server.url)
    path, body = request_for(api, "tiny-llama", f"overhead {time.monotonic()}", tokens)
    outcome = stream_request(target, api, path, body, 60)
    assert outcome.status == "ok", outcome.detail
    sends = server.truth()[-1]["sends"]
    true_tpot = (sends[-1] - sends[0]) / (len(sends) - 1)
    error = abs(figures(outcome).tpot - true_tpot) / true_tpot
    lags = [c - s for (c, _), s in zip(outcome.stream.token_chunks, sends, strict=True)]
    return error, lags


def spread(values: list[float], scale: float, unit: str) -> str:
    return (
        f"median {statistics.median(values) * scale:.3f} {unit}, "
        f"min {min(values) * scale:.3f}, max {max(values) * scale:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", choices=sorted(LINES), default="openai")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--gap", type=float, default=0.001)
    args = parser.parse_args()
    costs = [parse_cost(args.api) for _ in range(args.runs)]
    errors, lags = [], []
    with ServingServer(Scenario(flavour=args.api, ttft_s=0.01, gap_s=args.gap)) as server:
        for _ in range(args.runs):
            error, lag = live(server, args.api, args.tokens)
            errors.append(error)
            lags.append(statistics.median(lag))
    gap_us = args.gap * 1e6
    print(f"api {args.api}, {args.runs} runs, {args.tokens} tokens at one per {args.gap * 1e3:g} ms")
    share = statistics.median(costs) * 1e6 / gap_us * 100
    print(f"parse per chunk: {spread(costs, 1e6, 'µs')} = {share:.2f} % of the gap")
    print(f"TPOT error:      {spread(errors, 100, '%')}")
    print(f"stamp lag (median per run): {spread(lags, 1e6, 'µs')}")


if __name__ == "__main__":
    main()
