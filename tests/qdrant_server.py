"""Qdrant's REST API shapes over the real Qdrant engine — for tests and benchmarks. NOT the Qdrant server.

The Qdrant server is not installable from the package index, so this small threaded HTTP server speaks the
subset of Qdrant's REST API that toolkit uses, with Qdrant's JSON shapes (checked against the models of
qdrant-client, `qdrant_client/http/models`): `{"result": ..., "status": "ok", "time": s}`, errors as
`{"status": {"error": "..."}, "time": s}`, and Qdrant's plain-text 401 for a missing or wrong `api-key`.
Collections and points live in the real engine: one `qdrant_edge.EdgeShard` (qdrant-edge-py, built from
Qdrant's own source tree: WAL, segments, HNSW, payload indexes) per collection under the storage folder,
so searches, filters and counts are computed by Qdrant's code, not by this file.

What differs from a real Qdrant, on purpose or by necessity:
- one shard per collection, no cluster, no gRPC, no snapshots, no JWT; `GET /` reports the Qdrant version
  the engine was built from (qdrant-edge-py's bill of materials) with `commit` naming this server;
- the engine's optimizer (HNSW build) holds the Python GIL, so it cannot run in the background here: writes
  mark a collection as changed, and the next query or `GET /collections/{name}` runs the optimizer first
  (that request waits for indexing; a real Qdrant answers "yellow" meanwhile and indexes in the background);
- the collection status is green unless a test forces yellow/grey/red (`QdrantState.collection_status`);
- `/telemetry` carries the app and collection parts (GPU build flag, GPU devices when GPU indexing is on)
  from `QdrantState`, not from this machine.

Endpoints: `GET /`, `/healthz`, `/readyz`, `/livez`, `/telemetry`, `GET /collections`,
`PUT/GET/DELETE /collections/{name}`, `GET /collections/{name}/exists`, `PUT /collections/{name}/index`,
`PUT /collections/{name}/points` (upsert: `points` list or `batch`), `POST /collections/{name}/points/query`,
`/points/query/batch`, `/points/count`. Anything else a real Qdrant has answers 404 (unknown path) or 400
naming the unsupported part.

In tests:   with QdrantServer(QdrantState(api_key="...")) as server: ... server.url, server.state
Benchmarks: QDRANT__SERVICE__API_KEY=... python tests/qdrant_server.py --port 6333 [--storage DIR]
            (the key comes from Qdrant's own environment variable, never from the command line)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import qdrant_edge as edge

PUBLIC_EXACT = {"/", "/healthz"}  # Qdrant's API-key whitelist: exact "/" and "/healthz", prefixes below
PUBLIC_PREFIXES = ("/readyz", "/livez")
NAME = re.compile(r"[A-Za-z0-9_.\-]{1,255}")
DISTANCES = {"Cosine": edge.Distance.Cosine, "Euclid": edge.Distance.Euclid, "Dot": edge.Distance.Dot}
DISTANCES["Manhattan"] = edge.Distance.Manhattan
SCHEMA_TYPES = {t.lower(): getattr(edge.PayloadSchemaType, t) for t in ("Keyword", "Integer", "Float")}
SCHEMA_TYPES |= {t.lower(): getattr(edge.PayloadSchemaType, t) for t in ("Geo", "Text", "Bool", "Datetime")}
SCHEMA_TYPES["uuid"] = edge.PayloadSchemaType.Uuid
HNSW_DEFAULTS = {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000, "max_indexing_threads": 0}
OPTIMIZER_DEFAULTS = {
    "deleted_threshold": 0.2,
    "vacuum_min_vector_number": 1000,
    "default_segment_number": 0,
    "max_segment_size": None,
    "memmap_threshold": None,
    "indexing_threshold": 10000,
    "flush_interval_sec": 5,
    "max_optimization_threads": None,
}
EDGE_OPTIMIZER_KEYS = ("deleted_threshold", "vacuum_min_vector_number", "default_segment_number")
EDGE_OPTIMIZER_KEYS += ("max_segment_size", "indexing_threshold")


def engine_version() -> str:
    """The Qdrant version whose source tree the installed qdrant-edge-py was built from (its `api` crate)."""
    from importlib import metadata

    try:
        dist = metadata.distribution("qdrant-edge-py")
        for file in dist.files or []:
            if file.name.endswith(".cyclonedx.json"):
                sbom = json.loads(file.read_text())
                for component in sbom.get("components", []):
                    if component.get("name") == "api":
                        return component["version"]
    except (metadata.PackageNotFoundError, OSError, ValueError, KeyError):
        pass
    return "0.0.0"


class ApiError(Exception):
    """An error answered in Qdrant's shape: HTTP code and `status.error`."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class Bare(dict):
    """A JSON answer sent as is, without Qdrant's result/status/time envelope (`GET /`)."""


def unsupported(what: str) -> ApiError:
    return ApiError(400, f"Bad request: {what} is not supported by this test server (tests/qdrant_server.py)")


@dataclass
class QdrantState:
    """How the server behaves; tests change it while the server runs."""

    api_key: str | None = None  # None: no authentication, like a Qdrant without service.api_key
    delay: float = 0.0  # seconds before every answer (a slow or overloaded node)
    ready: bool = True  # /readyz: 200 "all shards are ready", else 503
    collection_status: dict[str, str] = field(default_factory=dict)  # forced: yellow | grey | red
    red_error: str = "Service internal error: optimization failed: No space left on device (os error 28)"
    gpu_build: bool = False  # telemetry app.features.gpu: a binary built with the `gpu` feature
    gpu_indexing: bool = False  # config gpu.indexing: app.system.gpu_devices is then reported
    gpu_devices: list[str] = field(default_factory=lambda: ["NVIDIA H100 80GB HBM3"])
    version: str = field(default_factory=engine_version)
    requests: list[tuple[str, str, bool]] = field(default_factory=list)  # (method, path, api-key sent)
    record_requests: bool = True  # off for the standalone server: a long benchmark must not grow `requests`
    lock: threading.Lock = field(default_factory=threading.Lock)


class Collection:
    """One collection: its REST configuration and the engine shard that holds its points."""

    def __init__(self, name: str, folder: Path, config: dict, shard: edge.EdgeShard):
        self.name, self.folder, self.config, self.shard = name, folder, config, shard
        self.lock = threading.RLock()
        self.changed = True
        self.operation_id = 0
        self.created_at = config.get("created_at")

    @classmethod
    def create(cls, name: str, folder: Path, body: dict) -> Collection:
        config = _collection_config(body)
        shard_dir = folder / "0"
        shard = edge.EdgeShard.create(str(shard_dir), _edge_config(config))
        config["created_at"] = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        (folder / "config.json").write_text(json.dumps(config, indent=1))
        return cls(name, folder, config, shard)

    @classmethod
    def load(cls, name: str, folder: Path) -> Collection:
        config = json.loads((folder / "config.json").read_text())
        return cls(name, folder, config, edge.EdgeShard.load(str(folder / "0")))

    def ensure_optimized(self) -> None:
        with self.lock:
            if self.changed:
                self.shard.optimize()
                self.changed = False

    def update(self, operation) -> dict:
        with self.lock:
            self.shard.update(operation)
            self.changed = True
            self.operation_id += 1
            return {"operation_id": self.operation_id, "status": "completed"}

    def close(self) -> None:
        with self.lock:
            self.shard.close()


def _collection_config(body: dict) -> dict:
    vectors = body.get("vectors")
    if vectors is None:
        raise unsupported("a collection without dense vectors (sparse-only)")
    if body.get("sparse_vectors"):
        raise unsupported("sparse_vectors")
    named = not ("size" in vectors and "distance" in vectors)
    params = {}
    for name, spec in (vectors if named else {"": vectors}).items():
        if not isinstance(spec, dict) or not isinstance(spec.get("size"), int) or spec["size"] < 1:
            raise ApiError(422, "Validation error in JSON body: [vectors.size: must be a positive integer]")
        if spec.get("distance") not in DISTANCES:
            raise ApiError(400, f"Format error in JSON body: unknown distance {spec.get('distance')!r}")
        for key in ("multivector_config", "quantization_config", "hnsw_config"):
            if spec.get(key):
                raise unsupported(f"per-vector {key}")
        params[name] = {"size": spec["size"], "distance": spec["distance"]}
        if spec.get("on_disk") is not None:
            params[name]["on_disk"] = bool(spec["on_disk"])
    hnsw = HNSW_DEFAULTS | {"on_disk": False} | _known(body.get("hnsw_config"), HNSW_DEFAULTS, "on_disk")
    optimizers = OPTIMIZER_DEFAULTS | _known(body.get("optimizers_config"), OPTIMIZER_DEFAULTS)
    quantization = body.get("quantization_config")
    if quantization and set(quantization) != {"scalar"}:
        raise unsupported(f"quantization {', '.join(quantization)}")
    return {
        "vectors": params if named else params[""],
        "named": named,
        "on_disk_payload": body.get("on_disk_payload", True),
        "hnsw_config": hnsw,
        "optimizer_config": optimizers,
        "quantization_config": quantization or None,
    }


def _known(section: dict | None, defaults: dict, *extra: str) -> dict:
    section = section or {}
    unknown = set(section) - set(defaults) - set(extra)
    if unknown:
        raise unsupported(f"setting(s) {', '.join(sorted(unknown))}")
    return {k: v for k, v in section.items() if v is not None}


def _edge_config(config: dict) -> edge.EdgeConfig:
    vectors = config["vectors"] if config["named"] else {"": config["vectors"]}
    params = {
        name: edge.EdgeVectorParams(
            size=v["size"], distance=DISTANCES[v["distance"]], on_disk=v.get("on_disk")
        )
        for name, v in vectors.items()
    }
    hnsw = config["hnsw_config"]
    optimizers = {k: config["optimizer_config"][k] for k in EDGE_OPTIMIZER_KEYS}
    quantization = None
    if scalar := (config.get("quantization_config") or {}).get("scalar"):
        quantization = edge.ScalarQuantizationConfig(
            edge.ScalarType.Int8, quantile=scalar.get("quantile"), always_ram=scalar.get("always_ram")
        )
    return edge.EdgeConfig(
        vectors=params if config["named"] else params[""],
        on_disk_payload=config["on_disk_payload"],
        hnsw_config=edge.HnswIndexConfig(
            m=hnsw["m"],
            ef_construct=hnsw["ef_construct"],
            full_scan_threshold=hnsw["full_scan_threshold"],
            max_indexing_threads=hnsw["max_indexing_threads"],
            on_disk=hnsw.get("on_disk"),
        ),
        optimizers=edge.EdgeOptimizersConfig(**optimizers),
        quantization_config=quantization,
    )


# ---- JSON -> engine ----------------------------------------------------------------------------------


def _point_id(value):
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ApiError(400, f"Format error in JSON body: bad point id {value!r}")
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ApiError(400, f"Format error in JSON body: point id {value!r} is not a UUID") from None
    return value


def _vector(value, collection: Collection):
    vectors = collection.config["vectors"]
    if isinstance(value, dict):
        if not collection.config["named"]:
            if set(value) == {""}:
                value = value[""]
            else:
                raise ApiError(400, f"Wrong input: Not existing vector name error: {', '.join(value)}")
        else:
            for name, vec in value.items():
                if name not in vectors:
                    raise ApiError(400, f"Wrong input: Not existing vector name error: {name}")
                _check_dim(vec, vectors[name]["size"])
            return {name: [float(x) for x in vec] for name, vec in value.items()}
    if collection.config["named"]:
        raise ApiError(400, "Wrong input: Not existing vector name error: ")
    _check_dim(value, vectors["size"])
    return [float(x) for x in value]


def _check_dim(vec, size: int) -> None:
    if not isinstance(vec, list) or not all(isinstance(x, int | float) for x in vec):
        raise unsupported("a vector that is not a dense list of numbers")
    if len(vec) != size:
        raise ApiError(400, f"Wrong input: Vector dimension error: expected dim: {size}, got {len(vec)}")


def _points(body: dict, collection: Collection) -> list:
    if "points" in body:
        rows = body["points"]
        return [
            edge.Point(_point_id(p["id"]), _vector(p["vector"], collection), p.get("payload")) for p in rows
        ]
    if "batch" in body:
        batch = body["batch"]
        ids, vectors, payloads = batch["ids"], batch["vectors"], batch.get("payloads") or []
        if isinstance(vectors, dict):  # named: {name: [vector per point]}
            vectors = [{name: vectors[name][i] for name in vectors} for i in range(len(ids))]
        points = []
        for i, pid in enumerate(ids):
            payload = payloads[i] if i < len(payloads) else None
            points.append(edge.Point(_point_id(pid), _vector(vectors[i], collection), payload))
        return points
    raise ApiError(400, "Format error in JSON body: expected `points` or `batch`")


def _filter(doc) -> edge.Filter | None:
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise ApiError(400, "Format error in JSON body: a filter must be an object")

    def many(value):
        if value is None:
            return None
        return [_condition(c) for c in (value if isinstance(value, list) else [value])]

    min_should = doc.get("min_should")
    return edge.Filter(
        must=many(doc.get("must")),
        should=many(doc.get("should")),
        must_not=many(doc.get("must_not")),
        min_should=edge.MinShould(many(min_should["conditions"]), min_should["min_count"])
        if min_should
        else None,
    )


def _condition(doc: dict):
    if any(k in doc for k in ("must", "should", "must_not", "min_should")):
        return _filter(doc)
    if "has_id" in doc:
        return edge.HasIdCondition({_point_id(i) for i in doc["has_id"]})
    if "is_empty" in doc:
        return edge.IsEmptyCondition(doc["is_empty"]["key"])
    if "is_null" in doc:
        return edge.IsNullCondition(doc["is_null"]["key"])
    if "has_vector" in doc:
        return edge.HasVectorCondition(doc["has_vector"])
    if "nested" in doc:
        return edge.NestedCondition(doc["nested"]["key"], _filter(doc["nested"]["filter"]))
    if "key" not in doc:
        raise unsupported(f"condition {sorted(doc)}")
    if any(doc.get(k) for k in ("geo_bounding_box", "geo_radius", "geo_polygon")):
        raise unsupported("geo conditions")
    values_count = doc.get("values_count")
    return edge.FieldCondition(
        key=doc["key"],
        match=_match(doc.get("match")),
        range=_range(doc.get("range")),
        values_count=edge.ValuesCount(**values_count) if values_count else None,
        is_empty=doc.get("is_empty"),
        is_null=doc.get("is_null"),
    )


def _match(doc):
    if doc is None:
        return None
    if "value" in doc:
        return edge.MatchValue(doc["value"])
    if "any" in doc:
        return edge.MatchAny(doc["any"])
    if "except" in doc:
        return edge.MatchExcept(doc["except"])
    if "text" in doc:
        return edge.MatchText(doc["text"])
    if "text_any" in doc:
        return edge.MatchTextAny(doc["text_any"])
    if "phrase" in doc:
        return edge.MatchPhrase(doc["phrase"])
    raise unsupported(f"match {sorted(doc)}")


def _range(doc):
    if doc is None:
        return None
    bounds = {k: doc.get(k) for k in ("gt", "gte", "lt", "lte") if doc.get(k) is not None}
    if any(isinstance(v, str) for v in bounds.values()):
        return edge.RangeDateTime(**bounds)
    return edge.RangeFloat(**{k: float(v) for k, v in bounds.items()})


def _with_payload(value):
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and "include" in value:
        return edge.PayloadSelector.Include(value["include"])
    if isinstance(value, dict) and "exclude" in value:
        return edge.PayloadSelector.Exclude(value["exclude"])
    raise ApiError(400, "Format error in JSON body: bad with_payload")


def _query_request(doc: dict, collection: Collection) -> edge.QueryRequest:
    for key in ("prefetch", "lookup_from"):
        if doc.get(key):
            raise unsupported(key)
    query, using = doc.get("query"), doc.get("using")
    if isinstance(query, dict):
        if set(query) != {"nearest"}:
            raise unsupported(f"query {', '.join(sorted(query))}")
        query = query["nearest"]
    if query is not None:
        if not isinstance(query, list):
            raise unsupported("a query by point id, document or sparse vector")
        vectors = collection.config["vectors"]
        if collection.config["named"]:
            if using not in vectors:
                raise ApiError(400, f"Wrong input: Not existing vector name error: {using or ''}")
            _check_dim(query, vectors[using]["size"])
        else:
            if using not in (None, ""):
                raise ApiError(400, f"Wrong input: Not existing vector name error: {using}")
            _check_dim(query, vectors["size"])
        query = edge.Query.Nearest([float(x) for x in query], using=using or None)
    params = doc.get("params") or {}
    return edge.QueryRequest(
        limit=int(doc.get("limit") or 10),
        offset=doc.get("offset"),
        query=query,
        with_vector=doc.get("with_vector"),
        with_payload=_with_payload(doc.get("with_payload")),
        filter=_filter(doc.get("filter")),
        score_threshold=doc.get("score_threshold"),
        params=edge.SearchParams(
            hnsw_ef=params.get("hnsw_ef"),
            exact=bool(params.get("exact", False)),
            indexed_only=bool(params.get("indexed_only", False)),
        )
        if params
        else None,
    )


def _scored(point) -> dict:
    pid = point.id
    doc = {
        "id": str(pid) if isinstance(pid, uuid.UUID) else pid,
        "version": point.version,
        "score": point.score,
    }
    if point.payload is not None:
        doc["payload"] = point.payload
    if point.vector is not None:
        doc["vector"] = point.vector
    return doc


# ---- the HTTP side -------------------------------------------------------------------------------------


class QdrantServer:
    """The server on 127.0.0.1 (ephemeral port unless given), storage in `storage` (a temporary folder,
    removed on close, unless given — then existing collections are loaded from it)."""

    def __init__(
        self,
        state: QdrantState | None = None,
        storage: Path | str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.state = state or QdrantState()
        self._own_storage = storage is None
        self.storage = Path(storage or tempfile.mkdtemp(prefix="qdrant-test-"))
        (self.storage / "collections").mkdir(parents=True, exist_ok=True)
        self.collections: dict[str, Collection] = {}
        self.collections_lock = threading.Lock()
        for folder in sorted((self.storage / "collections").iterdir()):
            if (folder / "config.json").exists():
                self.collections[folder.name] = Collection.load(folder.name, folder)
        self.started = datetime.datetime.now(datetime.UTC)
        self.telemetry_id = str(uuid.uuid4())
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.05,), daemon=True, name="qdrant"
        )

    def __enter__(self) -> QdrantServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        with self.collections_lock:
            for collection in self.collections.values():
                collection.close()
            self.collections.clear()
        if self._own_storage:
            shutil.rmtree(self.storage, ignore_errors=True)

    # -- routes --

    def route(self, method: str, path: str, query: dict, body) -> tuple[int, object]:
        """(HTTP code, result) — `result` is wrapped in Qdrant's envelope by the handler; a str is sent
        as plain text (health endpoints)."""
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        if method == "GET" and not parts:  # Qdrant answers the bare VersionInfo here, no envelope
            commit = "tests/qdrant_server.py (qdrant-edge-py engine)"
            return 200, Bare(
                {"title": "qdrant - vector search engine", "version": self.state.version, "commit": commit}
            )
        if method == "GET" and parts in (["healthz"], ["livez"]):
            return 200, "healthz check passed"
        if method == "GET" and parts == ["readyz"]:
            return (200, "all shards are ready") if self.state.ready else (503, "some shards are not ready")
        if method == "GET" and parts == ["telemetry"]:
            return 200, self.telemetry(int((query.get("details_level") or ["0"])[0]))
        if not parts or parts[0] != "collections":
            raise ApiError(404, "")
        if len(parts) == 1 and method == "GET":
            with self.collections_lock:
                return 200, {"collections": [{"name": n} for n in self.collections]}
        name = parts[1]
        if not NAME.fullmatch(name) or name in (".", ".."):
            raise ApiError(
                422, f"Validation error in path parameters: [name: invalid collection name {name!r}]"
            )
        rest = parts[2:]
        if not rest:
            if method == "PUT":
                return 200, self.create_collection(name, body or {})
            if method == "DELETE":
                return 200, self.delete_collection(name)
            if method == "GET":
                return 200, self.collection_info(name)
        if rest == ["exists"] and method == "GET":
            with self.collections_lock:
                return 200, {"exists": name in self.collections}
        collection = self.collection(name)
        if rest == ["index"] and method == "PUT":
            return 200, self.create_index(collection, body or {})
        if rest == ["points"] and method == "PUT":
            result = collection.update(edge.UpdateOperation.upsert_points(_points(body or {}, collection)))
            if (query.get("wait") or ["false"])[0] != "true":
                result["status"] = "acknowledged"
            return 200, result
        if rest == ["points", "query"] and method == "POST":
            collection.ensure_optimized()
            return 200, {
                "points": [_scored(p) for p in collection.shard.query(_query_request(body, collection))]
            }
        if rest == ["points", "query", "batch"] and method == "POST":
            collection.ensure_optimized()
            requests = [_query_request(doc, collection) for doc in (body or {}).get("searches", [])]
            answers = collection.shard.query_batch(edge.QueryBatchRequest(requests)) if requests else []
            return 200, [{"points": [_scored(p) for p in answer]} for answer in answers]
        if rest == ["points", "count"] and method == "POST":
            body = body or {}
            request = edge.CountRequest(
                exact=bool(body.get("exact", True)), filter=_filter(body.get("filter"))
            )
            return 200, {"count": collection.shard.count(request)}
        raise ApiError(404, "")

    def collection(self, name: str) -> Collection:
        with self.collections_lock:
            found = self.collections.get(name)
        if found is None:
            raise ApiError(404, f"Not found: Collection `{name}` doesn't exist!")
        return found

    def create_collection(self, name: str, body: dict) -> bool:
        with self.collections_lock:
            if name in self.collections:
                raise ApiError(409, f"Wrong input: Collection `{name}` already exists!")
            folder = self.storage / "collections" / name
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            try:
                self.collections[name] = Collection.create(name, folder, body)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
        return True

    def delete_collection(self, name: str) -> bool:
        with self.collections_lock:
            collection = self.collections.pop(name, None)
        if collection is None:
            return False
        collection.close()
        shutil.rmtree(collection.folder, ignore_errors=True)
        self.state.collection_status.pop(name, None)
        return True

    def create_index(self, collection: Collection, body: dict) -> dict:
        schema = body.get("field_schema")
        kind = schema.get("type") if isinstance(schema, dict) else schema
        if not body.get("field_name") or kind not in SCHEMA_TYPES:
            raise ApiError(400, f"Format error in JSON body: bad field_name or field_schema {schema!r}")
        return collection.update(
            edge.UpdateOperation.create_field_index(body["field_name"], SCHEMA_TYPES[kind])
        )

    def collection_info(self, name: str) -> dict:
        collection = self.collection(name)
        collection.ensure_optimized()
        with collection.lock:
            info = collection.shard.info()
        status = self.state.collection_status.get(name, "green")
        config = collection.config
        optimizer_status = {"error": self.state.red_error} if status == "red" else "ok"
        schema = {
            key: {"data_type": str(index.data_type).rsplit(".", 1)[-1].lower(), "points": index.points}
            for key, index in info.payload_schema.items()
        }
        return {
            "status": status,
            "optimizer_status": optimizer_status,
            "indexed_vectors_count": info.indexed_vectors_count,
            "points_count": info.points_count,
            "segments_count": info.segments_count,
            "config": {
                "params": {
                    "vectors": config["vectors"],
                    "shard_number": 1,
                    "replication_factor": 1,
                    "write_consistency_factor": 1,
                    "on_disk_payload": config["on_disk_payload"],
                },
                "hnsw_config": config["hnsw_config"],
                "optimizer_config": config["optimizer_config"],
                "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0, "wal_retain_closed": 1},
                "quantization_config": config["quantization_config"],
                "strict_mode_config": {"enabled": False},
            },
            "payload_schema": schema,
            "created_at": collection.created_at,
        }

    def telemetry(self, level: int) -> dict:
        """`GET /telemetry`: the parts a real Qdrant fills at this details level (Level0: names and
        counts; Level1 adds `app.features`, `app.system` and aggregated collections; Level2+ full ones)."""
        state = self.state
        app = {"name": "qdrant", "version": state.version, "startup": self.started.isoformat()}
        if level >= 1:
            app["features"] = {
                "debug": False,
                "service_debug_feature": False,
                "recovery_mode": False,
                "gpu": state.gpu_build,
                "rocksdb": False,
                "staging": False,
            }
            app["hnsw_global_config"] = {"healing_threshold": 0.3}
            system = {
                "distribution": "debian",
                "distribution_version": "12",
                "is_docker": False,
                "container_runtime": "none",
                "cores": os.cpu_count(),
                "cpu_flags": "sse,sse2,avx,avx2,fma,f16c",
                "cpu_endian": "little",
            }
            if state.gpu_build and state.gpu_indexing:  # the GPU manager exists only with gpu.indexing on
                system["gpu_devices"] = [{"name": name} for name in state.gpu_devices]
            app["system"] = system
        with self.collections_lock:
            collections = dict(self.collections)
        telemetry = {"number_of_collections": len(collections)}
        if level >= 1:
            telemetry["collections"] = [self._collection_telemetry(c, level) for c in collections.values()]
        return {
            "id": self.telemetry_id,
            "app": app,
            "collections": telemetry,
            "cluster": {"enabled": False},
        }

    def _collection_telemetry(self, collection: Collection, level: int) -> dict:
        config = collection.config
        if level == 1:
            with collection.lock:
                points = collection.shard.info().points_count
            status = self.state.collection_status.get(collection.name)
            return {
                "vectors": points,
                "optimizers_status": {"error": self.state.red_error} if status == "red" else "ok",
                "params": {"vectors": config["vectors"], "shard_number": 1, "replication_factor": 1},
            }
        return {"id": collection.name, "init_time_ms": 0}


def _handler(server: QdrantServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: clients reuse the connection, as with a real Qdrant
        server_version = "qdrant-test"

        def log_message(self, *args) -> None:  # quiet: tests read state.requests instead
            pass

        def _serve(self, method: str) -> None:
            start = time.perf_counter()
            parts = urlsplit(self.path)
            path = parts.path.rstrip("/") or "/"
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            key = self.headers.get("api-key")
            bearer = self.headers.get("Authorization", "")
            if key is None and bearer.startswith("Bearer "):
                key = bearer[len("Bearer ") :]
            state = server.state
            if state.record_requests:
                with state.lock:
                    state.requests.append((method, path, key is not None))
            if state.delay:
                time.sleep(state.delay)
            public = path in PUBLIC_EXACT or path.startswith(PUBLIC_PREFIXES)
            if state.api_key and not public:
                if key is None:
                    return self._text(401, "Must provide an API key or an Authorization bearer token")
                if key != state.api_key:
                    return self._text(401, "Invalid API key or JWT")
            try:
                body = json.loads(raw) if raw else None
            except ValueError as err:
                return self._json(400, {"status": {"error": f"Format error in JSON body: {err}"}}, start)
            try:
                code, result = server.route(method, path, parse_qs(parts.query), body)
            except ApiError as err:
                if err.code == 404 and not str(err):
                    return self._text(404, "")
                return self._json(err.code, {"status": {"error": str(err)}}, start)
            except (KeyError, TypeError, ValueError) as err:
                return self._json(400, {"status": {"error": f"Format error in JSON body: {err!r}"}}, start)
            except Exception as err:  # the engine refused it (its message says why)
                return self._json(400, {"status": {"error": f"Wrong input: {err}"}}, start)
            if isinstance(result, str):
                return self._text(code, result)
            if isinstance(result, Bare):
                return self._json(code, dict(result), None)
            return self._json(code, {"result": result, "status": "ok"}, start)

        def _text(self, code: int, text: str) -> None:
            data = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _json(self, code: int, doc: dict, start: float | None) -> None:
            if start is not None:
                doc["time"] = time.perf_counter() - start
            data = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=6333, help="port (0: any free one; default 6333)")
    parser.add_argument("--storage", help="folder for the collections (default: a temporary one)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument("--gpu-indexing", action="store_true", help="telemetry: GPU build, GPU indexing on")
    args = parser.parse_args()
    state = QdrantState(
        api_key=os.environ.get("QDRANT__SERVICE__API_KEY") or None,
        delay=args.delay,
        gpu_build=args.gpu_indexing,
        gpu_indexing=args.gpu_indexing,
        record_requests=False,
    )
    server = QdrantServer(state, args.storage, args.host, args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with server:
        print(f"listening on {server.url} (storage {server.storage})", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()


if __name__ == "__main__":
    main()
