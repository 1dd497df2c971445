"""Qdrant: the node answers (`/healthz`) and is ready (`/readyz`), its version, every collection's status
(green, yellow while optimizing, grey with optimizations pending, red when the optimizer failed) and points,
whether GPU indexing is on (from `/telemetry`), and the disk its storage folder takes.

One deadline covers the whole read (`qdrant.timeout`, 3 s): a Qdrant that is down or answers slowly costs
at most that long, and `toolkit health` runs this read beside the other collectors. A node that is down or
too slow is CRITICAL where Qdrant is `required`, otherwise UNKNOWN (it may simply not run here). A rejected
API key is said as such — the key itself is never printed: it is registered with `toolkit.health.secrets`
and travels only in the `api-key` header.

    qdrant: {url: "http://127.0.0.1:6333", api_key: "...", timeout: 3, required: true,
             storage_path: /var/lib/qdrant/storage, expect_gpu_indexing: auto, insecure: false, ca: FILE}
"""

from __future__ import annotations

import os
import ssl
import stat
import time
import warnings
from urllib.parse import quote

from toolkit.health import secrets
from toolkit.health.collector import Context
from toolkit.health.collectors.qdrant_settings import API_KEY_ENV, QdrantSettings, settings
from toolkit.health.model import CollectorResult, Status

COLLECTION_STATUS = {
    "green": (Status.OK, "green"),
    "yellow": (Status.WARNING, "yellow: optimizing (indexing runs; searches may be slower until it ends)"),
    "grey": (Status.WARNING, "grey: optimizations pending but not triggered (any update starts them)"),
    "red": (Status.CRITICAL, "red: an operation failed and was not recovered"),
}


class _Failed(Exception):
    """A request that got no usable answer: `kind` is down, timeout, tls or auth."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class _Client:
    """One HTTP session under the peer policy (toolkit/peer.py, docs/PEERS.md): one total deadline for the
    whole read, capped answers, and the API key sent only to the origin of the URL the user named."""

    def __init__(self, s: QdrantSettings):
        from toolkit.peer import Peer

        self.s = s
        headers = {"Accept": "application/json"}
        if s.api_key:
            headers["api-key"] = s.api_key
        self.peer = Peer(s.url, s.timeout, name=s.display, verify=s.verify, headers=headers)
        self.http = self.peer.http
        self.deadline = self.peer.deadline

    def left(self) -> float:
        return self.peer.left()

    def get(self, path: str):
        import requests

        from toolkit.peer import PeerError

        try:
            return self.peer.request("GET", path)
        except PeerError as err:
            kind = "timeout" if err.kind == "timeout" else "down" if err.kind == "redirect" else "protocol"
            raise _Failed(kind, str(err)) from None
        except requests.exceptions.SSLError as err:
            cause = _root(err)
            if isinstance(cause, ssl.SSLCertVerificationError):
                why = f"TLS certificate not trusted ({cause.verify_message})"
                hint = "set qdrant.ca to the CA that signed it, or qdrant.insecure: true"
            else:
                why, hint = f"TLS handshake failed ({cause})", "is this Qdrant's HTTPS port?"
            raise _Failed("tls", secrets.redact(f"{self.s.display}: {why}; {hint}")) from None
        except requests.exceptions.Timeout:
            raise _Failed("timeout", f"{self.s.display} did not answer within {self.s.timeout:g} s") from None
        except requests.exceptions.ConnectionError as err:
            why = secrets.redact(str(_root(err)).rsplit(": ", 1)[-1])
            raise _Failed("down", f"cannot connect to {self.s.display}: {why}") from None
        except requests.exceptions.RequestException as err:
            raise _Failed("down", f"request to {self.s.display} failed: {type(err).__name__}") from None

    def result(self, path: str):
        """The `result` of a Qdrant answer; `_Failed("auth")` for 401/403."""
        response = self.get(path)
        if response.status_code in (401, 403):
            said = secrets.redact(response.text.strip()[:200]) or response.reason
            if self.s.api_key:
                why = f"API key rejected by {self.s.display} (HTTP {response.status_code}: {said})"
            else:
                why = f"{self.s.display} needs an API key (HTTP {response.status_code}: {said})"
            raise _Failed("auth", why)
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if response.status_code != 200 or not isinstance(doc, dict):
            error = ((doc or {}).get("status") or {}) if isinstance(doc, dict) else {}
            said = error.get("error") if isinstance(error, dict) else None
            raise _Failed("protocol", f"{path}: HTTP {response.status_code}" + (f" ({said})" if said else ""))
        return doc.get("result")


def _root(err: BaseException) -> BaseException:
    seen = err
    for _ in range(10):
        inner = getattr(seen, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in seen.args if isinstance(a, BaseException)), None)
        if inner is None:
            return seen
        seen = inner
    return seen


def collect(s: QdrantSettings) -> CollectorResult:
    import urllib3

    result = CollectorResult("qdrant", info={"url": s.display})
    with warnings.catch_warnings():
        if s.verify is False:  # asked for; the report says so
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            result.info["tls"] = "certificate NOT verified (qdrant.insecure)"
        elif s.url.startswith("http://") and s.api_key and not s.local:
            result.info["tls"] = "none: plain HTTP to another host, the API key travels unencrypted"
        client = _Client(s)
        try:
            _read(client, result)
        except _Failed as err:
            result.up = False
            _unreadable(result, s, err)
        finally:
            client.peer.close()
    if s.storage_path:
        _storage(result, s.storage_path, client.deadline)
    return result


def _down_status(s: QdrantSettings) -> Status:
    return Status.CRITICAL if s.required else Status.UNKNOWN


def _read(client: _Client, result: CollectorResult) -> None:
    s = client.s
    health = client.get("/healthz")
    if health.status_code != 200:
        raise _Failed("down", f"{s.display}/healthz answered HTTP {health.status_code}")
    result.add(
        "qdrant.up", Status.OK, "up", None, f"{s.display} answers", "toolkit_qdrant_up", prom_value=1.0
    )
    ready = client.get("/readyz")
    if ready.status_code == 200:
        result.add(
            "qdrant.ready", Status.OK, "ready", None, "all shards are ready", "toolkit_qdrant_ready", 1.0
        )
    else:
        said = ready.text.strip()[:200] or f"HTTP {ready.status_code}"
        result.add(
            "qdrant.ready",
            Status.CRITICAL if s.required else Status.WARNING,
            "not ready",
            None,
            f"{said} (HTTP {ready.status_code}): starting, recovering or loading collections",
            "toolkit_qdrant_ready",
            0.0,
        )
    try:
        root = client.get("/").json()  # the bare VersionInfo, readable without a key
    except ValueError:
        root = {}
    version = root.get("version") if isinstance(root, dict) else None
    if version:
        result.info["version"] = version
        result.add(
            "qdrant.version",
            Status.OK,
            version,
            None,
            f"Qdrant {version}",
            "toolkit_qdrant_info",
            1.0,
            version=version,
        )
    names = [c.get("name") for c in (client.result("/collections") or {}).get("collections", [])]
    result.add(
        "qdrant.collections",
        Status.OK,
        len(names),
        None,
        ", ".join(names) or "none",
        "toolkit_qdrant_collections",
    )
    try:
        telemetry = client.result("/telemetry?details_level=1")
    except _Failed as err:
        if err.kind in ("down", "timeout", "tls"):
            raise
        telemetry = None
        result.add("qdrant.gpu_indexing", Status.UNKNOWN, None, None, f"telemetry not readable: {err}")
    if telemetry is not None:
        _gpu_indexing(result, telemetry)
    for done, name in enumerate(names):
        if client.left() <= 0:
            result.add(
                "qdrant.collections.unread",
                _down_status(s),
                len(names) - done,
                None,
                f"{len(names) - done} of {len(names)} collections not read within {s.timeout:g} s",
            )
            result.up = False
            break
        try:
            info = client.result(f"/collections/{quote(str(name), safe='')}") or {}
        except _Failed as err:
            if err.kind != "protocol":  # down, slow, TLS, key: the whole read stops there
                raise
            result.add(f"qdrant.collection.{name}", Status.UNKNOWN, None, None, f"not readable: {err}")
            continue
        _collection(result, name, info)


def _unreadable(result: CollectorResult, s: QdrantSettings, err: _Failed) -> None:
    if not any(c.name == "qdrant.up" for c in result.checks):  # nothing answered at all
        result.add(
            "qdrant.up", _down_status(s), err.kind, None, str(err), "toolkit_qdrant_up", prom_value=0.0
        )
        return
    if err.kind == "auth":
        hint = (
            f"; check {API_KEY_ENV} or qdrant.api_key"
            if s.api_key
            else f"; set {API_KEY_ENV} or qdrant.api_key"
        )
        result.add("qdrant.auth", Status.UNKNOWN, "rejected", None, str(err) + hint)
        return
    slow = " (slow)" if err.kind == "timeout" else ""
    result.add("qdrant.read", _down_status(s), err.kind, None, f"{err}{slow}; read so far: {_so_far(result)}")


def _so_far(result: CollectorResult) -> str:
    return ", ".join(c.name.removeprefix("qdrant.") for c in result.checks) or "nothing"


def _collection(result: CollectorResult, name: str, info: dict) -> None:
    state = str(info.get("status") or "?")
    status, meaning = COLLECTION_STATUS.get(
        state, (Status.UNKNOWN, f"{state}: a status this toolkit does not know")
    )
    optimizer = info.get("optimizer_status")
    if isinstance(optimizer, dict) and optimizer.get("error"):
        meaning += f"; optimizer error: {optimizer['error']}"
    points, indexed = info.get("points_count"), info.get("indexed_vectors_count")
    counts = f"{points} points, {indexed} indexed vectors, {info.get('segments_count')} segment(s)"
    result.add(
        f"qdrant.collection.{name}",
        status,
        state,
        None,
        f"{meaning}; {counts}",
        "toolkit_qdrant_collection_status",
        prom_value=float(int(status)),
        collection=name,
    )
    if isinstance(points, int):
        result.add(
            f"qdrant.collection.{name}.points",
            Status.OK,
            points,
            None,
            f"{points} points in {name}",
            "toolkit_qdrant_collection_points",
            collection=name,
        )


def _gpu_indexing(result: CollectorResult, telemetry: dict) -> None:
    """`app.features.gpu`: built with GPU support; `app.system.gpu_devices`: present only when
    `gpu.indexing` is on (Qdrant creates its GPU device manager only then), listing the devices it found."""
    app = (telemetry or {}).get("app") or {}
    features, system = app.get("features"), app.get("system") or {}
    if not isinstance(features, dict) or "gpu" not in features:
        result.add(
            "qdrant.gpu_indexing", Status.UNKNOWN, None, None, "telemetry does not say (details level 1)"
        )
        return
    devices = system.get("gpu_devices")
    metric = "toolkit_qdrant_gpu_indexing_enabled"
    if not features["gpu"]:
        detail = "off: this Qdrant build has no GPU support (Qdrant's -gpu-nvidia / -gpu-amd images have it)"
        result.add("qdrant.gpu_indexing", Status.OK, "off", None, detail, metric, 0.0)
    elif devices is None:
        detail = "off: GPU build, but gpu.indexing is off (QDRANT__GPU__INDEXING=1 turns it on)"
        result.add("qdrant.gpu_indexing", Status.OK, "off", None, detail, metric, 0.0)
    elif not devices:
        detail = "on, but Qdrant found no GPU device (is the GPU passed to its container?)"
        result.add("qdrant.gpu_indexing", Status.WARNING, "no device", None, detail, metric, 0.0)
    else:
        found = ", ".join(str(d.get("name")) for d in devices if isinstance(d, dict))
        result.add("qdrant.gpu_indexing", Status.OK, "on", None, f"on: {found}", metric, 1.0)


def judge_gpu_indexing(result: CollectorResult, s: QdrantSettings, nvidia_gpus: bool | None) -> None:
    """GPU indexing off is a WARNING where it is expected: `expect_gpu_indexing: true`, or (auto) when
    Qdrant runs on this node and this node has NVIDIA GPUs (known only when the GPU collector ran)."""
    check = next((c for c in result.checks if c.name == "qdrant.gpu_indexing"), None)
    if check is None or check.value != "off":
        return
    if s.expect_gpu_indexing is True:
        why = "expected (qdrant.expect_gpu_indexing)"
    elif s.expect_gpu_indexing is None and s.local and nvidia_gpus:
        why = "this node has NVIDIA GPUs that Qdrant could index on"
    else:
        return
    check.status = Status.WARNING
    check.detail += f"; {why}"


def overdue(s: QdrantSettings, waited: float) -> CollectorResult:
    """The result when the read thread itself did not come back in time (a stuck socket, a slow DNS)."""
    result = CollectorResult("qdrant", up=False, info={"url": s.display})
    detail = f"{s.display} did not finish answering within {waited:.1f} s (slow)"
    result.add("qdrant.up", _down_status(s), "timeout", None, detail, "toolkit_qdrant_up", prom_value=0.0)
    return result


def _storage(result: CollectorResult, path: str, deadline: float) -> None:
    """Disk blocks used under the storage folder (like `du`), each inode counted once; the walk shares the
    read's deadline (at least one second of its own): no partial figure is reported."""
    deadline = max(deadline, time.monotonic() + 1.0)
    used, files, seen = 0, 0, set()
    stack = [path]
    try:
        top = os.stat(path)
        if not stat.S_ISDIR(top.st_mode):
            raise NotADirectoryError(20, "not a folder")
        used, seen = top.st_blocks * 512, {(top.st_dev, top.st_ino)}
        while stack:
            if time.monotonic() > deadline:
                result.add(
                    "qdrant.storage",
                    Status.UNKNOWN,
                    None,
                    "bytes",
                    f"{path}: walked {files} files, stopped at the time limit; no figure reported",
                )
                return
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    info = entry.stat(follow_symlinks=False)
                    if (info.st_dev, info.st_ino) in seen:
                        continue
                    seen.add((info.st_dev, info.st_ino))
                    used += info.st_blocks * 512
                    files += 1
                    if stat.S_ISDIR(info.st_mode):
                        stack.append(entry.path)
        fs = os.statvfs(path)
    except OSError as err:
        why = err.strerror or str(err)
        result.add("qdrant.storage", Status.UNKNOWN, None, "bytes", f"cannot read storage_path {path}: {why}")
        return
    free, total = fs.f_bavail * fs.f_frsize, fs.f_blocks * fs.f_frsize
    full = 100.0 * (total - fs.f_bfree * fs.f_frsize) / total if total else 0.0
    result.add(
        "qdrant.storage",
        Status.OK,
        used,
        "bytes",
        f"{path}: {used / 2**20:,.1f} MiB in {files} files; its file system is {full:.0f}% full, "
        f"{free / 2**30:,.1f} GiB free",
        "toolkit_qdrant_storage_used_bytes",
    )


class QdrantCollector:
    """Reads beside the local collectors; GPU indexing is judged once the GPU section is known."""

    name = "qdrant"

    def __init__(self) -> None:
        self.settings: QdrantSettings | None = None

    def prepare(self, ctx: Context) -> bool:
        self.settings = settings(ctx.config.get("qdrant"), ctx.opts.qdrant_url)
        return self.settings is not None

    def deadline(self) -> float:
        return self.settings.timeout + 1.0  # the read keeps its own deadline; a second to hand it over

    def collect(self, ctx: Context) -> CollectorResult:
        return collect(self.settings)

    def settle(self, ctx: Context, result: CollectorResult | None, waited: float) -> CollectorResult:
        if result is None:
            result = overdue(self.settings, waited)
        judge_gpu_indexing(result, self.settings, ctx.nvidia_gpus())
        return result
