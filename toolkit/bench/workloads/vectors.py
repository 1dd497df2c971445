"""Reference load 3: vector search with Qdrant — upsert, HNSW build, queries, recall@10.

    toolkit bench --workloads vectors                       # Qdrant in-process (qdrant-edge)
    toolkit bench --workloads vectors --qdrant-url http://HOST:6333 [--qdrant-api-key-env VAR]

Data: seeded synthetic vectors, cosine distance. Isotropic Gaussian noise has no neighbourhood
structure (at 100k x 128-d, HNSW reaches recall@10 0.81 only at ef=512), unlike real embeddings,
whose intrinsic dimension is a few tens; so a point is a random mix of `intrinsic_dim` fixed
directions plus `noise` x isotropic noise. Queries are fresh draws, not stored points. Each point
has an integer `category` payload (id mod `categories`) with a payload index.

Order: upsert, then the index build (edge: `optimize()`, nothing indexes before it; server:
indexing is on throughout, timed from the last upsert until the collection is green with every
vector indexed), then timed queries: exact search (the ground truth and the
baseline), HNSW one query per call (query/s, p50/p99 latency), HNSW in batches, and the same with a
`category` filter against filtered exact search. recall@10 = mean over the queries of
|HNSW top-10 ∩ exact top-10| / 10.

Expectations: recall@10 at least `min_recall_at_10` (0.95) at the chosen ef, no noise margin;
HNSW query/s over exact query/s of the same run at least the scale's speedup floor (bench.toml
`floors.vectors_speedup`; none at tiny scale, where exact search over a few thousand points is
as fast as a graph walk; in-process only: over REST the round trip bounds both rates). Edge
indexes on the CPU; GPU indexing needs a Qdrant server built with GPU support, and the report says
what the server's telemetry reports, it does not guess.
"""

from __future__ import annotations

import math
import os
import time

from toolkit.bench.timing import percentile
from toolkit.bench.vector_store import IndexSpec, open_store

# Qdrant 1.13 release notes, GPU indexing of 1M x 1536-d vectors (docs/REFERENCE.md, "Published
# anchors"): context for `full`.
PUBLISHED_INDEX_BUILD = {
    "source": "Qdrant 1.13 GPU indexing, 1M x 1536-d (docs/REFERENCE.md, Published anchors)",
    "seconds": {"L4 GPU": 12.4, "T4 GPU": 19.1, "8 CPU cores": 97.5, "4 CPU cores": 221.9},
}


class SyntheticVectors:
    """Seeded vectors with a low intrinsic dimension; the same seed gives the same data everywhere."""

    def __init__(self, dim: int, intrinsic_dim: int, noise: float, seed: int):
        import numpy as np

        self.dim, self.noise, self.seed = dim, noise, seed
        rng = np.random.default_rng([seed, 0])
        self.basis = (
            rng.standard_normal((intrinsic_dim, dim), dtype=np.float32) / math.sqrt(intrinsic_dim)
        ).astype(np.float32)

    def _draw(self, rng, n: int):
        import numpy as np

        mix = rng.standard_normal((n, self.basis.shape[0]), dtype=np.float32) @ self.basis
        return (mix + self.noise * rng.standard_normal((n, self.dim), dtype=np.float32)).astype(np.float32)

    def points(self, count: int, chunk: int):
        """(first id, vectors) chunks of the stored points."""
        import numpy as np

        rng = np.random.default_rng([self.seed, 1])
        for first in range(0, count, chunk):
            yield first, self._draw(rng, min(chunk, count - first))

    def queries(self, count: int):
        import numpy as np

        return self._draw(np.random.default_rng([self.seed, 2]), count)


def recall_at_10(found: list[list[int]], truth: list[list[int]]) -> float:
    """Mean share of the exact top-10 that the search returned (of fewer, where the truth has fewer)."""
    shares = [len(set(f) & set(t)) / max(1, min(10, len(t))) for f, t in zip(found, truth, strict=True)]
    return sum(shares) / len(shares)


def timed_queries(run_one, items, progress) -> tuple[list, list[float]]:
    """Results and seconds per call; progress is reported outside the timed region."""
    results, times = [], []
    for i, item in enumerate(items):
        t0 = time.perf_counter()
        results.append(run_one(item))
        times.append(time.perf_counter() - t0)
        progress(i)
    return results, times


def run(ctx, rec) -> None:
    import numpy as np

    s = ctx.scale.vectors
    target = ctx.qdrant
    spec = IndexSpec(s.dim, s.m, s.ef_construct, s.full_scan_threshold_kb, s.indexing_threshold_kb)
    data = SyntheticVectors(s.dim, s.intrinsic_dim, s.noise, ctx.seed)
    queries = data.queries(s.queries)
    categories = [i % s.categories for i in range(s.queries)]
    batches = [queries[i : i + s.batch_size] for i in range(0, s.queries, s.batch_size)]
    rec.config = {
        "points": s.points,
        "dim": s.dim,
        "distance": "cosine",
        "data": f"seeded synthetic: {s.intrinsic_dim} random directions mixed + {s.noise} x isotropic noise",
        "queries": s.queries,
        "batch_size": s.batch_size,
        "upsert_batch": s.upsert_batch,
        "hnsw": {"m": s.m, "ef_construct": s.ef_construct, "ef": s.ef},
        "full_scan_threshold_kb": s.full_scan_threshold_kb,
        "indexing_threshold_kb": s.indexing_threshold_kb,
        "filter": f"category == query number mod {s.categories} (integer payload index)",
        "recall": "mean |HNSW top-10 ∩ exact top-10| / 10, exact search on the same engine",
        "cpu_cores": os.cpu_count(),
    }
    chunks = math.ceil(s.points / s.upsert_batch)
    total = chunks + 1 + min(s.warmup, s.queries) + 4 * s.queries + len(batches)
    done = {"n": 0}

    def step(_=None) -> None:
        done["n"] += 1
        if done["n"] % 10 == 0 or done["n"] == total:
            ctx.progress(done["n"], total)

    store = open_store(target)
    try:
        rec.config["backend"] = store.describe()
        if store.kind == "edge":
            rec.config["backend"]["gpu_indexing"] = "off (the in-process engine indexes on the CPU)"
        store.create(spec)

        upsert_seconds = 0.0
        for first, vectors in data.points(s.points, s.upsert_batch):
            cats = np.arange(first, first + len(vectors)) % s.categories
            t0 = time.perf_counter()
            store.upsert(first, vectors, cats)
            upsert_seconds += time.perf_counter() - t0
            step()
        rec.metrics["upsert_points_per_second"] = s.points / upsert_seconds
        rec.metrics["upsert_seconds"] = upsert_seconds

        rec.metrics["index_build_seconds"] = store.build_index(timeout=s.build_timeout_seconds)
        step()
        info = store.index_info()
        rec.config["index"] = info
        rec.metrics["indexed_vectors_ratio"] = (info["indexed_vectors_count"] or 0) / s.points

        # warm-up: the same HNSW queries, untimed, so caches and thread pools are up
        t0 = time.perf_counter()
        for q in queries[: s.warmup]:
            store.search(q, s.ef)
            step()
        rec.warmup = {"queries": min(s.warmup, s.queries), "seconds": time.perf_counter() - t0}

        truth, exact_times = timed_queries(lambda q: store.search(q, s.ef, exact=True), queries, step)
        found, hnsw_times = timed_queries(lambda q: store.search(q, s.ef), queries, step)
        batch_found, batch_times = timed_queries(lambda b: store.search_batch(b, s.ef), batches, step)
        pairs = list(zip(queries, categories, strict=True))
        f_truth, f_exact_times = timed_queries(
            lambda p: store.search(p[0], s.ef, exact=True, category=p[1]), pairs, step
        )
        f_found, f_times = timed_queries(lambda p: store.search(p[0], s.ef, category=p[1]), pairs, step)

        qps = s.queries / sum(hnsw_times)
        exact_qps = s.queries / sum(exact_times)
        rec.metrics.update(
            queries_per_second=qps,
            batch_queries_per_second=s.queries / sum(batch_times),
            filtered_queries_per_second=s.queries / sum(f_times),
            exact_queries_per_second=exact_qps,
            filtered_exact_queries_per_second=s.queries / sum(f_exact_times),
            hnsw_speedup_vs_exact=qps / exact_qps,
            recall_at_10=recall_at_10(found, truth),
            batch_recall_at_10=recall_at_10([r for b in batch_found for r in b], truth),
            filtered_recall_at_10=recall_at_10(f_found, f_truth),
            latency_seconds_p50=percentile(hnsw_times, 0.5),
            latency_seconds_p99=percentile(hnsw_times, 0.99),
            exact_latency_seconds_p50=percentile(exact_times, 0.5),
        )
    finally:
        store.close()

    _checks(ctx, rec, s)
    _notes(ctx, rec, s)


def _checks(ctx, rec, s) -> None:
    rec.check(
        "recall_at_10",
        s.min_recall_at_10,
        f"HNSW at ef={s.ef} (m={s.m}, ef_construct={s.ef_construct}) against exact search on the same "
        f"engine over {s.queries} queries; the load's recall floor (vectors.min_recall_at_10), no noise "
        "margin",
        warn_ratio=1.0,
        timed=False,  # a busy machine slows a search, it does not change what it finds
    )
    rec.check(
        "indexed_vectors_ratio",
        1.0,
        "every stored vector is in the HNSW graph (otherwise the 'HNSW' figures are exact search)",
        warn_ratio=1.0,
        timed=False,
    )
    floor, f = ctx.floor("vectors_speedup")
    speedup = rec.metrics["hnsw_speedup_vs_exact"]
    if "url" in rec.config["backend"]:
        rec.notes.append(
            f"hnsw_speedup_vs_exact {speedup:.2f}x reported, not checked: over REST every request pays "
            "the same round trip, which bounds both rates (the floors are for the engine in-process)"
        )
    elif floor:
        ctx.check(
            rec,
            "hnsw_speedup_vs_exact",
            floor,
            f"HNSW query/s over exact-search query/s of this run, {s.points:,} x {s.dim}-d, "
            f"floor {floor}x for {ctx.floor_key}",
            f,
        )
    else:
        rec.notes.append(
            f"hnsw_speedup_vs_exact {speedup:.2f}x reported, not checked: "
            f"no speedup floor for {ctx.floor_key} (at {s.points:,} points exact search is cheap and "
            "HNSW need not beat it)"
        )


def _notes(ctx, rec, s) -> None:
    backend = rec.config["backend"]
    if "url" in backend:
        rec.notes.append(
            "upsert points/s: points built and sent (REST, wait=true) with indexing on, so a server may "
            "index meanwhile; index_build_seconds: from the last upsert until the collection is green "
            "with every vector indexed"
        )
    else:
        rec.notes.append(
            "upsert points/s: points built and written, no indexing meanwhile (data generation not "
            "counted); index_build_seconds: optimize() after the last upsert (HNSW with payload-aware "
            "links, on the CPU)"
        )
    rec.notes.append(f"GPU indexing: {backend['gpu_indexing']}")
    if "url" in backend:
        rec.notes.append(
            "GPU indexing on vs off is a server setting (gpu.indexing): run once against a server with it on "
            "and once with it off to compare index_build_seconds"
        )
        if backend["url"].startswith("http://") and backend.get("api_key") == "set":
            rec.notes.append("the API key went over plain HTTP (use https:// beyond a trusted network)")
    if s.points == 1_000_000 and s.dim == 1536:
        rec.config["reference_index_build"] = PUBLISHED_INDEX_BUILD
        published = ", ".join(f"{k} {v} s" for k, v in PUBLISHED_INDEX_BUILD["seconds"].items())
        rec.notes.append(
            f"index build {rec.metrics['index_build_seconds']:.1f} s here ({os.cpu_count()} CPU cores "
            f"visible; m={s.m}, ef_construct={s.ef_construct}); published for the same size: {published}"
        )
