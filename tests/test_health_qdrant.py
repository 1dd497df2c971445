"""Qdrant in `toolkit health`, against tests/qdrant_server.py: Qdrant's REST shapes over the real Qdrant
engine (qdrant-edge-py). The Qdrant server itself cannot be installed here (docs/TESTING.md §4), so the HTTP
side is ours and the collections, searches and counts are the engine's. qdrant-client (the official client)
is the judge of the shapes: it parses every answer with its own models."""

from __future__ import annotations

import json
import math
import random
import re
import socket
import subprocess
import threading
import time
import warnings

import pytest
import yaml
from qdrant_server import QdrantServer, QdrantState

from toolkit.health.collectors import qdrant as collector
from toolkit.health.model import Status

from conftest import toolkit

KEY = "qk-Secret-Api-Key-7731"
QDRANT_ONLY = ("--skip", "gpu", "--skip", "docker", "--skip", "system", "--skip", "bmc")
NO_BMC = ("--skip", "bmc", "--skip", "gpu")  # docker and system still run: "the rest of the report"
EXIT = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}
PROM_LINE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? (\S+)$'
)


def client(server: QdrantServer, api_key: str | None = KEY):
    from qdrant_client import QdrantClient

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Api key is used with an insecure connection"
        return QdrantClient(url=server.url, api_key=api_key, prefer_grpc=False, timeout=10)


@pytest.fixture
def qdrant():
    with QdrantServer(QdrantState(api_key=KEY)) as server:
        yield server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- the server: qdrant-client round trip -------------------------------------------------------------


def test_qdrant_client_round_trip_against_the_engine(qdrant):
    from qdrant_client import models

    rnd = random.Random(7)
    vectors = {i: [rnd.uniform(-1, 1) for _ in range(8)] for i in range(1, 201)}
    qc = client(qdrant)

    assert qc.collection_exists("docs") is False
    qc.create_collection("docs", vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE))
    done = qc.upsert(
        "docs",
        points=[
            models.PointStruct(id=i, vector=v, payload={"city": "berlin" if i % 3 else "paris", "n": i})
            for i, v in vectors.items()
        ],
        wait=True,
    )
    assert done.status == models.UpdateStatus.COMPLETED
    index = qc.create_payload_index("docs", "city", models.PayloadSchemaType.KEYWORD, wait=True)
    assert index.status == models.UpdateStatus.COMPLETED

    probe = [rnd.uniform(-1, 1) for _ in range(8)]
    found = qc.query_points("docs", query=probe, limit=5, with_payload=True).points
    assert [p.id for p in found] == brute_force(vectors, probe, 5)  # the engine's ranking is the true one
    assert found[0].score == pytest.approx(cosine(vectors[found[0].id], probe), abs=1e-5)
    assert found[0].payload["n"] == found[0].id

    paris = models.Filter(must=[models.FieldCondition(key="city", match=models.MatchValue(value="paris"))])
    filtered = qc.query_points("docs", query=probe, query_filter=paris, limit=5, with_payload=True).points
    assert [p.id for p in filtered] == brute_force({i: v for i, v in vectors.items() if i % 3 == 0}, probe, 5)
    assert {p.payload["city"] for p in filtered} == {"paris"}

    high = models.Filter(must=[models.FieldCondition(key="n", range=models.Range(gte=150))])
    batch = qc.query_batch_points(
        "docs",
        requests=[
            models.QueryRequest(query=probe, limit=3),
            models.QueryRequest(query=vectors[42], limit=1),
            models.QueryRequest(query=probe, filter=high, limit=3),
        ],
    )
    assert [p.id for p in batch[0].points] == brute_force(vectors, probe, 3)
    assert batch[1].points[0].id == 42 and batch[1].points[0].score == pytest.approx(1.0, abs=1e-5)
    assert all(p.id >= 150 for p in batch[2].points)

    info = qc.get_collection("docs")
    assert info.status == models.CollectionStatus.GREEN
    assert info.points_count == 200
    assert info.config.params.vectors.size == 8
    assert info.payload_schema["city"].data_type == models.PayloadSchemaType.KEYWORD
    assert info.payload_schema["city"].points == 200
    assert qc.count("docs", count_filter=paris, exact=True).count == 66
    assert [c.name for c in qc.get_collections().collections] == ["docs"]

    assert qc.delete_collection("docs") is True
    assert qc.collection_exists("docs") is False
    assert not (qdrant.storage / "collections" / "docs").exists()


def test_engine_builds_hnsw_and_named_vectors_and_uuids_work(qdrant):
    """Past the indexing threshold the engine's optimizer builds HNSW (indexed_vectors_count)."""
    import uuid

    from qdrant_client import models

    qc = client(qdrant)
    qc.create_collection(
        "img",
        vectors_config={"clip": models.VectorParams(size=16, distance=models.Distance.DOT)},
        optimizers_config=models.OptimizersConfigDiff(indexing_threshold=10),
        hnsw_config=models.HnswConfigDiff(m=8, ef_construct=32),
    )
    rnd = random.Random(3)
    ids = [str(uuid.UUID(int=rnd.getrandbits(128))) for _ in range(600)]
    rows = [[rnd.uniform(-1, 1) for _ in range(16)] for _ in ids]
    qc.upload_collection("img", vectors=[{"clip": r} for r in rows], ids=ids, batch_size=256, wait=True)

    info = qc.get_collection("img")
    assert info.points_count == 600 and info.indexed_vectors_count == 600
    assert info.config.hnsw_config.m == 8 and info.config.optimizer_config.indexing_threshold == 10
    hit = qc.query_points(
        "img", query=rows[5], using="clip", limit=1, search_params=models.SearchParams(exact=True)
    )
    dots = sorted(range(len(rows)), key=lambda i: -sum(a * b for a, b in zip(rows[i], rows[5], strict=True)))
    assert hit.points[0].id == ids[dots[0]]


def test_server_speaks_qdrants_errors_and_auth(qdrant):
    import requests

    s = requests.Session()
    s.trust_env = False
    assert s.get(qdrant.url + "/healthz").text == "healthz check passed"  # whitelisted: no key needed
    assert s.get(qdrant.url + "/").json()["title"] == "qdrant - vector search engine"
    missing = s.get(qdrant.url + "/collections")
    assert (
        missing.status_code == 401
        and missing.text == "Must provide an API key or an Authorization bearer token"
    )
    wrong = s.get(qdrant.url + "/collections", headers={"api-key": "nope"})
    assert wrong.status_code == 401 and wrong.text == "Invalid API key or JWT"
    bearer = s.get(qdrant.url + "/collections", headers={"Authorization": f"Bearer {KEY}"})
    assert bearer.json()["result"] == {"collections": []} and bearer.json()["status"] == "ok"
    absent = s.get(qdrant.url + "/collections/nope", headers={"api-key": KEY})
    assert absent.status_code == 404
    assert absent.json()["status"] == {"error": "Not found: Collection `nope` doesn't exist!"}
    assert isinstance(absent.json()["time"], float)
    s.put(
        qdrant.url + "/collections/c",
        json={"vectors": {"size": 2, "distance": "Dot"}},
        headers={"api-key": KEY},
    )
    bad = s.put(
        qdrant.url + "/collections/c/points?wait=true",
        json={"points": [{"id": 1, "vector": [1.0, 2.0, 3.0]}]},
        headers={"api-key": KEY},
    )
    assert bad.status_code == 400
    assert bad.json()["status"]["error"] == "Wrong input: Vector dimension error: expected dim: 2, got 3"
    batch = {
        "batch": {"ids": [1, 2], "vectors": [[1.0, 0.0], [0.0, 1.0]], "payloads": [{"k": "a"}, {"k": "b"}]}
    }
    assert s.put(qdrant.url + "/collections/c/points?wait=true", json=batch, headers={"api-key": KEY}).ok
    hit = s.post(
        qdrant.url + "/collections/c/points/query",
        json={"query": [0.0, 2.0], "limit": 1, "with_payload": True},
        headers={"api-key": KEY},
    ).json()["result"]["points"][0]
    assert (hit["id"], hit["score"], hit["payload"]) == (2, 2.0, {"k": "b"})
    qdrant.state.ready = False
    assert s.get(qdrant.url + "/readyz").status_code == 503


def cosine(a, b) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def brute_force(vectors: dict, probe: list, k: int) -> list:
    return sorted(vectors, key=lambda i: -cosine(vectors[i], probe))[:k]


# ---- `toolkit health` with Qdrant -----------------------------------------------------------------------


def health(*args: str, env: dict | None = None, timeout: int = 60):
    """`toolkit health --json`; the key comes only from where a test puts it (env or settings file)."""
    proc = toolkit(
        "health", "--json", *args, env={"TOOLKIT_QDRANT_API_KEY": "", **(env or {})}, timeout=timeout
    )
    assert proc.stdout.startswith("{"), proc.stdout + proc.stderr
    return proc, json.loads(proc.stdout)


def checks(doc: dict) -> dict:
    return {c["name"]: c for c in doc["checks"]}


def settings_file(tmp_path, qdrant: dict, mode: int = 0o600, name: str = "health.yml", **more):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"qdrant": qdrant, **more}))
    path.chmod(mode)
    return str(path)


def fill(server: QdrantServer, **collections: int) -> None:
    from qdrant_client import models

    qc = client(server, server.state.api_key)
    for name, count in collections.items():
        qc.create_collection(
            name, vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE)
        )
        if count:
            points = [models.PointStruct(id=i, vector=[1.0, i, 0.5, 0.0]) for i in range(count)]
            qc.upsert(name, points=points, wait=True)


def prom_samples(text: str) -> dict[str, float]:
    samples, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#"):
            assert re.match(r"# HELP toolkit_\w+ \S", line), line
            continue
        match = PROM_LINE.match(line)
        assert match, f"not a Prometheus sample: {line!r}"
        assert match.group(1) in typed, f"sample before its TYPE line: {line!r}"
        key = line.rsplit(" ", 1)[0]
        assert key not in samples, f"duplicate series {key}"
        samples[key] = float(match.group(5))
    return samples


def du_bytes(path) -> int:
    out = subprocess.run(
        ["du", "-s", "--block-size=1", str(path)], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[0])


def test_nominal_node_with_key_from_a_0600_settings_file(qdrant, tmp_path):
    fill(qdrant, docs=50, empty=0)
    config = settings_file(
        tmp_path,
        {
            "url": qdrant.url,
            "api_key": KEY,
            "required": True,
            "storage_path": str(qdrant.storage),
            "timeout": 5,
        },
    )

    proc, doc = health("--config", config, *QDRANT_ONLY)

    found = checks(doc)
    assert proc.returncode == 0, [(c["name"], c["detail"]) for c in doc["checks"] if c["status"] != "ok"]
    assert doc["status"] == "ok" and [c["name"] for c in doc["collectors"]] == ["qdrant"]
    assert doc["collectors"][0]["up"] is True
    assert found["qdrant.up"]["value"] == "up" and found["qdrant.ready"]["value"] == "ready"
    assert found["qdrant.version"]["value"] == qdrant.state.version
    assert (
        found["qdrant.collections"]["value"] == 2 and found["qdrant.collections"]["detail"] == "docs, empty"
    )
    assert found["qdrant.collection.docs"]["value"] == "green"
    assert found["qdrant.collection.docs.points"]["value"] == 50
    assert found["qdrant.collection.empty.points"]["value"] == 0
    assert found["qdrant.gpu_indexing"]["value"] == "off"
    storage = found["qdrant.storage"]
    assert storage["unit"] == "bytes" and storage["value"] == du_bytes(qdrant.storage) > 0
    assert ("GET", "/collections", True) in qdrant.state.requests  # the key went in the api-key header
    assert all(KEY not in path for _, path, _ in qdrant.state.requests)
    assert KEY not in proc.stdout + proc.stderr


def test_key_from_the_environment_table_and_prometheus_textfile(qdrant, tmp_path):
    fill(qdrant, docs=7)
    prom = tmp_path / "toolkit.prom"

    proc = toolkit(
        "health",
        *QDRANT_ONLY,
        "--qdrant-url",
        qdrant.url,
        "--prom",
        str(prom),
        env={"TOOLKIT_QDRANT_API_KEY": KEY},
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "qdrant — OK" in proc.stdout and "qdrant.collection.docs" in proc.stdout
    samples = prom_samples(prom.read_text())
    assert samples['toolkit_up{collector="qdrant"}'] == 1
    assert samples["toolkit_qdrant_up"] == 1 and samples["toolkit_qdrant_ready"] == 1
    assert samples[f'toolkit_qdrant_info{{version="{qdrant.state.version}"}}'] == 1
    assert samples["toolkit_qdrant_collections"] == 1
    assert samples['toolkit_qdrant_collection_points{collection="docs"}'] == 7
    assert samples['toolkit_qdrant_collection_status{collection="docs"}'] == 0
    assert samples["toolkit_qdrant_gpu_indexing_enabled"] == 0
    assert samples['toolkit_check_status{check="qdrant.collection.docs",collector="qdrant"}'] == 0
    assert KEY not in prom.read_text() + proc.stdout + proc.stderr


def test_yellow_grey_and_red_collections(qdrant, tmp_path):
    fill(qdrant, green=3, busy=3, pending=3, broken=3)
    qdrant.state.collection_status.update(busy="yellow", pending="grey", broken="red")
    config = settings_file(tmp_path, {"url": qdrant.url, "api_key": KEY})
    prom = tmp_path / "toolkit.prom"

    proc, doc = health("--config", config, *QDRANT_ONLY, "--prom", str(prom))

    found = checks(doc)
    assert proc.returncode == 2 and doc["status"] == "critical"
    assert found["qdrant.collection.green"]["status"] == "ok"
    assert found["qdrant.collection.busy"]["status"] == "warning"
    assert "optimizing" in found["qdrant.collection.busy"]["detail"]
    assert found["qdrant.collection.pending"]["status"] == "warning"
    assert found["qdrant.collection.broken"]["status"] == "critical"
    assert qdrant.state.red_error in found["qdrant.collection.broken"]["detail"]  # the optimizer's own error
    samples = prom_samples(prom.read_text())
    assert samples['toolkit_qdrant_collection_status{collection="broken"}'] == 2
    assert samples['toolkit_qdrant_collection_status{collection="busy"}'] == 1

    del qdrant.state.collection_status["broken"]
    proc, doc = health("--config", config, *QDRANT_ONLY)
    assert proc.returncode == 1 and doc["status"] == "warning"


def test_wrong_or_missing_api_key_is_said_and_the_key_never_printed(qdrant, tmp_path):
    fill(qdrant, docs=2)
    wrong = "Wrong-Key-4d1f-Never-Print"
    prom = tmp_path / "toolkit.prom"
    env = {"TOOLKIT_QDRANT_API_KEY": wrong}
    args = ("--debug", *QDRANT_ONLY, "--qdrant-url", qdrant.url, "--prom", str(prom))

    proc, doc = health(*args, env=env)
    table = toolkit("health", *args, env=env)

    found = checks(doc)
    assert proc.returncode == 3 and table.returncode == 3
    assert found["qdrant.up"]["status"] == "ok"  # the node answers; only our key is refused
    assert found["qdrant.auth"]["status"] == "unknown"
    assert "API key rejected" in found["qdrant.auth"]["detail"]
    assert "Invalid API key or JWT" in found["qdrant.auth"]["detail"]
    assert "API key rejected" in table.stdout
    assert doc["collectors"][0]["up"] is False
    everything = proc.stdout + proc.stderr + table.stdout + table.stderr + prom.read_text()
    assert wrong not in everything and "Traceback" not in everything

    proc, doc = health(*QDRANT_ONLY, "--qdrant-url", qdrant.url)  # no key anywhere
    assert "needs an API key" in checks(doc)["qdrant.auth"]["detail"]
    assert "TOOLKIT_QDRANT_API_KEY" in checks(doc)["qdrant.auth"]["detail"]


@pytest.mark.parametrize("required", [False, True])
def test_down_port_is_quick_and_the_rest_of_the_report_stays(tmp_path, required):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = settings_file(tmp_path, {"url": url, "timeout": 2, "required": required})

    start = time.monotonic()
    proc, doc = health("--config", config, *NO_BMC)
    elapsed = time.monotonic() - start

    up = checks(doc)["qdrant.up"]
    assert up["status"] == ("critical" if required else "unknown")
    assert "cannot connect" in up["detail"] and "refused" in up["detail"]
    assert {c["name"] for c in doc["collectors"]} >= {"system", "docker", "qdrant"}
    assert any(c["collector"] == "system" for c in doc["checks"])
    assert proc.returncode == EXIT[doc["status"]]
    if required:
        assert proc.returncode == 2
    assert elapsed < 20, elapsed


def test_slow_node_is_cut_at_the_timeout(qdrant, tmp_path):
    qdrant.state.delay = 6.0
    config = settings_file(tmp_path, {"url": qdrant.url, "api_key": KEY, "timeout": 1, "required": True})

    start = time.monotonic()
    proc, doc = health("--config", config, *QDRANT_ONLY)
    elapsed = time.monotonic() - start

    up = checks(doc)["qdrant.up"]
    assert up["status"] == "critical" and "did not answer within 1 s" in up["detail"]
    assert proc.returncode == 2
    assert elapsed < 5.0, elapsed  # 1 s read + start-up, not the node's 6 s


def test_a_peer_that_drips_bytes_cannot_stretch_the_read(tmp_path):
    """Each byte comes before the socket timeout, so only the overall bound stops the read."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip():
        conn, _ = listener.accept()
        conn.recv(4096)
        for byte in b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n":
            if stop.wait(0.2):
                break
            conn.sendall(bytes([byte]))
        conn.close()

    threading.Thread(target=drip, daemon=True).start()
    config = settings_file(tmp_path, {"url": f"http://127.0.0.1:{listener.getsockname()[1]}", "timeout": 1})
    try:
        start = time.monotonic()
        proc, doc = health("--config", config, *QDRANT_ONLY)
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        listener.close()

    up = checks(doc)["qdrant.up"]
    assert up["status"] == "unknown" and "did not finish answering within" in up["detail"]
    assert proc.returncode == 3
    assert elapsed < 5.0, elapsed  # 1 s deadline + 1 s bound + start-up; the drip lasts 9 s


def test_gpu_indexing_from_telemetry(qdrant):
    settings = collector.settings({"url": qdrant.url, "api_key": KEY})
    state = qdrant.state

    def gpu_check(nvidia_gpus=None, s=settings):
        result = collector.collect(s)
        collector.judge_gpu_indexing(result, s, nvidia_gpus)
        return next(c for c in result.checks if c.name == "qdrant.gpu_indexing")

    state.gpu_build, state.gpu_indexing, state.gpu_devices = True, True, ["NVIDIA L40S", "NVIDIA L40S"]
    on = gpu_check(nvidia_gpus=True)
    assert (on.status, on.value, on.prom_value) == (Status.OK, "on", 1.0) and "NVIDIA L40S" in on.detail

    state.gpu_indexing = False  # a GPU image with QDRANT__GPU__INDEXING unset
    off = gpu_check(nvidia_gpus=False)
    assert (off.status, off.value, off.prom_value) == (Status.OK, "off", 0.0)
    assert "QDRANT__GPU__INDEXING=1" in off.detail
    assert gpu_check(nvidia_gpus=True).status is Status.WARNING  # Qdrant on this node, NVIDIA GPUs idle
    assert gpu_check(nvidia_gpus=None).status is Status.OK  # GPUs not read (--skip gpu): not knowable
    remote = collector.settings({"url": qdrant.url, "api_key": KEY})
    remote.local = False  # another node's Qdrant: this node's GPUs say nothing about it
    assert gpu_check(nvidia_gpus=True, s=remote).status is Status.OK
    expected = collector.settings({"url": qdrant.url, "api_key": KEY, "expect_gpu_indexing": True})
    assert gpu_check(s=expected).status is Status.WARNING

    state.gpu_indexing, state.gpu_devices = True, []
    none_found = gpu_check()
    assert (none_found.status, none_found.value) == (Status.WARNING, "no device")

    state.gpu_build = False
    assert "no GPU support" in gpu_check().detail


def test_tls_is_verified_against_the_configured_ca_only(tmp_path, monkeypatch):
    import ssl

    import requests
    from redfish_server import make_certificate

    cert, key = make_certificate(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())  # must not steer the reader
    server = QdrantServer(QdrantState(api_key=KEY))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    url = server.url.replace("http://", "https://")
    with server:
        trusted = collector.collect(collector.settings({"url": url, "api_key": KEY, "ca": str(cert)}))
        untrusted = collector.collect(collector.settings({"url": url, "api_key": KEY}))
        insecure = collector.collect(collector.settings({"url": url, "api_key": KEY, "insecure": True}))

    assert trusted.status is Status.OK and trusted.up
    up = next(c for c in untrusted.checks if c.name == "qdrant.up")
    assert (
        up.status is Status.UNKNOWN
        and "TLS certificate not trusted" in up.detail
        and "qdrant.ca" in up.detail
    )
    assert insecure.status is Status.OK and "NOT verified" in insecure.info["tls"]


def test_settings_file_readable_by_others_is_refused(tmp_path):
    config = settings_file(tmp_path, {"url": "http://127.0.0.1:6333", "api_key": KEY}, mode=0o644)

    proc = toolkit("health", "--config", config, *QDRANT_ONLY, env={"TOOLKIT_QDRANT_API_KEY": ""})

    assert proc.returncode == 3
    assert "holds a Qdrant API key but is readable by others" in proc.stderr and "chmod 600" in proc.stderr
    assert KEY not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr


def test_bad_qdrant_settings_are_unknown_with_a_hint(tmp_path):
    cases = [
        (["--qdrant-url", "ftp://127.0.0.1"], "must be http:// or https://"),
        (["--qdrant-url", "http://admin:Url-Secret-55@127.0.0.1:6333"], "must not carry credentials"),
        (
            ["--config", settings_file(tmp_path, {"url": "http://127.0.0.1", "bogus": 1}, name="a.yml")],
            "bogus",
        ),
        (
            [
                "--config",
                settings_file(tmp_path, {"url": "http://127.0.0.1", "timeout": "soon"}, name="b.yml"),
            ],
            "qdrant.timeout",
        ),
    ]
    for args, message in cases:
        proc = toolkit("health", *QDRANT_ONLY, *args, env={"TOOLKIT_QDRANT_API_KEY": ""})
        assert proc.returncode == 3, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr and "hint:" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and "Url-Secret-55" not in proc.stdout + proc.stderr


def test_skip_qdrant_leaves_it_out(qdrant):
    proc, doc = health(*QDRANT_ONLY, "--qdrant-url", qdrant.url, "--skip", "qdrant")
    assert doc["collectors"] == [] and not qdrant.state.requests
    assert proc.returncode == 0
