"""Read a BMC over Redfish: sensors, power supplies, chassis power and the event log (SEL).

Only the service root's path is fixed; everything else is found by following links, because vendors
and generations differ. Supermicro serves `Chassis/<id>/Thermal` and `Power` up to generation 13, and
`ThermalSubsystem`, `PowerSubsystem` and `Sensors` from generation 14; both layouts are read. Where a
chassis has both, the legacy resources win: one request each instead of one per fan, sensor and power
supply, and BMCs answer slowly.
"""

from __future__ import annotations

import os
import ssl
import warnings
from collections.abc import Iterator
from urllib.parse import urlsplit

import requests
import urllib3

from toolkit.health import secrets
from toolkit.health.bmc.model import THRESHOLD_NAMES, BmcError, BmcReading, SelEntry, Sensor
from toolkit.health.bmc.target import BmcTarget
from toolkit.health.model import Status
from toolkit.peer import Answer, Peer, PeerError

ROOT = "/redfish/v1"
DEFAULT_SESSIONS = "/redfish/v1/SessionService/Sessions"
MISSING = {404, 405, 501}  # a resource (or a session service) this BMC does not have
HEALTH = {"OK": Status.OK, "Warning": Status.WARNING, "Critical": Status.CRITICAL}
# (Thermal/Power property level, Sensor `Thresholds` level, THRESHOLD_NAMES suffix)
LEVELS = [("NonCritical", "Caution", "non_critical"), ("Critical", "Critical", "critical")]
LEVELS += [("Fatal", "Fatal", "non_recoverable")]
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
        return self.get(_link(doc, key))

    def members(self, path: str | None) -> list[dict]:
        collection = self.get(path) or {}
        links = [link for m in collection.get("Members") or [] if isinstance(m, dict) and (link := _link(m))]
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
            advertised = _link(root.get("Links") or {}, "Sessions")
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
        self.session_path = _path(location) if isinstance(location, str) else None
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
    layouts = [_read_chassis(client, root, c, reading) for c in client.members(_link(root, "Chassis"))]
    systems = client.members(_link(root, "Systems"))
    reading.power_state = next(
        (POWER_STATES[s["PowerState"]] for s in systems if s.get("PowerState") in POWER_STATES), None
    )
    sel = _read_sel(client, systems)
    if sel is None:
        sel = _read_sel(client, client.members(_link(root, "Managers")))
    reading.sel = sel
    reading.info = {
        "vendor": root.get("Vendor") or next(iter(root.get("Oem") or {}), None),
        "redfish_version": root.get("RedfishVersion"),
        "layout": next((layout for layout in layouts if layout), None),
        "tls_verified": client.verify is not False,
        "auth": client.auth,
    }
    if client.partial:
        reading.info["partial"] = "some sensor details skipped to stay within the time limit"
    return reading


def _read_chassis(client: _Client, root: dict, chassis: dict, reading: BmcReading) -> str | None:
    layout, found, sensors = _read_thermal(client, root, chassis)
    found += _read_power(client, chassis, sensors)
    names = {s.name for s in reading.sensors}
    for sensor in found:
        if sensor.name in names:  # a second chassis with the same sensor names
            sensor.name = f"{sensor.name} ({chassis.get('Id') or _link(chassis)})"
        names.add(sensor.name)
        reading.sensors.append(sensor)
    return layout


def _read_thermal(client: _Client, root: dict, chassis: dict) -> tuple[str | None, list[Sensor], dict]:
    if (thermal := client.get_link(chassis, "Thermal")) is not None:
        found = [_sensor(t, "temperature", t.get("ReadingCelsius")) for t in thermal.get("Temperatures", [])]
        return "thermal", found + [_legacy_fan(f) for f in thermal.get("Fans", [])], {}
    if (subsystem := client.get_link(chassis, "ThermalSubsystem")) is not None:
        sensors = _expanded_sensors(client, root, chassis)
        return "thermal_subsystem", _thermal_subsystem(client, subsystem, sensors), sensors
    return None, [], {}


def _read_power(client: _Client, chassis: dict, sensors: dict[str, dict]) -> list[Sensor]:
    if (power := client.get_link(chassis, "Power")) is not None:
        found = [_sensor(v, "voltage", v.get("ReadingVolts")) for v in power.get("Voltages", [])]
        found += [_psu(p, p.get("PowerInputWatts")) for p in power.get("PowerSupplies", [])]
        for control in power.get("PowerControl", []):
            if _number(control.get("PowerConsumedWatts")) is not None:
                name = control.get("Name") or "Total Power"
                found.append(_sensor(control, "power", control["PowerConsumedWatts"], name=name))
        return found
    found = [
        _sensor(s, "voltage", s.get("Reading")) for s in sensors.values() if s.get("ReadingType") == "Voltage"
    ]
    for psu in client.members(_link(client.get_link(chassis, "PowerSubsystem") or {}, "PowerSupplies")):
        metrics = (client.get_link(psu, "Metrics") if client.spare() else None) or {}
        found.append(_psu(psu, (metrics.get("InputPowerWatts") or {}).get("Reading")))
    return found


def _expanded_sensors(client: _Client, root: dict, chassis: dict) -> dict[str, dict]:
    """The chassis' Sensors collection in one request, where the BMC can expand it; else none."""
    expand = (root.get("ProtocolFeaturesSupported") or {}).get("ExpandQuery") or {}
    mark = "." if expand.get("NoLinks") else "*" if expand.get("ExpandAll") else None
    path = _link(chassis, "Sensors")
    if not (path and mark):
        return {}
    collection = client.get(f"{path}?$expand={mark}" + ("($levels=1)" if expand.get("Levels") else "")) or {}
    return {_link(m): m for m in collection.get("Members", []) if "Reading" in m}


def _thermal_subsystem(client: _Client, subsystem: dict, sensors: dict[str, dict]) -> list[Sensor]:
    def source(excerpt: dict) -> dict:  # the Sensor resource behind an excerpt: its limits and health
        path = _path(excerpt.get("DataSourceUri") or "")
        if path and path not in sensors and client.spare():
            sensors[path] = client.get(path) or {}
        return sensors.get(path) or {}

    found = []
    for excerpt in (client.get_link(subsystem, "ThermalMetrics") or {}).get("TemperatureReadingsCelsius", []):
        doc = source(excerpt)
        name = doc.get("Name") or excerpt.get("DeviceName") or _path(excerpt.get("DataSourceUri") or "?")
        found.append(_sensor(doc, "temperature", excerpt.get("Reading"), name=name.rsplit("/", 1)[-1]))
    for fan in client.members(_link(subsystem, "Fans")):
        speed = fan.get("SpeedPercent") or {}
        doc, rpm = source(speed), speed.get("SpeedRPM")
        if doc.get("ReadingUnits") == "RPM":
            found.append(
                _sensor(doc, "fan", rpm if rpm is not None else doc.get("Reading"), fan, name=_name(fan))
            )
        elif rpm is not None:  # the data source is a percent sensor: its limits are not in RPM
            found.append(_sensor(fan, "fan", rpm, doc, thresholds={}))
        else:
            found.append(_duty_fan(_name(fan), speed.get("Reading"), _thresholds(doc), fan, doc))
    return found


def _legacy_fan(doc: dict) -> Sensor:
    name = doc.get("Name") or doc.get("FanName") or str(doc.get("MemberId", "fan"))
    if doc.get("ReadingUnits", "RPM") == "RPM":
        return _sensor(doc, "fan", doc.get("Reading"), name=name)
    return _duty_fan(name, doc.get("Reading"), _thresholds(doc), doc)


def _duty_fan(name: str, percent, thresholds: dict, *docs: dict) -> Sensor:
    """A fan known only by its duty cycle: not an RPM figure, so it stays out of the RPM metric."""
    if _number(percent) is None:  # no reading at all: an empty fan header
        return _sensor(docs[0], "fan", None, *docs[1:], name=name, thresholds=thresholds)
    sensor = _sensor(docs[0], "other", percent, *docs[1:], name=f"{name} duty", thresholds=thresholds)
    if sensor.present and percent <= 0:
        sensor.state, sensor.states = Status.CRITICAL, ["fan stopped (0 %)"]
    return sensor


def _psu(doc: dict, watts) -> Sensor:
    sensor = _sensor(doc, "psu", None, thresholds={})
    status = doc.get("Status") or {}
    health, offline = status.get("Health"), status.get("State") in ("UnavailableOffline", "Disabled")
    sensor.failed = health == "Critical" or (offline and health not in (None, "OK"))
    sensor.power_watts = _number(watts) if sensor.present else None
    return sensor


def _sensor(doc: dict, kind: str, value, *more: dict, name: str | None = None, thresholds=None) -> Sensor:
    """A sensor named after and limited by `doc`, judged by the worst Status.Health of `doc` and `more`
    (the BMC's own verdict); any Status.State "Absent" means not present."""
    sensor = Sensor(name or _name(doc), kind, value)  # the model turns NaN or text into "no reading"
    sensor.thresholds = _thresholds(doc) if thresholds is None else thresholds
    for resource in (doc, *more):
        status = resource.get("Status") or {}
        level = HEALTH.get(status.get("Health"), Status.OK)
        if level is not Status.OK:
            sensor.states.append(f"BMC reports health {status['Health']}")
            sensor.state = level if level.severity > sensor.state.severity else sensor.state
        sensor.present &= status.get("State") != "Absent"
    return sensor


def _thresholds(doc: dict) -> dict[str, float]:
    """Limits in either style: `UpperThresholdCritical: 85` (Thermal, Power) or
    `Thresholds: {UpperCritical: {Reading: 85}}` (Sensor resources)."""
    limits = doc.get("Thresholds") or {}
    found = {}
    for side in ("Upper", "Lower"):
        for legacy, current, suffix in LEVELS:
            value = doc.get(f"{side}Threshold{legacy}")
            if value is None:
                value = (limits.get(f"{side}{current}") or {}).get("Reading")
            found[f"{side.lower()}_{suffix}"] = value
    return {name: float(found[name]) for name in THRESHOLD_NAMES if _number(found[name]) is not None}


def _read_sel(client: _Client, owners: list[dict]) -> list[SelEntry] | None:
    for owner in owners:
        for service in client.members(_link(owner, "LogServices")):
            entries = client.get_link(service, "Entries") if _is_sel(service) else None
            if entries is not None:
                members = sorted(entries.get("Members", []), key=lambda e: str(e.get("Created") or ""))
                return [_sel_entry(e) for e in members]
    return None


def _is_sel(service: dict) -> bool:
    words = " ".join(str(service.get(k, "")) for k in ("Id", "Name", "Description")).upper()
    return service.get("LogEntryType") == "SEL" or "SEL" in words.split() or "SYSTEM EVENT" in words


def _sel_entry(entry: dict) -> SelEntry:
    message = str(entry.get("Message") or entry.get("MessageId") or "")
    return SelEntry(entry.get("Created"), message, HEALTH.get(entry.get("Severity"), Status.OK))


def _name(doc: dict) -> str:
    return str(doc.get("Name") or doc.get("MemberId") or doc.get("Id") or "?")


def _link(doc: dict, key: str | None = None) -> str | None:
    """The path of `doc[key]` (or of doc itself) without host and fragment: requests go only to the target."""
    ref = doc.get(key) if key else doc
    uri = ref.get("@odata.id") if isinstance(ref, dict) else None
    return _path(uri) if isinstance(uri, str) and uri else None


def _path(uri: str) -> str:
    parts = urlsplit(uri)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


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
