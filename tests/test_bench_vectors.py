"""The `vectors` load of `toolkit bench`, run for real at tiny scale.

Embedded: the real Qdrant engine in-process (qdrant-edge-py). Server: `--qdrant-url` against
tests/qdrant_server.py, Qdrant's REST shapes over the same engine, driven through qdrant-client (the Qdrant
server itself cannot be installed here, docs/TESTING.md §4). Recall is computed by the load against exact
search on the same engine; these tests assert it, and that a weak index fails the check.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import warnings

import jsonschema
import pytest
from qdrant_server import QdrantServer, QdrantState

from conftest import load_schema, toolkit

KEY = "vk-Secret-Qdrant-Key-5512"
TINY = ("bench", "--scale", "tiny", "--workloads", "vectors")
METRICS = (
    "upsert_points_per_second",
    "index_build_seconds",
    "queries_per_second",
    "batch_queries_per_second",
    "filtered_queries_per_second",
    "exact_queries_per_second",
    "filtered_exact_queries_per_second",
    "hnsw_speedup_vs_exact",
    "recall_at_10",
    "batch_recall_at_10",
    "filtered_recall_at_10",
    "latency_seconds_p50",
    "latency_seconds_p99",
)


def run_vectors(tmp_path, *extra: str, env: dict | None = None, timeout: int = 300):
    """`toolkit bench --scale tiny --workloads vectors`; TMPDIR is a folder of the test's own, so what the
    load leaves behind there can be seen."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    json_path = tmp_path / "run.json"
    proc = toolkit(
        *TINY,
        "--json",
        str(json_path),
        "--results-dir",
        str(tmp_path / "results"),
        *extra,
        env={"TMPDIR": str(tmp), **(env or {})},
        timeout=timeout,
    )
    doc = json.loads(json_path.read_text()) if json_path.exists() else None
    return proc, doc


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed when the block ends: nothing listens there


def assert_measured(rec: dict, points: int) -> None:
    m = rec["metrics"]
    for name in METRICS:
        assert m[name] > 0 and math.isfinite(m[name]), name
    assert m["recall_at_10"] >= 0.95 and rec["expected"]["recall_at_10"]["status"] == "pass"
    assert rec["expected"]["recall_at_10"]["min"] == 0.95
    assert m["filtered_recall_at_10"] >= 0.9
    # the baseline is this run's exact search, and the ratio is computed from the two rates
    assert math.isclose(m["hnsw_speedup_vs_exact"], m["queries_per_second"] / m["exact_queries_per_second"])
    assert m["latency_seconds_p50"] <= m["latency_seconds_p99"]
    assert m["indexed_vectors_ratio"] == 1.0 and rec["config"]["index"]["indexed_vectors_count"] == points
    assert rec["config"]["index"]["points_count"] == points


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("vectors-embedded")
    proc, doc = run_vectors(tmp_path)
    return proc, doc, tmp_path


def test_embedded_load_measures_recall_against_exact_search(embedded):
    proc, doc, _ = embedded
    assert proc.returncode == 0, proc.stderr
    jsonschema.validate(doc, load_schema())
    # the vectors load needs no measured peaks: run alone, it runs alone
    assert [r["workload"] for r in doc["results"]] == ["vectors"]
    rec = doc["results"][0]
    assert rec["status"] == "pass" and doc["verdict"] == "pass"
    cfg = rec["config"]
    assert cfg["backend"]["engine"] == "qdrant-edge (in-process)"
    assert cfg["points"] == 3000 and cfg["dim"] == 64 and cfg["distance"] == "cosine"
    assert cfg["cpu_cores"] == os.cpu_count()
    assert_measured(rec, cfg["points"])
    assert rec["warmup"]["queries"] == 10
    # tiny scale: the speedup is reported, not checked, and the report says why
    assert "hnsw_speedup_vs_exact" not in rec["expected"]
    assert any("reported, not checked" in n for n in rec["notes"])
    assert any("GPU indexing: off" in n for n in rec["notes"])


def test_embedded_load_removes_its_shard_and_prints_its_figures(embedded):
    proc, _, tmp_path = embedded
    assert list((tmp_path / "tmp").iterdir()) == []  # the temporary shard folder is gone
    assert "vectors: recall@10" in proc.stderr and "exact query/s" in proc.stderr
    assert "HNSW / exact" in proc.stdout and "filtered recall@10" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_a_weak_index_fails_the_recall_check(tmp_path):
    # m=2, ef_construct=4, ef=1: the graph is too sparse to find the exact top-10
    proc, doc = run_vectors(
        tmp_path, "--set", "vectors.m=2", "--set", "vectors.ef_construct=4", "--set", "vectors.ef=1"
    )
    rec = doc["results"][0]
    assert rec["metrics"]["recall_at_10"] < 0.95
    assert rec["expected"]["recall_at_10"]["status"] == "fail"
    assert rec["status"] == "fail" and doc["verdict"] == "fail" and proc.returncode == 1


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("vectors.dim=0", "vectors.dim must be at least 1, not 0"),
        ("vectors.dim=70000", "vectors.dim must be at most 65536, not 70000"),
        ("vectors.dim=abc", "is not a valid int"),
        # 2e9 x 64-d: the shard would not fit in the temporary folder (checked before any load runs)
        ("vectors.points=2000000000", "GB free in"),
    ],
)
def test_bad_size_is_a_usage_error_before_anything_runs(tmp_path, setting, message):
    proc, doc = run_vectors(tmp_path, "--set", setting)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("toolkit: error:") and message in lines[0]
    assert len(lines) <= 2 and "Traceback" not in proc.stderr
    assert doc is None and not list((tmp_path / "results").glob("*"))


def test_unreachable_server_is_a_usage_error_quickly(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    t0 = time.monotonic()
    proc, doc = run_vectors(tmp_path, "--qdrant-url", url, timeout=60)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    assert f"cannot reach Qdrant at {url}" in proc.stderr and "hint:" in proc.stderr
    assert "Traceback" not in proc.stderr and doc is None
    assert not list((tmp_path / "results").glob("*"))  # preflight: nothing ran, nothing saved
    assert elapsed < 30


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--qdrant-url", "ftp://127.0.0.1:6333"), {}, "must be an http:// or https:// URL"),
        (("--qdrant-url", f"http://admin:{KEY}@127.0.0.1:6333"), {}, "must not carry credentials"),
        (("--qdrant-url", "http://127.0.0.1:6333", "--qdrant-api-key-env", "NO_SUCH_VAR_X"), {}, "not set"),
        (("--qdrant-api-key-env", "QK"), {"QK": KEY}, "--qdrant-api-key-env needs --qdrant-url"),
    ],
)
def test_bad_server_options_are_usage_errors(tmp_path, args, env, message):
    proc, _ = run_vectors(tmp_path, *args, env=env)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert KEY not in proc.stderr + proc.stdout


def test_qdrant_url_without_the_vectors_load_is_refused(tmp_path):
    proc = toolkit(
        *("bench", "--scale", "tiny", "--workloads", "matmul", "--qdrant-url", "http://127.0.0.1:6333"),
        *("--results-dir", str(tmp_path)),
    )
    assert proc.returncode == 2 and "add vectors to --workloads" in proc.stderr


# ---- against a server: tests/qdrant_server.py, through qdrant-client ----------------------------------


def server_client(server: QdrantServer):
    from qdrant_client import QdrantClient

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Api key is used with an insecure connection"
        return QdrantClient(url=server.url, api_key=KEY, prefer_grpc=False, timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One server run: a user collection is there before, GPU indexing is on in the server's telemetry."""
    from qdrant_client.http import models

    tmp_path = tmp_path_factory.mktemp("vectors-server")
    state = QdrantState(api_key=KEY, gpu_build=True, gpu_indexing=True, gpu_devices=["NVIDIA L4"])
    with QdrantServer(state) as server:
        client = server_client(server)
        client.create_collection("user-data", vectors_config=models.VectorParams(size=4, distance="Cosine"))
        client.upsert("user-data", points=[models.PointStruct(id=7, vector=[0.1, 0.2, 0.3, 0.4])])
        before = len(state.requests)
        proc, doc = run_vectors(
            *(tmp_path, "--qdrant-url", server.url, "--qdrant-api-key-env", "TOOLKIT_TEST_QK"),
            env={"TOOLKIT_TEST_QK": KEY},
        )
        requests = state.requests[before:]  # the run's own requests
        after = sorted(c.name for c in client.get_collections().collections)
        user_points = client.count("user-data").count
        client.close()
    return proc, doc, tmp_path, after, user_points, requests


def test_server_load_measures_recall_through_qdrant_client(served):
    proc, doc, *_ = served
    assert proc.returncode == 0, proc.stderr
    jsonschema.validate(doc, load_schema())
    rec = doc["results"][0]
    backend = rec["config"]["backend"]
    assert backend["engine"] == "Qdrant server (REST, qdrant-client)"
    assert backend["collection"].startswith("toolkit-bench-")
    assert backend["api_key_env"] == "TOOLKIT_TEST_QK" and backend["api_key"] == "set"
    assert_measured(rec, rec["config"]["points"])


def test_server_load_reports_gpu_indexing_from_telemetry(served):
    _, doc, *_ = served
    backend = doc["results"][0]["config"]["backend"]
    assert backend["server_gpu_build"] is True and backend["server_gpu_devices"] == ["NVIDIA L4"]
    assert backend["gpu_indexing"].startswith("on") and "NVIDIA L4" in backend["gpu_indexing"]


def test_server_load_deletes_its_collection_and_leaves_the_users_alone(served):
    _, doc, _, after, user_points, requests = served
    assert after == ["user-data"] and user_points == 1
    ours = doc["results"][0]["config"]["backend"]["collection"]
    touched = {path.split("/")[2] for _, path, _ in requests if path.startswith("/collections/")}
    # the preflight's probe collection and the load's own: both toolkit-bench-*, never the user's
    assert ours in touched and all(name.startswith("toolkit-bench-") for name in touched)
    deleted = [path for method, path, _ in requests if method == "DELETE"]
    assert len(deleted) == 2 and f"/collections/{ours}" in deleted


def test_api_key_never_in_outputs(served):
    proc, doc, tmp_path, *_ = served
    saved = "".join(p.read_text() for p in (tmp_path / "results").iterdir())
    for text in (proc.stdout, proc.stderr, json.dumps(doc), saved):
        assert KEY not in text
    assert any("plain HTTP" in n for n in doc["results"][0]["notes"])


def test_wrong_api_key_is_a_usage_error_and_creates_nothing(tmp_path):
    state = QdrantState(api_key=KEY)
    with QdrantServer(state) as server:
        wrong = "vk-Wrong-Key-0000"
        proc, doc = run_vectors(
            *(tmp_path, "--qdrant-url", server.url, "--qdrant-api-key-env", "QK"),
            env={"QK": wrong},
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        assert "refused the API key" in proc.stderr and "check the key in $QK" in proc.stderr
        assert wrong not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr
        assert doc is None and not server.collections
        assert not [r for r in state.requests if r[0] in ("PUT", "POST")]
        # no key at all: the hint says how to give one
        proc, _ = run_vectors(tmp_path, "--qdrant-url", server.url, timeout=60)
        assert proc.returncode == 2 and "wants an API key" in proc.stderr
        assert "--qdrant-api-key-env" in proc.stderr


def test_a_busy_machine_makes_a_slow_figure_inconclusive_but_not_a_low_recall():
    """Competing load slows a search; it does not change what the search finds: a recall below its floor
    fails on a busy machine too, while a throughput shortfall there is inconclusive."""
    from toolkit.bench.record import WorkloadRecord

    rec = WorkloadRecord("vectors", metrics={"recall_at_10": 0.5, "queries_per_second": 10.0})
    rec.check("recall_at_10", 0.95, "recall floor", warn_ratio=1.0, timed=False)
    rec.check("queries_per_second", 100.0, "rate floor", warn_ratio=0.9)
    rec.judge({"busy": True, "evidence": "2 other processes used 1.5 cores"})
    assert rec.expected["recall_at_10"]["status"] == "fail"
    assert rec.expected["queries_per_second"]["status"] == "inconclusive"
