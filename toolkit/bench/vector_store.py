"""Two places to run the vector load, behind one interface: Qdrant in-process, or a Qdrant server.

`EdgeStore` is the real Qdrant engine in-process (qdrant-edge-py): a shard in a temporary folder,
removed afterwards. `ServerStore` talks REST to a Qdrant server through qdrant-client, in a
collection of its own (`toolkit-bench-<random>`) that it creates and deletes: the user's
collections are never read or written. Both upsert first, then index. Edge: `build_index()` is
`optimize()`, the index build alone. Server: indexing is on from the start (a real server may index
while points arrive), and `build_index()` is the time from the last upsert until the collection is
green with every vector indexed.

`preflight()` runs before any load of the run: a server that cannot be reached, refuses the API
key, or refuses the collection's shape is a usage error (exit 2), not a crash an hour later.
The API key is read from the environment variable the user names; it is never put in argv,
reports or messages.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from toolkit.errors import MissingDependency, UsageError

# Qdrant refuses dense vectors longer than this (collection config validation).
MAX_DIM = 65_536
CATEGORY_FIELD = "category"
COLLECTION_PREFIX = "toolkit-bench-"
CONNECT_TIMEOUT_SECONDS = 10  # preflight and telemetry
DISK_FACTOR = 4  # shard size on disk over the raw float32 vectors, with margin (see check_disk)
REQUEST_TIMEOUT_SECONDS = 600  # the load's requests: an exact search over 1M x 1536-d takes a while
PREFLIGHT_SECONDS = 30  # the whole preflight (a server that drips bytes never times out a single read)


@dataclass(frozen=True)
class IndexSpec:
    dim: int
    m: int
    ef_construct: int
    full_scan_threshold_kb: int
    indexing_threshold_kb: int


@dataclass
class QdrantTarget:
    """A Qdrant server that passed the preflight; `api_key` stays in memory only."""

    url: str
    api_key: str | None
    api_key_env: str | None
    version: str

    def describe(self) -> dict:
        return {
            "url": self.url,
            "server_version": self.version,
            "api_key_env": self.api_key_env,
            "api_key": "set" if self.api_key else "none",
        }


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _server_reason(exc: BaseException) -> str:
    """A short reason from a qdrant-client error: the server's own status text where it sent one."""
    from qdrant_client.http.exceptions import UnexpectedResponse

    if isinstance(exc, UnexpectedResponse):
        try:
            detail = exc.structured().get("status", {}).get("error")
        except Exception:  # not JSON: keep the HTTP status only
            detail = None
        return f"HTTP {exc.status_code}" + (f": {detail}" if detail else "")
    cause = exc.__cause__ or exc.__context__
    return _first_line(cause if cause is not None else exc)


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            "--qdrant-url must be an http:// or https:// URL with a host",
            hint="e.g. --qdrant-url http://127.0.0.1:6333",
        )
    if parts.username or parts.password:
        # do not echo the URL: it carries a secret
        raise UsageError(
            "--qdrant-url must not carry credentials",
            hint="put the API key in an environment variable and name it with --qdrant-api-key-env",
        )
    return url.rstrip("/")


def read_api_key(env_name: str | None) -> str | None:
    if env_name is None:
        return None
    value = os.environ.get(env_name)
    if value is None:
        raise UsageError(
            f"environment variable {env_name} (from --qdrant-api-key-env) is not set",
            hint=f"export {env_name}=<the Qdrant API key> before running, or drop --qdrant-api-key-env",
        )
    if not value.strip():
        raise UsageError(f"environment variable {env_name} (from --qdrant-api-key-env) is empty")
    return value.strip()


def _client(url: str, api_key: str | None, timeout: int = CONNECT_TIMEOUT_SECONDS):
    import warnings

    from qdrant_client import QdrantClient

    with warnings.catch_warnings():
        # "Api key is used with an insecure connection": the report says so instead
        warnings.simplefilter("ignore")
        return QdrantClient(
            url=url,
            api_key=api_key,
            prefer_grpc=False,
            timeout=timeout,
            check_compatibility=False,
        )


def preflight(url: str | None, api_key_env: str | None, spec: IndexSpec, points: int) -> QdrantTarget | None:
    """Fail fast (UsageError, exit 2) on anything that would stop the vector load.

    Embedded: the engine is importable and the temporary folder has room for the shard. Server:
    reachable, the key is accepted (listing collections needs it), and a throwaway collection of the
    load's shape can be created and deleted, all within PREFLIGHT_SECONDS (docs/PEERS.md): qdrant-client's
    timeouts are per read, so the checks run in a daemon thread that is left behind at that deadline.
    """
    import threading

    if url is None:
        return _server_preflight(url, api_key_env, spec, points)
    box: dict = {}

    def attempt() -> None:
        try:
            box["target"] = _server_preflight(url, api_key_env, spec, points)
        except BaseException as err:  # raised again in the caller's thread
            box["error"] = err

    (worker := threading.Thread(target=attempt, daemon=True, name="qdrant-preflight")).start()
    worker.join(PREFLIGHT_SECONDS)
    if "error" in box:
        raise box["error"]
    if worker.is_alive():
        raise UsageError(
            f"Qdrant at {check_url(url)} did not finish answering within {PREFLIGHT_SECONDS} s",
            hint="check the URL and port (REST, usually 6333) and that the server answers promptly",
        )
    return box["target"]


def _server_preflight(url, api_key_env, spec: IndexSpec, points: int) -> QdrantTarget | None:
    if url is None:
        if api_key_env:
            raise UsageError(
                "--qdrant-api-key-env needs --qdrant-url", hint="name the server with --qdrant-url"
            )
        try:
            import qdrant_edge  # noqa: F401
        except ImportError:
            raise MissingDependency(
                "the vectors load needs qdrant-edge-py (the Qdrant engine in-process)",
                hint="pip install 'llm-node-toolkit[vectors]', or leave the load out: "
                "--workloads matmul,memory_bandwidth,kto_lora,inference",
            ) from None
        check_disk(points, spec.dim)
        return None
    url = check_url(url)
    api_key = read_api_key(api_key_env)
    try:
        import qdrant_client  # noqa: F401
    except ImportError:
        raise MissingDependency(
            "--qdrant-url needs qdrant-client", hint="pip install 'llm-node-toolkit[vectors]'"
        ) from None
    key_hint = (
        f"check the key in ${api_key_env}"
        if api_key_env
        else "the server wants an API key: name its variable with --qdrant-api-key-env"
    )
    refused = "refused the API key" if api_key else "wants an API key"
    client = _client(url, api_key)
    try:
        try:
            version = client.info().version
        except Exception as exc:
            reason = _scrub(_server_reason(exc), api_key)
            if getattr(exc, "status_code", None) in (401, 403):
                raise UsageError(f"Qdrant at {url} {refused} ({reason})", hint=key_hint) from None
            raise UsageError(
                f"cannot reach Qdrant at {url}: {reason}",
                hint="check the URL and port (REST, usually 6333) and that the server is running",
            ) from None
        try:
            client.get_collections()
        except Exception as exc:
            reason = _scrub(_server_reason(exc), api_key)
            if getattr(exc, "status_code", None) in (401, 403):
                raise UsageError(f"Qdrant at {url} {refused} ({reason})", hint=key_hint) from None
            raise UsageError(f"Qdrant at {url} cannot list collections: {reason}") from None
        probe = ServerStore(QdrantTarget(url, api_key, api_key_env, version), client=client)
        try:
            probe.create(spec)
        except Exception as exc:
            reason = _scrub(_server_reason(exc), api_key)
            forbidden = getattr(exc, "status_code", None) in (401, 403)
            raise UsageError(
                f"Qdrant at {url} refused a {spec.dim}-d test collection ({reason})",
                hint=key_hint + " (it needs write access)"
                if forbidden
                else "check --set vectors.dim and the server's limits",
            ) from None
        finally:
            probe.close()
    finally:
        with contextlib.suppress(Exception):
            client.close()
    return QdrantTarget(url, api_key, api_key_env, version)


def check_disk(points: int, dim: int) -> None:
    """The shard (segments, WAL, the old and new segments while optimize() runs) took 3.6x the raw
    float32 vectors at 20k x 256-d: ask for 4x free in the temporary folder."""
    folder = tempfile.gettempdir()
    need = DISK_FACTOR * points * dim * 4
    free = shutil.disk_usage(folder).free
    if free < need:
        raise UsageError(
            f"the vectors load needs about {need / 1e9:.1f} GB free in {folder} for its shard, "
            f"{free / 1e9:.1f} GB are",
            hint="point TMPDIR at a bigger folder, or make the load smaller (--set vectors.points=N)",
        )


class EdgeStore:
    """qdrant-edge: one shard in a temporary folder, removed by close()."""

    kind = "edge"

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="toolkit-bench-vectors-")
        self.shard = None
        self.points = 0

    def describe(self) -> dict:
        from importlib.metadata import version

        return {"engine": "qdrant-edge (in-process)", "version": version("qdrant-edge-py")}

    def create(self, spec: IndexSpec) -> None:
        import qdrant_edge as q

        self.spec = spec
        config = q.EdgeConfig(
            vectors=q.EdgeVectorParams(size=spec.dim, distance=q.Distance.Cosine),
            hnsw_config=q.HnswIndexConfig(
                m=spec.m, ef_construct=spec.ef_construct, full_scan_threshold=spec.full_scan_threshold_kb
            ),
            # optimize() builds HNSW for segments above this size; edge never optimizes on its own
            optimizers=q.EdgeOptimizersConfig(indexing_threshold=spec.indexing_threshold_kb),
        )
        self.shard = q.EdgeShard.create(os.path.join(self.folder, "shard"), config)
        self.shard.update(q.UpdateOperation.create_field_index(CATEGORY_FIELD, q.PayloadSchemaType.Integer))

    def upsert(self, first_id: int, vectors, categories) -> None:
        import qdrant_edge as q

        points = [
            q.Point(first_id + i, v, {CATEGORY_FIELD: int(c)})
            for i, (v, c) in enumerate(zip(vectors, categories, strict=True))
        ]
        self.shard.update(q.UpdateOperation.upsert_points(points))
        self.points += len(points)

    def build_index(self, timeout: float) -> float:
        t0 = time.perf_counter()
        self.shard.optimize()
        return time.perf_counter() - t0

    def index_info(self) -> dict:
        info = self.shard.info()
        return {
            "points_count": info.points_count,
            "indexed_vectors_count": info.indexed_vectors_count,
            "segments_count": info.segments_count,
        }

    def _request(self, vector, ef: int, exact: bool, category: int | None):
        import qdrant_edge as q

        flt = None
        if category is not None:
            flt = q.Filter(must=[q.FieldCondition(key=CATEGORY_FIELD, match=q.MatchValue(int(category)))])
        return q.QueryRequest(
            limit=10,
            query=q.Query.Nearest(vector),
            params=q.SearchParams(hnsw_ef=ef, exact=exact),
            filter=flt,
            with_payload=False,
            with_vector=False,
        )

    def search(self, vector, ef: int, exact: bool = False, category: int | None = None) -> list[int]:
        return [p.id for p in self.shard.query(self._request(vector, ef, exact, category))]

    def search_batch(self, vectors, ef: int) -> list[list[int]]:
        import qdrant_edge as q

        batch = q.QueryBatchRequest([self._request(v, ef, False, None) for v in vectors])
        return [[p.id for p in hits] for hits in self.shard.query_batch(batch)]

    def close(self) -> None:
        if self.shard is not None:
            with contextlib.suppress(Exception):
                self.shard.close()
            self.shard = None
        shutil.rmtree(self.folder, ignore_errors=True)


class ServerStore:
    """A Qdrant server over REST, in a collection of its own that close() deletes."""

    kind = "server"

    def __init__(self, target: QdrantTarget, client=None) -> None:
        self.target = target
        self.client = client or _client(target.url, target.api_key, REQUEST_TIMEOUT_SECONDS)
        self.owns_client = client is None
        self.name = COLLECTION_PREFIX + secrets.token_hex(6)
        self.created = False
        self.points = 0

    def describe(self) -> dict:
        return {
            "engine": "Qdrant server (REST, qdrant-client)",
            "collection": self.name,
            **self.target.describe(),
            **self.gpu_info(),
        }

    def gpu_info(self) -> dict:
        """What the server says about GPU indexing (telemetry, details level 1); never guessed. Read under
        the peer policy (docs/PEERS.md): one total deadline, capped, the key only to the URL's origin."""
        from toolkit.peer import Peer

        headers = {"api-key": self.target.api_key} if self.target.api_key else {}
        peer = Peer(self.target.url, CONNECT_TIMEOUT_SECONDS, headers=headers)
        try:
            resp = peer.request("GET", "/telemetry", params={"details_level": 1})
            if resp.status_code != 200:
                raise RuntimeError(f"HTTP {resp.status_code}")
            app = resp.json()["result"]["app"]
        except Exception as exc:
            reason = _scrub(_first_line(exc), self.target.api_key)
            return {"gpu_indexing": f"unknown (telemetry unavailable: {reason})"}
        finally:
            peer.close()
        gpu_build = (app.get("features") or {}).get("gpu")
        devices = [d.get("name") for d in ((app.get("system") or {}).get("gpu_devices") or [])]
        if gpu_build is None:
            state = "unknown (telemetry has no features.gpu)"
        elif not gpu_build:
            state = "off (server built without GPU support)"
        elif devices:
            state = "on (GPU devices in use: " + ", ".join(map(str, devices)) + ")"
        else:
            state = "off (GPU build, no GPU device initialised: gpu.indexing is off or no device found)"
        return {"gpu_indexing": state, "server_gpu_build": gpu_build, "server_gpu_devices": devices}

    def create(self, spec: IndexSpec) -> None:
        from qdrant_client.http import models

        self.spec = spec
        self.client.create_collection(
            self.name,
            vectors_config=models.VectorParams(size=spec.dim, distance=models.Distance.COSINE),
            hnsw_config=models.HnswConfigDiff(
                m=spec.m, ef_construct=spec.ef_construct, full_scan_threshold=spec.full_scan_threshold_kb
            ),
            # indexing on from the start, as a user's collection would be: build_index() times what is
            # left after the last upsert until the collection is green with every vector indexed
            optimizers_config=models.OptimizersConfigDiff(indexing_threshold=spec.indexing_threshold_kb),
        )
        self.created = True
        self.client.create_payload_index(
            self.name, CATEGORY_FIELD, field_schema=models.PayloadSchemaType.INTEGER, wait=True
        )

    def upsert(self, first_id: int, vectors, categories) -> None:
        from qdrant_client.http import models

        batch = models.Batch(
            ids=list(range(first_id, first_id + len(vectors))),
            vectors=vectors.tolist(),
            payloads=[{CATEGORY_FIELD: int(c)} for c in categories],
        )
        self.client.upsert(self.name, points=batch, wait=True)
        self.points += len(vectors)

    def build_index(self, timeout: float) -> float:
        """Seconds from the last upsert until the collection is green with every vector indexed."""
        from qdrant_client.http import models

        t0 = time.perf_counter()
        while True:
            info = self.client.get_collection(self.name)
            if (
                info.status == models.CollectionStatus.GREEN
                and (info.indexed_vectors_count or 0) >= self.points
            ):
                return time.perf_counter() - t0
            if info.status == models.CollectionStatus.RED:
                raise RuntimeError(f"collection {self.name} turned red while indexing")
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(
                    f"index not built after {timeout:.0f} s ({info.indexed_vectors_count} of "
                    f"{self.points} vectors indexed, status {info.status.value})"
                )
            time.sleep(0.05)

    def index_info(self) -> dict:
        info = self.client.get_collection(self.name)
        return {
            "points_count": info.points_count,
            "indexed_vectors_count": info.indexed_vectors_count,
            "segments_count": info.segments_count,
            "status": info.status.value,
        }

    @staticmethod
    def _filter(category: int | None):
        from qdrant_client.http import models

        if category is None:
            return None
        return models.Filter(
            must=[models.FieldCondition(key=CATEGORY_FIELD, match=models.MatchValue(value=int(category)))]
        )

    def _request(self, vector, ef: int, exact: bool, category: int | None):
        from qdrant_client.http import models

        return models.QueryRequest(
            query=vector.tolist(),
            limit=10,
            params=models.SearchParams(hnsw_ef=ef, exact=exact),
            filter=self._filter(category),
            with_payload=False,
            with_vector=False,
        )

    def search(self, vector, ef: int, exact: bool = False, category: int | None = None) -> list[int]:
        from qdrant_client.http import models

        resp = self.client.query_points(
            self.name,
            query=vector.tolist(),
            limit=10,
            search_params=models.SearchParams(hnsw_ef=ef, exact=exact),
            query_filter=self._filter(category),
            with_payload=False,
        )
        return [p.id for p in resp.points]

    def search_batch(self, vectors, ef: int) -> list[list[int]]:
        responses = self.client.query_batch_points(
            self.name, requests=[self._request(v, ef, False, None) for v in vectors]
        )
        return [[p.id for p in r.points] for r in responses]

    def close(self) -> None:
        if self.created:
            with contextlib.suppress(Exception):
                self.client.delete_collection(self.name)
            self.created = False
        if self.owns_client:
            with contextlib.suppress(Exception):
                self.client.close()


def open_store(target: QdrantTarget | None):
    return ServerStore(target) if target is not None else EdgeStore()
