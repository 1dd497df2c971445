"""Vector search on the same seeded data: qdrant-edge HNSW (several ef) vs qdrant-edge exact search vs
qdrant-client's local mode (`QdrantClient(":memory:")`, pure Python + numpy brute force): query/s and
recall@10 against the exact search. Goal: HNSW at recall@10 >= 0.95 at least 5x the exact-search query/s
at 100k vectors.

    .venv/bin/python benchmarks/vectors.py [--points 100000] [--dim 128] [--ef 32,64,96,128,192,256]

Same data and code as the `vectors` load of `toolkit bench` (toolkit/bench/workloads/vectors.py): points
mixed from 32 random directions plus 10% noise, cosine, HNSW built by optimize() after the upserts.
One query per call, no filter. The engines run alternately, round after round, so machine noise hits
them alike; each figure is the median over the rounds. Compare ratios, not absolute rates.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from toolkit.atomic import write_text_atomic  # noqa: E402
from toolkit.bench.timing import percentile  # noqa: E402
from toolkit.bench.vector_store import EdgeStore, IndexSpec  # noqa: E402
from toolkit.bench.workloads.vectors import SyntheticVectors, recall_at_10  # noqa: E402

GOAL_RECALL = 0.95
GOAL_SPEEDUP = 5.0


def local_mode(data: SyntheticVectors, points: int, chunk: int):
    """qdrant-client's local mode holding the same points; returns (client, upsert seconds)."""
    import warnings

    from qdrant_client import QdrantClient
    from qdrant_client.http import models

    client = QdrantClient(":memory:")
    client.create_collection(
        "bench", vectors_config=models.VectorParams(size=data.dim, distance=models.Distance.COSINE)
    )
    seconds = 0.0
    for first, vectors in data.points(points, chunk):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # local mode warns above 20k points: that is what is measured
            client.upsert(
                "bench",
                points=models.Batch(ids=list(range(first, first + len(vectors))), vectors=vectors.tolist()),
            )
        seconds += time.perf_counter() - t0
    return client, seconds


def timed(fn, queries) -> tuple[list[list[int]], list[float]]:
    results, times = [], []
    for q in queries:
        t0 = time.perf_counter()
        results.append(fn(q))
        times.append(time.perf_counter() - t0)
    return results, times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef", default="32,64,96,128,192,256", help="comma-separated hnsw_ef values")
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construct", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-local", action="store_true", help="skip qdrant-client's local mode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    efs = sorted({int(e) for e in args.ef.split(",")})

    data = SyntheticVectors(args.dim, 32, 0.1, args.seed)
    queries = data.queries(args.queries)
    chunk = 2_000
    edge = EdgeStore()
    try:
        edge.create(IndexSpec(args.dim, args.m, args.ef_construct, 10, 10))
        upsert = 0.0
        for first, vectors in data.points(args.points, chunk):
            t0 = time.perf_counter()
            edge.upsert(first, vectors, [0] * len(vectors))
            upsert += time.perf_counter() - t0
        build = edge.build_index(timeout=0)
        info = edge.index_info()
        local, local_upsert = (None, None) if args.no_local else local_mode(data, args.points, chunk)
        print(
            f"{args.points:,} x {args.dim}-d cosine, {args.queries} queries, m={args.m}, "
            f"ef_construct={args.ef_construct}, {args.rounds} rounds",
            file=sys.stderr,
        )
        print(
            f"edge: upsert {args.points / upsert:,.0f} points/s, HNSW build {build:.1f} s "
            f"({info['indexed_vectors_count']:,} of {info['points_count']:,} indexed, "
            f"{info['segments_count']} segments)"
            + (f"; local mode: upsert {args.points / local_upsert:,.0f} points/s" if local else ""),
            file=sys.stderr,
        )

        engines = {"edge exact": lambda q: edge.search(q, 10, exact=True)}
        for ef in efs:
            engines[f"edge HNSW ef={ef}"] = lambda q, ef=ef: edge.search(q, ef)
        if local is not None:
            engines["qdrant-client local"] = lambda q: [
                p.id
                for p in local.query_points("bench", query=q.tolist(), limit=10, with_payload=False).points
            ]
        qps = {name: [] for name in engines}
        latency = {name: [] for name in engines}
        found: dict[str, list] = {}
        for r in range(args.rounds):
            for name, fn in engines.items():
                results, times = timed(fn, queries)
                qps[name].append(len(queries) / sum(times))
                latency[name].extend(times)
                found.setdefault(name, results)
                print(f"round {r + 1}: {name} {qps[name][-1]:,.0f} query/s", file=sys.stderr)
    finally:
        edge.close()

    truth = found["edge exact"]
    base = statistics.median(qps["edge exact"])
    rows = []
    for name in engines:
        med = statistics.median(qps[name])
        rows.append(
            {
                "engine": name,
                "queries_per_second": med,
                "vs_exact": med / base,
                "recall_at_10": recall_at_10(found[name], truth),
                "latency_seconds_p50": percentile(latency[name], 0.5),
                "latency_seconds_p99": percentile(latency[name], 0.99),
            }
        )
    print(f"{'engine':<22} {'query/s':>9} {'x exact':>8} {'recall@10':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for row in rows:
        print(
            f"{row['engine']:<22} {row['queries_per_second']:>9,.0f} {row['vs_exact']:>8.2f} "
            f"{row['recall_at_10']:>10.3f} {row['latency_seconds_p50'] * 1e3:>8.2f} "
            f"{row['latency_seconds_p99'] * 1e3:>8.2f}"
        )
    good = [r for r in rows if r["engine"].startswith("edge HNSW") and r["recall_at_10"] >= GOAL_RECALL]
    # the chosen ef: the smallest that reaches the recall (a larger one only looks faster by noise)
    best = good[0] if good else None
    goal = f"goal HNSW recall@10 >= {GOAL_RECALL} at >= {GOAL_SPEEDUP}x exact"
    if best is None:
        print(f"{goal}: NOT met (no ef reaches the recall)")
    else:
        met = "met" if best["vs_exact"] >= GOAL_SPEEDUP else "NOT met"
        print(
            f"{goal}: {met} ({best['engine']}: recall {best['recall_at_10']:.3f} "
            f"at {best['vs_exact']:.1f}x exact)"
        )
    if args.json:
        doc = {
            "points": args.points,
            "dim": args.dim,
            "queries": args.queries,
            "m": args.m,
            "ef_construct": args.ef_construct,
            "rounds": args.rounds,
            "edge_upsert_points_per_second": args.points / upsert,
            "edge_index_build_seconds": build,
            "local_upsert_points_per_second": args.points / local_upsert if local_upsert else None,
            "rows": rows,
        }
        write_text_atomic(args.json, json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
