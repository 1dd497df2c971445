"""The one policy every HTTP client of toolkit follows towards a network peer (a Redfish BMC, a Qdrant
server). docs/PEERS.md says the same for readers who do not read code.

- **Credentials go only where the user pointed.** A `Peer` is bound to one origin: the scheme, host and
  port the user named. Redirects are never followed automatically. A 3xx whose `Location` is that same
  origin is followed (at most `MAX_REDIRECTS` times), with the same headers; any other is refused with
  `PeerError(kind="redirect")` naming only the origin it pointed to, so a password, session token or API
  key is never re-sent to another host, another port, or from HTTPS down to HTTP.
- **One total deadline per peer**, not a per-read timeout: a peer that drips one byte a second never
  times out a read, so a watchdog (`threading.Timer`) shuts the request's sockets down when the deadline
  passes, whatever phase the request is in (connect, TLS, headers, body). The request then fails with
  `PeerError(kind="timeout")`.
- **Answers are capped**: bodies are read in chunks and a body over `max_bytes` (default
  `MAX_BODY_BYTES`) stops with `PeerError(kind="too_large")`; memory stays bounded whatever the peer
  sends.
- Errors carry no secrets: they name the origin, the path and what went wrong, never headers or bodies.

Errors of the transport itself (TLS, connection refused) are raised as `requests` raises them, so each
client keeps its own wording for those; `PeerError` is raised for what this policy refuses.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

MAX_BODY_BYTES = 16 * 2**20  # the largest answer any client reads (a big SEL is well under 1 MiB)
MAX_REDIRECTS = 3  # same-origin redirects followed per request
CHUNK_BYTES = 64 * 1024
# the watchdog fires this long after the deadline, so a peer that is silent meets the socket timeout first
# (requests' Timeout: "did not answer") and only one that keeps sending too slowly meets the watchdog
WATCHDOG_SLACK = 0.25
DEFAULT_PORTS = {"http": 80, "https": 443}


class PeerError(Exception):
    """A request the policy stopped: `kind` is timeout, redirect or too_large."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class Answer:
    """A peer's complete (capped) answer."""

    status_code: int
    reason: str
    headers: dict
    content: bytes = field(repr=False)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self):
        return jsonlib.loads(self.content)  # ValueError on anything not JSON, as requests does


def is_this_machine(host: str) -> bool:
    """Whether `host` names this machine: localhost, its own name, or a loopback address."""
    import ipaddress

    if host in ("localhost", socket.gethostname()):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) with the scheme's default port filled in; host lower-cased."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme, 0)


def _spell(where: tuple[str, str, int]) -> str:
    scheme, host, port = where
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}"


class Peer:
    """HTTP to one origin under one total deadline. `request()` returns an `Answer`; `close()` at the end.

    `deadline_s` counts from construction and covers every request together. `extend(seconds)` grants a
    final request (a logout) a short time past it.
    """

    def __init__(
        self,
        base_url: str,
        deadline_s: float,
        name: str | None = None,
        verify: bool | str = True,
        headers: dict | None = None,
        max_bytes: int = MAX_BODY_BYTES,
    ):
        import requests

        self.base = base_url.rstrip("/")
        self.origin = origin(self.base)
        self.name = name or _spell(self.origin)
        self.budget = deadline_s
        self.deadline = time.monotonic() + deadline_s
        self.max_bytes = max_bytes
        self.verify = verify
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._expired = False
        self.http = requests.Session()
        self.http.trust_env = False  # REQUESTS_CA_BUNDLE and proxies from the environment must not apply
        self.http.headers.update(headers or {})
        adapter = _watched_adapter(self._sockets, self._lock)
        self.http.mount("http://", adapter)
        self.http.mount("https://", adapter)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def request(self, method: str, path: str, grace: float = 0.0, **kwargs) -> Answer:
        """One request (and its same-origin redirects) within what is left of the deadline, plus `grace`
        seconds for a last request that is worth a moment more. kwargs: json, params, auth."""
        limit = self.left() + grace
        if limit <= 0:
            raise PeerError("timeout", f"{self.name} did not finish answering within {self.budget:g} s")
        self._expired = False  # requests' own Timeout (silence for the whole time left) passes through
        timer = threading.Timer(limit + WATCHDOG_SLACK, self._expire)
        timer.daemon = True
        timer.start()
        try:
            return self._follow(method, self.base + path, time.monotonic() + limit, kwargs)
        except PeerError:
            raise
        except Exception:
            if self._expired:
                raise PeerError(
                    "timeout", f"{self.name} did not finish answering within {self.budget:g} s"
                ) from None
            raise
        finally:
            timer.cancel()

    def _follow(self, method: str, url: str, until: float, kwargs: dict) -> Answer:
        for _ in range(MAX_REDIRECTS + 1):
            left = until - time.monotonic()
            if left <= 0:
                self._expired = True
                raise TimeoutError
            response = self.http.request(
                method,
                url,
                timeout=(left, left),
                verify=self.verify,
                allow_redirects=False,
                stream=True,
                **kwargs,
            )
            with response:
                if not response.is_redirect:
                    return Answer(
                        response.status_code,
                        response.reason or "",
                        response.headers,
                        self._body(response, url),
                    )
                target = urljoin(url, response.headers.get("Location", ""))
            where = origin(target)
            if where != self.origin:
                raise PeerError(
                    "redirect",
                    f"{self.name} redirected {urlsplit(url).path} to {_spell(where)}: refused "
                    "(credentials are sent only to the host, port and scheme you named)",
                )
            if response.status_code not in (307, 308):  # 301, 302, 303: the browser habit, a GET
                method, kwargs = "GET", {k: v for k, v in kwargs.items() if k not in ("json", "data")}
            url = target
        raise PeerError("redirect", f"{self.name} redirected more than {MAX_REDIRECTS} times")

    def _body(self, response, url: str) -> bytes:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise self._too_large(url)
        chunks, size = [], 0
        for chunk in response.iter_content(CHUNK_BYTES):
            size += len(chunk)
            if size > self.max_bytes:
                raise self._too_large(url)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, url: str) -> PeerError:
        return PeerError(
            "too_large",
            f"{self.name} sent an answer larger than {self.max_bytes / 2**20:g} MiB for "
            f"{urlsplit(url).path}: refused",
        )

    def _expire(self) -> None:
        """The watchdog: at the deadline, end every socket this peer opened (a blocked read returns)."""
        self._expired = True
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.http.close()


def _watched_adapter(sockets: list, lock: threading.Lock):
    """A requests adapter whose connections record their sockets, so the watchdog can shut them down."""
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def watched(base):
        class Watched(base):
            def _new_conn(self):
                sock = super()._new_conn()
                with lock:
                    sockets[:] = [s for s in sockets if s.fileno() != -1]
                    sockets.append(sock)
                return sock

        return Watched

    adapter = HTTPAdapter(max_retries=0)
    adapter.poolmanager.pool_classes_by_scheme = {
        "http": type("WatchedPool", (HTTPConnectionPool,), {"ConnectionCls": watched(HTTPConnection)}),
        "https": type("WatchedPool", (HTTPSConnectionPool,), {"ConnectionCls": watched(HTTPSConnection)}),
    }
    return adapter
