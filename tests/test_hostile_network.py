"""Hostile network peers (issue 14): every HTTP client follows toolkit/peer.py (docs/PEERS.md). Peers are
small servers on loopback that redirect credentials elsewhere, drip one byte a second, send endless bodies
or cyclic links; a second loopback address (127.0.0.2: Linux answers all of 127/8) stands for "another
host" and records every request it gets. Everything runs through the real `toolkit` command."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from redfish_server import make_certificate

from conftest import BMC_ONLY, REPO, toolkit

PASSWORD = "hunter2-secret-pw"
API_KEY = "qdrant-key-do-not-leak"
SESSIONS = "/redfish/v1/SessionService/Sessions"
TOKEN = "tok-0123456789abcdef"


class Peer:
    """A loopback HTTP(S) server whose answers come from `behave(handler, method, path, body)`; it records
    every request (method, path, headers, body) it receives."""

    def __init__(self, behave, host: str = "127.0.0.1", tls: tuple[Path, Path] | None = None):
        self.behave, self.host, self.requests = behave, host, []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30

            def log_message(self, *args):
                pass

            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                peer.requests.append((self.command, self.path, dict(self.headers), body))
                try:
                    peer.behave(self, self.command, self.path, body)
                except OSError:  # the client hung up (its deadline): expected
                    self.close_connection = True

            do_GET = do_POST = do_DELETE = _any

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request, client_address):
                if tls is None:
                    return super().finish_request(request, client_address)
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(*tls)
                request.settimeout(30)
                try:
                    wrapped = context.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError):
                    return None
                with wrapped:
                    Handler(wrapped, client_address, self)
                return None

            def handle_error(self, request, client_address):
                pass

        self.httpd = Server((host, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def saw_secret(self) -> bool:
        text = repr(self.requests)
        return any(secret in text for secret in (PASSWORD, TOKEN, API_KEY))


def send(handler, code: int, doc=None, headers: dict | None = None) -> None:
    payload = json.dumps(doc).encode() if doc is not None else b""
    handler.send_response(code)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


def drip(handler, data: bytes, seconds: float = 60) -> None:
    """One byte a second: no single read ever waits long enough to time out."""
    end = time.monotonic() + seconds
    for byte in data:
        if time.monotonic() > end:
            break
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        time.sleep(1)
    handler.close_connection = True


ROOT = {
    "@odata.id": "/redfish/v1",
    "RedfishVersion": "1.11.0",
    "Chassis": {"@odata.id": "/redfish/v1/Chassis"},
    "Systems": {"@odata.id": "/redfish/v1/Systems"},
    "SessionService": {"@odata.id": "/redfish/v1/SessionService"},
    "Links": {"Sessions": {"@odata.id": SESSIONS}},
}


def login_ok(handler, method, path) -> bool:
    """Serve the service root and a session login; False for anything else."""
    if method == "GET" and path == "/redfish/v1":
        send(handler, 200, ROOT)
        return True
    if method == "POST" and path == SESSIONS:
        send(
            handler, 201, {"@odata.id": f"{SESSIONS}/1"}, {"X-Auth-Token": TOKEN, "Location": f"{SESSIONS}/1"}
        )
        return True
    return False


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("hostile-tls"))


@pytest.fixture
def peers():
    made = []

    def make(behave, **kwargs) -> Peer:
        made.append(Peer(behave, **kwargs))
        return made[-1]

    yield make
    for peer in made:
        peer.close()


@pytest.fixture
def elsewhere(peers, certificate):
    """What a redirect points to: another host (127.0.0.2, HTTPS) and plain HTTP on 127.0.0.1."""

    def ok(handler, method, path, body):
        send(handler, 201, {"@odata.id": f"{SESSIONS}/9"}, {"X-Auth-Token": "stolen"})

    return {
        "other-host": peers(ok, host="127.0.0.2", tls=certificate),
        "plain-http": peers(ok),
    }


def health_bmc(url: str, *extra: str, timeout: float = 3, run_timeout: int = 60):
    """`toolkit health --bmc URL --json`, password in the environment: (proc, seconds, connection check)."""
    started = time.monotonic()
    proc = toolkit(
        "health",
        "--bmc",
        url,
        "--bmc-insecure",
        "--bmc-timeout",
        str(timeout),
        *BMC_ONLY,
        "--skip",
        "qdrant",
        "--json",
        *extra,
        env={"TOOLKIT_BMC_PASSWORD": PASSWORD},
        timeout=run_timeout,
    )
    took = time.monotonic() - started
    doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
    check = next((c for c in doc.get("checks", []) if c["name"] == "bmc.connection"), None)
    return proc, took, check


def bmc_url(peer: Peer) -> str:
    return f"redfish://ADMIN@{peer.host}:{peer.port}"


# --- redirects: credentials never leave the origin the user named -----------------------------------


@pytest.mark.parametrize("code", [307, 308])
@pytest.mark.parametrize("where", ["other-host", "plain-http"])
def test_a_login_redirected_elsewhere_sends_the_password_nowhere(peers, certificate, elsewhere, code, where):
    other = elsewhere[where]

    def bmc(handler, method, path, body):
        if method == "POST" and path == SESSIONS:
            return send(handler, code, None, {"Location": other.url + SESSIONS})
        if not login_ok(handler, method, path):
            send(handler, 404, {})

    server = peers(bmc, tls=certificate)
    proc, _took, check = health_bmc(bmc_url(server))

    assert other.requests == [], "the redirect was followed"
    assert proc.returncode == 3, proc.stderr
    assert (
        check["status"] == "unknown"
        and "redirected" in check["detail"]
        and other.url.split("//")[1] in check["detail"]
    )
    assert PASSWORD not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("code", [301, 302])
@pytest.mark.parametrize("where", ["other-host", "plain-http"])
def test_a_redirect_after_login_does_not_carry_the_token(peers, certificate, elsewhere, code, where):
    other = elsewhere[where]

    def bmc(handler, method, path, body):
        if not login_ok(handler, method, path):
            send(handler, code, None, {"Location": other.url + path})

    server = peers(bmc, tls=certificate)
    proc, _took, check = health_bmc(bmc_url(server))

    assert not other.saw_secret() and other.requests == []
    assert any(h.get("X-Auth-Token") == TOKEN for _, _, h, _ in server.requests)  # it did log in
    assert proc.returncode == 3 and "redirected" in check["detail"]
    assert TOKEN not in proc.stdout + proc.stderr


def test_a_same_origin_redirect_is_followed(peers, certificate):
    """Moving within the BMC itself (a trailing slash, a new path) is not a hostile act."""

    def bmc(handler, method, path, body):
        if path == "/redfish/v1/Chassis":
            return send(handler, 301, None, {"Location": "/redfish/v1/Chassis/"})
        if path == "/redfish/v1/Chassis/":
            return send(handler, 200, {"Members": []})
        if not login_ok(handler, method, path):
            send(handler, 404, {})

    server = peers(bmc, tls=certificate)
    _proc, _took, check = health_bmc(bmc_url(server))
    assert check["status"] == "ok", check
    assert ("GET", "/redfish/v1/Chassis/") in [(m, p) for m, p, _, _ in server.requests]


# --- slow, endless and cyclic peers: the whole read ends within --bmc-timeout ------------------------


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_dripping_bmc_ends_within_the_bmc_timeout_and_frees_the_report_lock(
    peers, certificate, tmp_path, where
):
    def bmc(handler, method, path, body):
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n"
        if where == "body":
            handler.wfile.write(head)
            return drip(handler, b"{" + b" " * 3999)
        return drip(handler, head + b"{}")

    server = peers(bmc, tls=certificate)
    save = tmp_path / "reports"
    proc, took, check = health_bmc(bmc_url(server), "--save-dir", str(save), run_timeout=40)

    assert took < 3 + 2, f"took {took:.1f} s"
    assert proc.returncode == 3 and check["status"] == "unknown" and check["value"] == "timeout", check
    # the next scheduled run is not skipped: the lock was released with the process
    again, took_again, _ = health_bmc(bmc_url(server), "--save-dir", str(save), run_timeout=40)
    assert again.returncode == 3 and "skipped" not in again.stderr.lower() and took_again < 5
    assert len(list(save.glob("*.json"))) == 2


def test_an_endless_bmc_answer_is_capped_in_memory_and_time(peers, certificate):
    chunk = b"[" * 65536

    def bmc(handler, method, path, body):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        end = time.monotonic() + 20
        while (
            time.monotonic() < end
        ):  # 'endless' (bounded only so a broken client cannot fill the test machine)
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        handler.close_connection = True

    server = peers(bmc, tls=certificate)
    # a fresh parent whose only child is toolkit: RUSAGE_CHILDREN is then toolkit's own peak
    probe = (
        "import resource, subprocess, sys, time; t = time.monotonic(); "
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss; "
        "print(p.returncode, round(time.monotonic() - t, 2), peak);"
        "print(p.stdout)"
    )
    argv = [sys.executable, "-m", "toolkit", "health", "--bmc", bmc_url(server), "--bmc-insecure"]
    argv += ["--bmc-timeout", "10", *BMC_ONLY, "--skip", "qdrant", "--json"]
    env = {**os.environ, "TOOLKIT_BMC_PASSWORD": PASSWORD, "NO_COLOR": "1"}
    out = subprocess.run(
        [sys.executable, "-c", probe, *argv], capture_output=True, text=True, env=env, cwd=REPO, timeout=60
    )
    first, _, stdout = out.stdout.partition("\n")
    rc, took, peak_kib = first.split()
    doc = json.loads(stdout)
    check = next(c for c in doc["checks"] if c["name"] == "bmc.connection")

    assert int(rc) == 3 and "larger than 16 MiB" in check["detail"], check
    assert int(peak_kib) < 300 * 1024, f"peak RSS {int(peak_kib) // 1024} MiB"
    assert float(took) < 10 + 2


def test_cyclic_and_repeated_links_are_read_once(peers, certificate):
    """A Chassis collection listing itself and one chassis 2000 times, a chassis whose Thermal link points
    back at it: each resource is fetched once, and the read ends well within the deadline."""
    chassis = "/redfish/v1/Chassis/1"
    docs = {
        "/redfish/v1/Chassis": {
            "Members": [{"@odata.id": "/redfish/v1/Chassis"}] + [{"@odata.id": chassis}] * 2000
        },
        chassis: {
            "@odata.id": chassis,
            "Id": "1",
            "Thermal": {"@odata.id": chassis},
            "Power": {"@odata.id": "/redfish/v1/Chassis"},
        },
        "/redfish/v1/Systems": {"Members": [{"@odata.id": "/redfish/v1/Systems"}]},
    }

    def bmc(handler, method, path, body):
        if login_ok(handler, method, path):
            return
        time.sleep(0.01)
        send(handler, 200 if path in docs else 404, docs.get(path, {}))

    server = peers(bmc, tls=certificate)
    _proc, took, check = health_bmc(bmc_url(server), timeout=3)

    gets = [p for m, p, _, _ in server.requests if m == "GET"]
    assert gets.count(chassis) == 1 and gets.count("/redfish/v1/Chassis") == 1, gets[:20]
    assert check["status"] == "ok" and took < 3 + 2


# --- Qdrant: `toolkit health --qdrant-url` ---------------------------------------------------------


def health_qdrant(url: str, run_timeout: int = 60):
    started = time.monotonic()
    proc = toolkit(
        "health",
        "--qdrant-url",
        url,
        *BMC_ONLY,
        "--skip",
        "bmc",
        "--json",
        env={"TOOLKIT_QDRANT_API_KEY": API_KEY},
        timeout=run_timeout,
    )
    took = time.monotonic() - started
    doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc, took, {c["name"]: c for c in doc.get("checks", [])}


@pytest.mark.parametrize("where", ["other-host", "plain-http"])
def test_qdrant_redirect_does_not_carry_the_api_key(peers, elsewhere, where):
    other = elsewhere[where]
    qdrant = peers(lambda h, m, path, b: send(h, 302, None, {"Location": other.url + path}))
    proc, _took, checks = health_qdrant(qdrant.url)

    assert other.requests == [] and not other.saw_secret()
    assert any(h.get("api-key") == API_KEY for _, _, h, _ in qdrant.requests)  # the named host did get it
    up = checks["qdrant.up"]
    assert (
        up["status"] == "unknown"
        and "redirected" in up["detail"]
        and API_KEY not in proc.stdout + proc.stderr
    )


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_dripping_qdrant_ends_within_its_timeout(peers, where):
    def qdrant(handler, method, path, body):
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n"
        if where == "body":
            handler.wfile.write(head)
            return drip(handler, b"{" + b" " * 3999)
        return drip(handler, head + b"{}")

    server = peers(qdrant)
    # the read itself ends at its deadline (not only the run that stops waiting for it)
    from toolkit.health.collectors.qdrant import collect
    from toolkit.health.collectors.qdrant_settings import settings

    box, started = {}, time.monotonic()
    reader = threading.Thread(
        target=lambda: box.update(result=collect(settings({}, server.url))), daemon=True
    )
    reader.start()
    reader.join(3 + 2)
    assert not reader.is_alive(), "the Qdrant read outlived its 3 s deadline"
    assert time.monotonic() - started < 3 + 2
    assert box["result"].checks[0].value == "timeout" and "within 3 s" in box["result"].checks[0].detail

    _proc, took, checks = health_qdrant(server.url)
    assert took < 3 + 2, f"took {took:.1f} s"  # qdrant.timeout: 3 s
    assert checks["qdrant.up"]["status"] == "unknown" and checks["qdrant.up"]["value"] == "timeout", checks


# --- Qdrant: `toolkit bench --qdrant-url … --workloads vectors` --------------------------------------


def bench_vectors(tmp_path, url: str, run_timeout: int = 120):
    started = time.monotonic()
    proc = toolkit(
        "bench",
        "--scale",
        "tiny",
        "--threads",
        "1",
        "--workloads",
        "vectors",
        "--qdrant-url",
        url,
        "--qdrant-api-key-env",
        "HOSTILE_QDRANT_KEY",
        "--results-dir",
        str(tmp_path / "results"),
        env={"HOSTILE_QDRANT_KEY": API_KEY, "TMPDIR": str(tmp_path)},
        timeout=run_timeout,
    )
    return proc, time.monotonic() - started


def test_a_dripping_qdrant_stops_the_bench_preflight_at_its_deadline(peers, tmp_path):
    from toolkit.bench.vector_store import PREFLIGHT_SECONDS

    server = peers(lambda h, m, p, b: drip(h, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}", 120))
    proc, took = bench_vectors(tmp_path, server.url)

    assert proc.returncode == 2, proc.stderr
    assert f"did not finish answering within {PREFLIGHT_SECONDS} s" in proc.stderr and "hint:" in proc.stderr
    assert "Traceback" not in proc.stderr and API_KEY not in proc.stderr
    assert took < PREFLIGHT_SECONDS + 15, f"took {took:.1f} s"  # + the interpreter's and torch's start


def test_a_redirecting_qdrant_gets_no_api_key_elsewhere_in_the_bench(peers, elsewhere, tmp_path):
    other = elsewhere["plain-http"]
    server = peers(lambda h, m, path, b: send(h, 307, None, {"Location": other.url + path}))
    proc, _took = bench_vectors(tmp_path, server.url)

    assert proc.returncode == 2 and "HTTP 307" in proc.stderr, proc.stderr
    assert other.requests == [] and API_KEY not in proc.stderr


# --- fleet: a host whose SSH port speaks something else ---------------------------------------------


def test_a_fleet_host_port_that_speaks_http_is_one_clear_line(peers, tmp_path):
    web = peers(lambda h, m, p, b: send(h, 200, {}))
    inventory = tmp_path / "inventory.yml"
    host = {"ansible_host": "127.0.0.1", "ansible_port": web.port}
    inventory.write_text(yaml.safe_dump({"all": {"children": {"gpu_nodes": {"hosts": {"web": host}}}}}))

    proc = toolkit("health", "-i", str(inventory), "--results-dir", str(tmp_path / "results"), timeout=120)

    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception (client)" not in proc.stderr, proc.stderr
    assert "does not answer as an SSH server" in proc.stdout + proc.stderr
