"""The `--serve` options: declared here, added to `toolkit bench` by commands/bench.py, read into one frozen
`ServeOptions` (usage errors, exit 2, before any request is sent)."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

from toolkit.bench.serving.api import APIS
from toolkit.errors import UsageError

SLO_KEYS = ("ttft", "tpot", "e2e")
DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s)?\s*$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("serving (--serve URL; docs/SERVING.md)")
    group.add_argument(
        "--serve",
        metavar="URL",
        help="measure a running inference server instead of the loads: streaming requests to URL "
        "(e.g. http://127.0.0.1:8080), TTFT/TPOT/throughput over a concurrency sweep",
    )
    group.add_argument(
        "--api", choices=("auto", *APIS), default="auto", help="the server's API (default: auto, probed)"
    )
    group.add_argument(
        "--slo", metavar="ttft=500ms,tpot=50ms", help="latency targets for goodput (ttft, tpot, e2e; ms or s)"
    )
    group.add_argument("--prompts", metavar="FILE", help="prompts from a JSONL file or a ShareGPT JSON list")
    group.add_argument(
        "--concurrency",
        metavar="auto|N,M",
        default="auto",
        help="auto: single stream, then 1,2,4,... up to twice the server's slots, stopping at saturation; "
        "or the levels to run",
    )
    group.add_argument(
        "--max-concurrency", type=int, default=8, metavar="N", help="sweep top when the server has no slots"
    )
    group.add_argument(
        "--requests", type=int, default=8, metavar="N", help="measured requests per level (default 8)"
    )
    group.add_argument(
        "--warmup", type=int, default=1, metavar="N", help="warm-up requests, excluded (default 1)"
    )
    group.add_argument(
        "--input-tokens", type=int, default=64, metavar="N", help="synthetic prompt length (words)"
    )
    group.add_argument(
        "--output-tokens", type=int, default=32, metavar="N", help="tokens per answer (default 32)"
    )
    group.add_argument(
        "--poisson", action="store_true", help="add Poisson arrivals at fractions of saturation"
    )
    group.add_argument(
        "--request-timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="total deadline per request (default 120)",
    )


@dataclass(frozen=True)
class ServeOptions:
    url: str
    api: str
    model: str | None
    slo: dict | None
    prompts: str | None
    levels: tuple[int, ...] | None  # None: auto
    max_concurrency: int
    requests: int
    warmup: int
    input_tokens: int
    output_tokens: int
    poisson: bool
    request_timeout: float
    json: str | None
    seed: int
    gpu_class: str | None


def parse_slo(text: str | None) -> dict | None:
    """`ttft=500ms,tpot=50ms,e2e=10s` -> {"ttft": 0.5, "tpot": 0.05, "e2e": 10.0} (seconds)."""
    if not text:
        return None
    targets = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        match = DURATION.match(value)
        if not sep or key not in SLO_KEYS or not match or float(match.group(1)) <= 0:
            raise UsageError(
                f"--slo {text!r}: {part.strip()!r} is not KEY=DURATION",
                hint="e.g. --slo ttft=500ms,tpot=50ms (keys: ttft, tpot, e2e; units ms or s)",
            )
        targets[key] = float(match.group(1)) / (1e3 if match.group(2) == "ms" else 1.0)
    return targets


def parse_levels(text: str) -> tuple[int, ...] | None:
    if text.strip().lower() == "auto":
        return None
    try:
        levels = tuple(int(p) for p in text.split(","))
    except ValueError:
        levels = ()
    if not levels or min(levels) < 1:
        raise UsageError(
            f"--concurrency {text!r} is not auto or a list of positive integers", hint="e.g. 1,2,4"
        )
    return levels


def _positive(name: str, value, minimum: float = 1) -> None:
    if value is None or value < minimum:
        raise UsageError(f"{name} must be at least {minimum:g}, not {value}")


def from_args(args: argparse.Namespace) -> ServeOptions:
    from toolkit.bench.serving.client import Target

    Target.parse(args.serve)  # the URL's usage error, before anything else
    _positive("--requests", args.requests)
    _positive("--warmup", args.warmup, 0)
    _positive("--input-tokens", args.input_tokens)
    _positive("--output-tokens", args.output_tokens)
    _positive("--max-concurrency", args.max_concurrency)
    _positive("--request-timeout", args.request_timeout, 0.1)
    return ServeOptions(
        url=args.serve,
        api=args.api,
        model=getattr(args, "model", None),
        slo=parse_slo(args.slo),
        prompts=args.prompts,
        levels=parse_levels(args.concurrency),
        max_concurrency=args.max_concurrency,
        requests=args.requests,
        warmup=args.warmup,
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
        poisson=args.poisson,
        request_timeout=args.request_timeout,
        json=getattr(args, "json", None),
        seed=getattr(args, "seed", 0) or 0,
        gpu_class=getattr(args, "profile", None),
    )
