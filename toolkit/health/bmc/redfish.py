"""Read a BMC over Redfish: sensors, power supplies, chassis power and the event logs.

Only the service root's path is fixed; everything else is found by following links, because vendors
and generations differ. This module is the HTTP side (sessions, TLS, the deadline, the link walk);
redfish_sensors.py reads a chassis in either layout (Supermicro serves `Thermal` and `Power` up to
generation 13, `ThermalSubsystem`, `PowerSubsystem` and `Sensors` from generation 14), and
redfish_logs.py reads every event log of the Systems and Managers.
"""

from __future__ import annotations

import os
import ssl
import warnings
from collections import Counter
from collections.abc import Iterator

import requests
import urllib3

from toolkit.health import secrets
from toolkit.health.bmc.model import BmcError, BmcReading, Sensor
from toolkit.health.bmc.redfish_links import link_of, path_of
from toolkit.health.bmc.redfish_logs import bmc_clock, read_logs
from toolkit.health.bmc.redfish_sensors import read_chassis
from toolkit.health.bmc.target import BmcTarget
from toolkit.peer import Answer, Peer, PeerError

ROOT = "/redfish/v1"
DEFAULT_SESSIONS = "/redfish/v1/SessionService/Sessions"
MISSING = {404, 405, 501}  # a resource (or a session service) this BMC does not have
MAX_RESOURCES = 256  # resources one read fetches at most (a real BMC's tree needs a few dozen)
MAX_MEMBERS = 64  # members read from one collection
SPARE_SHARE = 0.3  # optional look-ups stop when less than this share of the deadline is left
LOGOUT_GRACE = 0.5  # seconds past the deadline a logout may take (BMCs have few session slots)
POWER_STATES = {"On": "on", "PoweringOff": "on", "Off": "off", "PoweringOn": "off"}
INSECURE_HINT = (
    "use --bmc-insecure to accept a self-signed BMC certificate, "
    "or point TOOLKIT_BMC_CA_BUNDLE to the CA that signed it"
)


def read_redfish(target: BmcTarget) -> BmcReading:
    """Read one BMC. Raises BmcError (kind auth, unreachable, timeout, tls or protocol)."""
    with warnings.catch_warnings():
        if target.insecure_tls:  # asked for; the report says tls_verified: false
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
        client = _Client(target)
        try:
            return _read(client)
        finally:
            client.close()


class _Client:
    """One HTTP session to the BMC under the peer policy (toolkit/peer.py, docs/PEERS.md): all requests
    share one deadline of target.timeout (`--bmc-timeout`), redirects leave neither the password nor the
    session token at another origin, answers are capped, and the link walk fetches each resource once and
    at most MAX_RESOURCES of them, so neither cycles nor huge trees stretch the read."""

    def __init__(self, target: BmcTarget):
        self.target = target
        host = f"[{target.host}]" if ":" in target.host else target.host
        verify: bool | str = False
        if not target.insecure_tls:
            verify = os.environ.get("TOOLKIT_BMC_CA_BUNDLE") or True
        self.verify = verify
        self.peer = Peer(
            f"https://{host}:{target.port}",
            target.timeout,
            name=target.display,
            verify=verify,
            headers={"Accept": "application/json", "OData-Version": "4.0"},
        )
        self.http = self.peer.http
        self.budget = target.timeout
        self.auth = "none"
        self.basic: tuple[str, str] | None = None
        self.session_path: str | None = None
        self.partial = False  # optional look-ups skipped to stay within the deadline or MAX_RESOURCES
        self.fetched: dict[str, dict] = {}  # path -> document: each resource is read once (cycles)

    def spare(self) -> bool:
        """Whether an optional request still fits, leaving time for power state and SEL."""
        self.partial |= self.peer.left() <= SPARE_SHARE * self.budget
        return not self.partial

    def request(self, method: str, path: str, final: bool = False, **kwargs) -> Answer:
        who = self.target.display
        if self.basic:
            kwargs["auth"] = self.basic
        try:  # logging out is worth a moment past the deadline: BMCs have few session slots
            return self.peer.request(method, path, grace=LOGOUT_GRACE if final else 0.0, **kwargs)
        except PeerError as err:
            raise BmcError(
                secrets.redact(str(err)), kind="timeout" if err.kind == "timeout" else "protocol"
            ) from None
        except requests.exceptions.SSLError as err:
            cause = list(_chain(err))[-1]
            if isinstance(cause, ssl.SSLCertVerificationError):
                text = f"TLS certificate of {who} not trusted ({cause.verify_message}): {INSECURE_HINT}"
            else:  # e.g. a plain-HTTP port, or no protocol version in common
                why = getattr(cause, "reason", None) or cause
                text = f"TLS handshake with {who} failed ({why}); is this the BMC's HTTPS port?"
            raise BmcError(secrets.redact(text), kind="tls") from None
        except requests.exceptions.Timeout:
            raise BmcError(f"{who} did not answer within {self.budget:g} s", kind="timeout") from None
        except requests.exceptions.ConnectionError as err:
            why = secrets.redact(str(list(_chain(err))[-1]).rsplit(": ", 1)[-1])
            raise BmcError(f"cannot connect to {who}: {why}", kind="unreachable") from None
        except requests.exceptions.RequestException as err:
            raise BmcError(f"request to {who} failed: {type(err).__name__}") from None

    def check(self, response: Answer, path: str) -> None:
        code = response.status_code
        if code in (401, 403):
            raise BmcError(f"authentication failed for {self.target.display} (HTTP {code})", kind="auth")
        if code >= 400:
            raise BmcError(f"{self.target.display} answered HTTP {code} for {path}")

    def get(self, path: str | None) -> dict | None:
        """A resource, or None when the BMC does not have it."""
        if not path:
            return None
        if path in self.fetched:
            return self.fetched[path]
        if len(self.fetched) >= MAX_RESOURCES:
            self.partial = True
            return None
        response = self.request("GET", path)
        if response.status_code in MISSING:
            return None
        self.check(response, path)
        doc = _json(response)
        if doc is None:
            raise BmcError(f"{self.target.display} did not answer JSON for {path}")
        self.fetched[path] = doc
        return doc

    def get_link(self, doc: dict, key: str) -> dict | None:
        return self.get(link_of(doc, key))

    def members(self, path: str | None) -> list[dict]:
        collection = self.get(path) or {}
        links = [
            link for m in collection.get("Members") or [] if isinstance(m, dict) and (link := link_of(m))
        ]
        unique = [link for link in dict.fromkeys(links) if link != path]  # a collection listing itself
        if len(unique) > MAX_MEMBERS:
            self.partial, unique = True, unique[:MAX_MEMBERS]
        return [doc for link in unique if (doc := self.get(link))]

    def service_root(self) -> dict:
        if self.target.auth == "basic":
            self.use_basic()
        try:
            root = self.get(ROOT)
        except BmcError as err:  # a few BMCs want credentials even for the service root
            if err.kind != "auth" or self.auth != "none":
                raise
            self.login(DEFAULT_SESSIONS)
            root = self.get(ROOT)
        if root is None:
            raise BmcError(f"{self.target.display} has no Redfish service at {ROOT}")
        if self.auth == "none":
            advertised = link_of(root.get("Links") or {}, "Sessions")
            self.login(advertised or (DEFAULT_SESSIONS if "SessionService" in root else None))
        return root

    def login(self, sessions_path: str | None) -> None:
        """Open a session; a service without one (sushy-emulator, old firmware) gets HTTP Basic."""
        if not sessions_path:
            return self.use_basic()
        body = {"UserName": self.target.username, "Password": self.target.password}
        response = self.request("POST", sessions_path, json=body)
        if response.status_code in MISSING:
            return self.use_basic()
        self.check(response, sessions_path)
        token = response.headers.get("X-Auth-Token")
        if not token:
            raise BmcError(f"{self.target.display} opened a session without an X-Auth-Token")
        self.http.headers["X-Auth-Token"] = token  # the peer sends it to the BMC's own origin only
        self.auth = "session"
        location = response.headers.get("Location") or (_json(response) or {}).get("@odata.id")
        self.session_path = path_of(location) if isinstance(location, str) else None
        return None

    def use_basic(self) -> None:
        self.basic = (self.target.username, self.target.password)
        self.auth = "basic"

    def close(self) -> None:
        try:
            if self.session_path:
                self.request("DELETE", self.session_path, final=True)
        except BmcError:
            pass  # the BMC expires the session itself; the reading is what matters
        finally:
            self.peer.close()


def _read(client: _Client) -> BmcReading:
    root = client.service_root()
    reading = BmcReading("redfish", client.target.display)
    layouts, placed = [], []
    for chassis in client.members(link_of(root, "Chassis")):
        layout, found = read_chassis(client, root, chassis)
        layouts.append(layout)
        placed += [(s, str(chassis.get("Id") or link_of(chassis) or "?")) for s in found]
    reading.sensors = _placed(placed)
    systems = client.members(link_of(root, "Systems"))
    managers = client.members(link_of(root, "Managers"))
    reading.power_state = next(
        (POWER_STATES[s["PowerState"]] for s in systems if s.get("PowerState") in POWER_STATES), None
    )
    reading.sel, logs = read_logs(client, systems + managers)
    reading.clock = bmc_clock(managers)
    reading.info = {
        "vendor": root.get("Vendor") or next(iter(root.get("Oem") or {}), None),
        "redfish_version": root.get("RedfishVersion"),
        "layout": next((layout for layout in layouts if layout), None),
        "tls_verified": client.verify is not False,
        "auth": client.auth,
        "logs_read": [
            f"{r['log']} ({r['entries']} entries" + ("; partial: time limit)" if r.get("partial") else ")")
            for r in logs
            if r["read"]
        ],
        "logs_not_read": [f"{r['log']}: {r['why']}" for r in logs if not r["read"]],
        "events_by_severity": dict(Counter(e.severity_label or "none" for e in reading.sel or [])),
    }
    if client.partial:
        reading.info["partial"] = "some sensor details skipped to stay within the time limit"
    return reading


def _placed(found: list[tuple[Sensor, str]]) -> list[Sensor]:
    """The sensors, where several chassis have one of the same name told apart by their chassis too
    (Cray's two mezzanine cards carry the same 20 sensors)."""
    chassis_of: dict[str, set[str]] = {}
    for sensor, place in found:
        chassis_of.setdefault(sensor.name, set()).add(place)
    per_place = Counter((sensor.name, place) for sensor, place in found)
    for sensor, place in found:
        if len(chassis_of[sensor.name]) > 1:  # the chassis alone where it is enough
            alone = per_place[(sensor.name, place)] == 1 or not sensor.where
            sensor.where = place if alone else f"{place} {sensor.where}"
    return [sensor for sensor, _ in found]


def _json(response: Answer) -> dict | None:
    try:
        doc = response.json()
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _chain(err: BaseException) -> Iterator[BaseException]:
    """The errors requests and urllib3 wrap around the socket's or ssl's own, outermost first."""
    seen: BaseException | None = err
    for _ in range(10):
        if seen is None:
            return
        yield seen
        inner = getattr(seen, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in seen.args if isinstance(a, BaseException)), None)
        seen = inner
