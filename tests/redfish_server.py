"""A small HTTPS Redfish service shaped like a Supermicro BMC, for tests against a real HTTP peer.

No installable package serves sessions, Power/PowerSubsystem, ThermalSubsystem and a SEL log service
(docs/TESTING.md §3), so this one does, in both Supermicro layouts: "gen13" (`Chassis/1/Thermal` and
`Power`) and "gen14" (`ThermalSubsystem`, `PowerSubsystem/PowerSupplies/<n>`, `Sensors`). Tests change
`BmcState` while the server runs; every answer is built from it at request time. The certificate is
generated at fixture time and never stored in the repository.

`BmcState(tree=load_mockup(folder))` serves a real BMC's captured tree instead (tests/fixtures/redfish/,
PROVENANCE.md there) as it is, with the same sessions and TLS; `page_size` pages long collections with
`Members@odata.nextLink` the way bmcweb pages log entries.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

V1 = "/redfish/v1"
SESSIONS = f"{V1}/SessionService/Sessions"
PUBLIC = {"/redfish", V1, f"{V1}/odata"}  # no credentials needed for these (Redfish spec)
# limits (LowerFatal, LowerCritical, LowerNonCritical, UpperNonCritical, UpperCritical, UpperFatal)
LIMITS = {
    "temperature": (None, None, None, 80.0, 85.0, 90.0),
    "fan": (300.0, 500.0, 700.0, 25300.0, 25400.0, 25500.0),
    "12V": (10.2, 10.5, 10.8, 13.2, 13.5, 13.8),
    "VBAT": (2.4, 2.6, 2.8, 3.4, 3.5, 3.6),
}
LEGACY_KEYS = ["LowerThresholdFatal", "LowerThresholdCritical", "LowerThresholdNonCritical"]
LEGACY_KEYS += ["UpperThresholdNonCritical", "UpperThresholdCritical", "UpperThresholdFatal"]
SENSOR_KEYS = ["LowerFatal", "LowerCritical", "LowerCaution", "UpperCaution", "UpperCritical", "UpperFatal"]
SEL = [
    {"Created": "2026-01-10T08:00:00+00:00", "Message": "Power Supply AC lost - Asserted", "Severity": "OK"},
    {
        "Created": "2026-01-10T08:00:05+00:00",
        "Message": "Power Supply AC lost - Deasserted",
        "Severity": "OK",
    },
]


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, ::1 and localhost; it is also its own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    addresses = [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    unused = ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement", "crl_sign")
    unused = dict.fromkeys((*unused, "encipher_only", "decipher_only"), False)
    usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, **unused)
    builder = x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
    builder = builder.serial_number(x509.random_serial_number()).not_valid_before(
        now - datetime.timedelta(hours=1)
    )
    for extension, critical in [
        (x509.SubjectAlternativeName([x509.DNSName("localhost"), *addresses]), False),
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (usage, True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
    ]:
        builder = builder.add_extension(extension, critical=critical)
    cert = builder.not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    cert_path, key_path = directory / "bmc-cert.pem", directory / "bmc-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    pkcs8 = serialization.PrivateFormat.PKCS8
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption()))
    return cert_path, key_path


class Request(NamedTuple):
    method: str
    path: str
    auth: str | None  # "session", "basic" or None


def _psus() -> dict:
    return {name: {"state": "Enabled", "health": "OK", "watts": 215.0} for name in ("PS1", "PS2")}


@dataclass
class BmcState:
    """What the BMC reports and how it behaves; tests change it while the server runs."""

    layout: str = "gen13"
    username: str = "ADMIN"
    password: str = "Bmc-Passw0rd-42"
    sessions_enabled: bool = True  # POST to Sessions works (else 404)
    sessions_advertised: bool = True  # the service root links the session service
    expand: bool = True  # gen14: $expand on the Sensors collection, advertised in the root
    delay: float = 0.0  # seconds before every answer
    power_state: str = "On"
    temperatures: dict = field(default_factory=lambda: {"CPU1 Temp": 45.0, "System Temp": 31.0})
    fans: dict = field(default_factory=lambda: {"FAN1": 5600.0, "FAN2": 5400.0, "FAN3": None})  # None: absent
    voltages: dict = field(default_factory=lambda: {"12V": 12.1, "VBAT": 3.1})
    psus: dict = field(default_factory=_psus)
    sel: list = field(default_factory=lambda: [dict(e) for e in SEL])
    sessions: dict = field(default_factory=dict)  # token -> session id
    deleted_sessions: list = field(default_factory=list)
    requests: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    tree: dict | None = None  # a captured tree (load_mockup) served as it is, in place of the shaped one
    page_size: int | None = None  # collections longer than this are paged with Members@odata.nextLink


def _status(value, limits) -> dict:
    """Health as a BMC judges it from its own limits."""
    if value is None:
        return {"State": "Absent"}
    _, lc, lnc, unc, uc, _ = limits
    health = "OK"
    if (unc is not None and value >= unc) or (lnc is not None and value <= lnc):
        health = "Warning"
    if (uc is not None and value >= uc) or (lc is not None and value <= lc):
        health = "Critical"
    return {"State": "Enabled", "Health": health}


def _link(path: str) -> dict:
    return {"@odata.id": path}


class _Tree(dict):
    def add(self, path: str, **props) -> dict:
        self[path] = {"@odata.id": path, **props}
        return self[path]

    def collection(self, path: str, members: list[str], **props) -> dict:
        doc = self.add(path, Members=[_link(m) for m in members], **props)
        doc["Members@odata.count"] = len(members)
        return doc


def load_mockup(directory: Path) -> dict[str, dict]:
    """A captured Redfish tree kept as DMTF mockups are (`<path below /redfish/v1>/index.json`),
    path -> document; the service root is `index.json` at the top."""
    tree = {}
    for file in sorted(directory.rglob("index.json")):
        rel = file.parent.relative_to(directory).as_posix()
        tree[V1 if rel == "." else f"{V1}/{rel}"] = json.loads(file.read_text())
    return tree


def _page(doc: dict, query: str, size: int) -> dict:
    """One page of a collection as bmcweb serves its log entries: `$skip`, and a next link while
    members remain."""
    members = doc.get("Members")
    if not isinstance(members, list) or len(members) <= size:
        return doc
    skip = int(dict(q.split("=", 1) for q in query.split("&") if "=" in q).get("$skip", "0"))
    doc = dict(doc, Members=members[skip : skip + size])
    doc["Members@odata.count"] = len(members)
    if skip + size < len(members):
        doc["Members@odata.nextLink"] = f"{doc['@odata.id'].rstrip('/')}?$skip={skip + size}"
    return doc


def resources(state: BmcState) -> dict[str, dict]:
    """The whole tree for the current state, path -> document."""
    if state.tree is not None:
        return {p.rstrip("/"): doc for p, doc in state.tree.items()} | {"/redfish": {"v1": f"{V1}/"}}
    tree, gen14 = _Tree(), state.layout == "gen14"
    root = tree.add(V1, Id="RootService", RedfishVersion="1.17.0" if gen14 else "1.11.0", Vendor="Supermicro")
    root |= {"Oem": {"Supermicro": {}}, "Chassis": _link(f"{V1}/Chassis"), "Systems": _link(f"{V1}/Systems")}
    root["Managers"] = _link(f"{V1}/Managers")
    if state.sessions_advertised:
        root |= {"SessionService": _link(f"{V1}/SessionService"), "Links": {"Sessions": _link(SESSIONS)}}
    if gen14 and state.expand:
        root["ProtocolFeaturesSupported"] = {
            "ExpandQuery": {"ExpandAll": True, "Levels": True, "MaxLevels": 1}
        }
    tree["/redfish"] = {"v1": f"{V1}/"}
    tree.add(f"{V1}/odata", value=[{"name": "Service", "kind": "Singleton", "url": f"{V1}/"}])
    tree[f"{V1}/odata"]["@odata.context"] = f"{V1}/$metadata"
    tree.add(f"{V1}/SessionService", Sessions=_link(SESSIONS))
    tree.collection(SESSIONS, [f"{SESSIONS}/{sid}" for sid in state.sessions.values()])
    tree.collection(f"{V1}/Chassis", [f"{V1}/Chassis/1"])
    chassis = tree.add(f"{V1}/Chassis/1", Id="1", Name="Computer System Chassis")
    (_gen14 if gen14 else _gen13)(state, tree, chassis)
    system = f"{V1}/Systems/1"
    tree.collection(f"{V1}/Systems", [system])
    tree.add(system, Id="1", PowerState=state.power_state, LogServices=_link(f"{system}/LogServices"))
    log = f"{system}/LogServices/Log1"
    tree.collection(f"{system}/LogServices", [log])
    tree.add(log, Id="Log1", Name="Log Service", Description="System Event Log", LogEntryType="SEL")
    tree[log]["Entries"] = _link(f"{log}/Entries")
    entries = [
        {"@odata.id": f"{log}/Entries/{n}", "Id": str(n), "EntryType": "SEL", **e}
        for n, e in enumerate(state.sel, 1)
    ]
    tree.add(f"{log}/Entries", Members=entries)
    tree.collection(f"{V1}/Managers", [f"{V1}/Managers/1"])
    tree.add(f"{V1}/Managers/1", Id="1", ManagerType="BMC")
    return tree


def _legacy(name: str, limits: tuple, value, member: str, key: str) -> dict:
    doc = {"@odata.id": member, "MemberId": member.rsplit("/", 1)[-1], "Name": name, key: value}
    doc |= {k: v for k, v in zip(LEGACY_KEYS, limits, strict=True) if v is not None}
    return doc | {"Status": _status(value, limits)}


def _gen13(state: BmcState, tree: _Tree, chassis: dict) -> None:
    thermal, power = f"{chassis['@odata.id']}/Thermal", f"{chassis['@odata.id']}/Power"
    chassis |= {"Thermal": _link(thermal), "Power": _link(power)}
    temps = [
        _legacy(n, LIMITS["temperature"], v, f"{thermal}#/Temperatures/{i}", "ReadingCelsius")
        for i, (n, v) in enumerate(state.temperatures.items())
    ]
    fans = [
        _legacy(n, LIMITS["fan"], v, f"{thermal}#/Fans/{i}", "Reading") | {"ReadingUnits": "RPM"}
        for i, (n, v) in enumerate(state.fans.items())
    ]
    tree.add(thermal, Temperatures=temps, Fans=fans)
    volts = [
        _legacy(n, LIMITS[n], v, f"{power}#/Voltages/{i}", "ReadingVolts")
        for i, (n, v) in enumerate(state.voltages.items())
    ]
    psus = []
    for i, (name, p) in enumerate(state.psus.items()):
        status = {"State": p["state"], "Health": p["health"]}
        psus.append(
            {"@odata.id": f"{power}#/PowerSupplies/{i}", "MemberId": str(i), "Name": name, "Status": status}
        )
        psus[-1] |= {"PowerInputWatts": p["watts"], "LastPowerOutputWatts": p["watts"] * 0.92}
    total = sum(p["watts"] for p in state.psus.values())
    control = [{"Name": "System Power Control", "PowerConsumedWatts": total}]
    tree.add(power, Voltages=volts, PowerSupplies=psus, PowerControl=control)


def _gen14(state: BmcState, tree: _Tree, chassis: dict) -> None:
    base = chassis["@odata.id"]
    thermal, power, sensors = f"{base}/ThermalSubsystem", f"{base}/PowerSubsystem", f"{base}/Sensors"
    chassis |= {"ThermalSubsystem": _link(thermal), "PowerSubsystem": _link(power), "Sensors": _link(sensors)}
    tree.add(thermal, ThermalMetrics=_link(f"{thermal}/ThermalMetrics"), Fans=_link(f"{thermal}/Fans"))

    def sensor(name: str, limits: tuple, value, reading_type: str, units: str) -> str:
        path = f"{sensors}/{name.replace(' ', '')}"
        limit = {k: {"Reading": v} for k, v in zip(SENSOR_KEYS, limits, strict=True) if v is not None}
        tree.add(path, Id=path.rsplit("/", 1)[-1], Name=name, ReadingType=reading_type, Reading=value)
        tree[path] |= {"ReadingUnits": units, "Thresholds": limit, "Status": _status(value, limits)}
        return path

    metrics = []
    for name, value in state.temperatures.items():
        source = sensor(name, LIMITS["temperature"], value, "Temperature", "Cel")
        metrics.append({"DataSourceUri": source, "DeviceName": name, "Reading": value})
    tree.add(f"{thermal}/ThermalMetrics", TemperatureReadingsCelsius=metrics)
    for name, volts in state.voltages.items():
        sensor(name, LIMITS[name], volts, "Voltage", "V")
    for name, rpm in state.fans.items():
        fan = tree.add(f"{thermal}/Fans/{name}", Id=name, Name=name, Status=_status(rpm, LIMITS["fan"]))
        if rpm is not None:
            source = sensor(name, LIMITS["fan"], rpm, "Rotational", "RPM")
            fan["SpeedPercent"] = {"DataSourceUri": source, "Reading": round(rpm / 120), "SpeedRPM": rpm}
    tree.collection(f"{thermal}/Fans", [f"{thermal}/Fans/{name}" for name in state.fans])
    members = [path for path in tree if path.startswith(f"{sensors}/")]
    tree.collection(sensors, members, _expanded=[tree[path] for path in members])
    tree.add(power, PowerSupplies=_link(f"{power}/PowerSupplies"))
    supplies = [f"{power}/PowerSupplies/{n}" for n in range(1, len(state.psus) + 1)]
    tree.collection(f"{power}/PowerSupplies", supplies)
    for path, (name, psu) in zip(supplies, state.psus.items(), strict=True):
        status = {"State": psu["state"], "Health": psu["health"]}
        tree.add(path, Id=path[-1], Name=name, Status=status, Metrics=_link(f"{path}/Metrics"))
        tree.add(f"{path}/Metrics", InputPowerWatts={"Reading": psu["watts"]})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5  # an idle keep-alive connection ends its thread
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid a 40 ms stall each
    server: _TlsServer

    def log_message(self, format, *args):  # quiet test output
        pass

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_DELETE(self):
        self._serve("DELETE")

    def do_PATCH(self):
        self._serve("PATCH")

    def _serve(self, method: str) -> None:
        state = self.server.state
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = urlsplit(self.path)
        path, auth = parts.path.rstrip("/") or "/", self._auth(state)
        with state.lock:
            state.requests.append(Request(method, path, auth))
        time.sleep(state.delay)
        if method == "POST" and path == SESSIONS:
            return self._login(state, body)
        if path not in PUBLIC and auth is None:
            return self._send(401, {"error": {"code": "Base.1.0.NoValidSession"}})
        if method == "DELETE" and path.startswith(SESSIONS + "/"):
            return self._logout(state, path)
        with state.lock:
            doc = dict(resources(state).get(path) or {}) if method == "GET" else None
        if not doc:
            return self._send(
                404 if method == "GET" else 405, {"error": {"code": "Base.1.0.ResourceMissingAtURI"}}
            )
        expanded = doc.pop("_expanded", None)
        if expanded is not None and state.expand and "$expand" in parts.query:
            doc["Members"] = expanded
        if state.page_size:
            doc = _page(doc, parts.query, state.page_size)
        return self._send(200, doc)

    def _auth(self, state: BmcState) -> str | None:
        if self.headers.get("X-Auth-Token") in state.sessions:
            return "session"
        scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
        if (
            scheme.lower() == "basic"
            and base64.b64decode(value + "==") == f"{state.username}:{state.password}".encode()
        ):
            return "basic"
        return None

    def _login(self, state: BmcState, body: bytes) -> None:
        if not state.sessions_enabled:
            return self._send(404, {"error": {"code": "Base.1.0.ResourceMissingAtURI"}})
        creds = json.loads(body or b"{}")
        if (creds.get("UserName"), creds.get("Password")) != (state.username, state.password):
            return self._send(401, {"error": {"code": "Base.1.0.NoValidSession"}})
        with state.lock:
            token, sid = uuid.uuid4().hex, str(len(state.deleted_sessions) + len(state.sessions) + 1)
            state.sessions[token] = sid
        location = f"{SESSIONS}/{sid}"
        doc = {"@odata.id": location, "@odata.type": "#Session.v1_7_0.Session", "Id": sid, "Name": "Session"}
        doc["UserName"] = state.username
        return self._send(201, doc, {"X-Auth-Token": token, "Location": location})

    def _logout(self, state: BmcState, path: str) -> None:
        with state.lock:
            token = next((t for t, sid in state.sessions.items() if path == f"{SESSIONS}/{sid}"), None)
            if token is None:
                return self._send(404, {"error": {"code": "Base.1.0.ResourceMissingAtURI"}})
            state.deleted_sessions.append(state.sessions.pop(token))
        return self._send(204, None)

    def _send(self, code: int, doc: dict | None, headers: dict | None = None) -> None:
        payload = json.dumps(doc).encode() if doc is not None else b""
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if code == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="Redfish"')
        if code in (200, 405):
            self.send_header("Allow", "GET, HEAD" if code == 200 or self.path != SESSIONS else "GET, POST")
        self.send_header("OData-Version", "4.0")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _TlsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, context: ssl.SSLContext, state: BmcState):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.context, self.state = context, state

    def finish_request(self, request, client_address):
        # The TLS handshake runs in the connection's own thread: a stalled client blocks no other.
        request.settimeout(5)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # a client that refused our certificate, as the TLS tests expect
        with tls:
            self.RequestHandlerClass(tls, client_address, self)

    def handle_error(self, request, client_address):
        pass  # clients that hang up mid-request (the timeout tests) are expected


class RedfishServer:
    """`with RedfishServer(state, cert, key) as bmc:` serves HTTPS on `bmc.host`:`bmc.port`."""

    def __init__(self, state: BmcState, cert: Path, key: Path, host: str = "127.0.0.1"):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.state, self.host = state, host
        self.httpd = _TlsServer((host, 0), context, state)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> RedfishServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def paths(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.state.requests if method in (None, r.method)]
