"""One streaming request over the standard library's `http.client`, stamped line by line.

The policy is toolkit/peer.py's, applied to a stream: one total deadline per request (a watchdog shuts the
socket down when it passes, whatever the server is doing: silent, or dripping a byte at a time), capped
answers (a line over `LINE_CAP`, a stream over `STREAM_CAP`: `too_large`), redirects never followed, and
errors that name the path and what went wrong, never headers or bodies. No credentials are sent.

Each line is stamped with `time.monotonic()` as soon as `readline` returns it; nothing heavier than the
JSON parse of that line happens between two reads, so the client's own overhead per token is a few
microseconds (benchmarks/serving_overhead.py measures it).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from toolkit.bench.serving.api import Malformed, Stream, feed

LINE_CAP = 1 << 20  # one SSE/NDJSON line
STREAM_CAP = 64 << 20  # one whole answer
ERROR_BODY_CAP = 4096  # what is read of an error answer, for its message


@dataclass(frozen=True)
class Target:
    """The server the user named: scheme, host, port and a path prefix (`http://h:8080/prefix`)."""

    scheme: str
    host: str
    port: int
    prefix: str

    @classmethod
    def parse(cls, url: str) -> Target:
        from toolkit.errors import UsageError

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"--serve {url!r} is not an http(s) URL with a host",
                hint="name the server's base URL, e.g. http://127.0.0.1:8080",
            )
        if parts.username or parts.password or parts.query or parts.fragment:
            raise UsageError(
                "--serve takes a base URL without credentials, query or fragment",
                hint="e.g. http://127.0.0.1:8080 (no user:password@, no ?query)",
            )
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise UsageError(f"--serve {url!r} has a port that is not a number") from None
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return kind(self.host, self.port, timeout=timeout)


@dataclass
class Outcome:
    """One request as the client saw it. Times are `time.monotonic()` seconds."""

    index: int
    sent: float  # just before the connection is opened and the request written
    end: float = 0.0
    status: str = "ok"  # ok truncated malformed http_error server_error timeout unreachable too_large short
    detail: str = ""
    http_status: int | None = None
    scheduled: float | None = None  # Poisson arrivals: when the request was due
    stream: Stream = field(default_factory=Stream)

    @property
    def first_token(self) -> float | None:
        return self.stream.token_chunks[0][0] if self.stream.token_chunks else None


class _Watchdog:
    """Shuts the connection's socket down when the request's total deadline passes."""

    def __init__(self, conn: http.client.HTTPConnection, seconds: float):
        self.conn, self.fired = conn, False
        self.timer = threading.Timer(seconds, self._fire)
        self.timer.daemon = True

    def _fire(self) -> None:
        self.fired = True
        with contextlib.suppress(OSError, AttributeError):
            self.conn.sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.cancel()


def get_json(target: Target, path: str, deadline_s: float = 5.0, cap: int = 4 << 20) -> tuple[int, object]:
    """A small GET (probes, /metrics is `get_text`): (status, parsed JSON or None). OSError when the server
    cannot be reached."""
    status, body = get_text(target, path, deadline_s, cap)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def get_text(target: Target, path: str, deadline_s: float = 5.0, cap: int = 4 << 20) -> tuple[int, str]:
    conn = target.connection(deadline_s)
    try:
        with _Watchdog(conn, deadline_s):
            conn.request("GET", target.prefix + path, headers={"Accept": "*/*"})
            response = conn.getresponse()
            body = response.read(cap + 1)
        return response.status, body[:cap].decode("utf-8", "replace")
    finally:
        conn.close()


def _read_stream(api: str, response, outcome: Outcome) -> None:
    total = 0
    while True:
        raw = response.readline(LINE_CAP + 1)
        when = time.monotonic()
        if not raw:
            return
        total += len(raw)
        if len(raw) > LINE_CAP or total > STREAM_CAP:
            outcome.status, outcome.detail = "too_large", "a line or the stream exceeded the size cap"
            return
        feed(api, outcome.stream, raw, when)


def _http_error(response, outcome: Outcome) -> None:
    body = response.read(ERROR_BODY_CAP).decode("utf-8", "replace")
    message = body.strip().replace("\n", " ")[:200]
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        error = json.loads(body)["error"]
        message = str(error.get("message", error) if isinstance(error, dict) else error)[:200]
    outcome.status = "http_error"
    outcome.detail = f"HTTP {response.status}: {message}"


def stream_request(
    target: Target, api: str, path: str, body: dict, deadline_s: float, index: int = 0
) -> Outcome:
    """Send one streaming request and read its answer to the end, the deadline or the first fault."""
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream, application/x-ndjson"}
    outcome = Outcome(index=index, sent=time.monotonic())
    conn = target.connection(deadline_s)
    watchdog = _Watchdog(conn, deadline_s)
    try:
        with watchdog:
            conn.request("POST", target.prefix + path, body=payload, headers=headers)
            response = conn.getresponse()
            outcome.http_status = response.status
            if response.status != 200:
                _http_error(response, outcome)
            else:
                _read_stream(api, response, outcome)
    except Malformed as err:
        outcome.status, outcome.detail = "malformed", str(err)
    except (ConnectionRefusedError, socket.gaierror) as err:
        outcome.status, outcome.detail = "unreachable", f"{target.origin}: {err.strerror or err}"
    except (TimeoutError, OSError, http.client.HTTPException) as err:
        if watchdog.fired or isinstance(err, TimeoutError):
            outcome.status, outcome.detail = "timeout", f"no complete answer within {deadline_s:g} s"
        elif outcome.stream.chunks:  # the server went away mid-stream
            outcome.status, outcome.detail = "truncated", f"connection lost: {type(err).__name__}"
        else:
            outcome.status, outcome.detail = "unreachable", f"{target.origin}: {type(err).__name__}: {err}"
    finally:
        outcome.end = time.monotonic()
        conn.close()
    if watchdog.fired and outcome.status == "ok":
        outcome.status, outcome.detail = "timeout", f"no complete answer within {deadline_s:g} s"
    _settle(outcome)
    return outcome


def _settle(outcome: Outcome) -> None:
    """The status of a stream that ended without a transport fault."""
    if outcome.status != "ok":
        return
    stream = outcome.stream
    if stream.server_error:
        outcome.status, outcome.detail = "server_error", stream.server_error
    elif not stream.ended:
        outcome.status = "truncated"
        outcome.detail = "the stream ended without finish_reason, [DONE] or done"
