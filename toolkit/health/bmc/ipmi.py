"""IPMI readers behind one interface: pyghmi over LAN (default), ipmitool over LAN (fallback), and
ipmitool/FreeIPMI through the node's own `/dev/ipmi0` (in-band: no password needed).

Every reader returns a `BmcReading`; the whole read runs under one deadline (`target.timeout`, 5 s by
default) so a BMC that does not answer costs bounded time and the rest of the report still comes out.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

from toolkit.atomic import write_text_atomic
from toolkit.health.bmc.model import THRESHOLD_NAMES, BmcError, BmcReading, SelEntry, Sensor
from toolkit.health.bmc.target import BmcTarget
from toolkit.health.model import Status

# pyghmi's sensor type names -> our kinds
_PYGHMI_KINDS = {
    "Temperature": "temperature",
    "Fan": "fan",
    "Voltage": "voltage",
    "Power": "power",
    "Current": "current",
    "Power Supply": "psu",
}
# Get Sensor Thresholds (netfn 4, cmd 0x27): readable mask bit -> our threshold name
_THRESHOLD_BITS = (
    "lower_non_critical",
    "lower_critical",
    "lower_non_recoverable",
    "upper_non_critical",
    "upper_critical",
    "upper_non_recoverable",
)
SEL_LIMIT = 50  # newest entries kept from the event log


def _run_with_deadline(func, target: BmcTarget):
    """pyghmi retries on its own schedule; run it in a daemon thread and stop waiting at the deadline."""
    box: dict = {}

    def work():
        try:
            box["value"] = func()
        except BaseException as err:  # handed to the caller below
            box["error"] = err

    thread = threading.Thread(target=work, daemon=True, name="ipmi-read")
    thread.start()
    thread.join(target.timeout)
    if thread.is_alive():
        raise BmcError(f"no answer from {target.display} within {target.timeout:g} s", kind="timeout")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _classify_pyghmi_error(err: Exception, target: BmcTarget) -> BmcError:
    text = str(err) if str(err) not in ("", "None") else "no reply"
    low = text.lower()
    if "password" in low or "unauthorized" in low or "rakp" in low or "authentication" in low:
        return BmcError(f"authentication failed for {target.display} (wrong user or password)", kind="auth")
    if any(w in low for w in ("timeout", "no longer connected", "unable to establish", "no reply")):
        return BmcError(f"no answer from {target.display}: {text}", kind="unreachable")
    return BmcError(f"IPMI error from {target.display}: {text}", kind="protocol")


def read_pyghmi(target: BmcTarget) -> BmcReading:
    try:
        from pyghmi.ipmi import command as ipmi_command
    except ImportError as err:
        raise BmcError("pyghmi is not installed", kind="missing") from err

    def work() -> BmcReading:
        cmd = ipmi_command.Command(
            bmc=target.host, userid=target.username, password=target.password, port=target.port
        )
        cache = sdr_cache_dir()
        if cache:
            cmd.set_sdr_cachedir(str(cache))
        try:
            return _pyghmi_reading(cmd, target, cache)
        finally:
            with contextlib.suppress(Exception):
                cmd.ipmi_session.logout()

    try:
        return _run_with_deadline(work, target)
    except BmcError:
        raise
    except Exception as err:  # pyghmi raises IpmiException and plain exceptions alike
        raise _classify_pyghmi_error(err, target) from None


def sdr_cache_dir() -> Path | None:
    """Where pyghmi keeps SDR repositories between runs (keyed by the BMC's ids and the repository's
    modification time, so a changed SDR is read again). Reading the SDR is most of an IPMI sweep."""
    base = os.environ.get("TOOLKIT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "toolkit"
    )
    path = Path(base) / "ipmi-sdr"
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def _pyghmi_thresholds(cmd, entry) -> dict[str, float]:
    if not getattr(entry, "has_thresholds", False):
        return {}
    rsp = cmd.raw_command(netfn=4, command=0x27, rslun=entry.sensor_lun, data=(entry.sensor_number,))
    if "error" in rsp or len(rsp.get("data", b"")) < 7:
        return {}
    data = rsp["data"]
    found = {}
    for bit, name in enumerate(_THRESHOLD_BITS):
        if data[0] & (1 << bit):
            found[name] = round(entry.decode_value(cmd, data[1 + bit]), 3)
    return found


THRESHOLD_CACHE_SECONDS = 3600  # thresholds change only when an admin edits them on the BMC


def _threshold_cache(target: BmcTarget, folder: Path | None) -> tuple[Path | None, dict]:
    if folder is None:
        return None, {}
    path = folder / f"thresholds-{target.host}-{target.port}.json"
    try:
        doc = json.loads(path.read_text())
        if time.time() - doc["time"] < THRESHOLD_CACHE_SECONDS:
            return path, doc["values"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return path, {}


def _pyghmi_reading(cmd, target: BmcTarget, cache: Path | None) -> BmcReading:
    reading = BmcReading("ipmi", target.display)
    entries = {}
    cache_path, cached = _threshold_cache(target, cache)
    fresh = {}
    for reading_obj in cmd.get_sensor_data():
        if not entries:  # built by get_sensor_data's init_sdr
            entries = {e.sensor_name: e for e in cmd._sdr.sensors.values()}
        sensor = _sensor_from_pyghmi(reading_obj, entries.get(reading_obj.name), cmd, cached)
        fresh[sensor.name] = sensor.thresholds
        reading.sensors.append(sensor)
    if cache_path is not None and fresh != cached:
        with contextlib.suppress(OSError):
            write_text_atomic(cache_path, json.dumps({"time": time.time(), "values": fresh}), mode=0o600)
    reading.power_state = cmd.get_power().get("powerstate")
    events = list(cmd.get_event_log())[-SEL_LIMIT:]
    for ev in events:
        severity = Status.OK
        if not ev.get("deassertion"):
            sev = ev.get("severity") or 0
            severity = Status.CRITICAL if sev >= 2 else (Status.WARNING if sev == 1 else Status.OK)
        message = " ".join(
            str(x) for x in (ev.get("component_type"), ev.get("component"), ev.get("event")) if x
        )
        if ev.get("deassertion"):
            message += " (deasserted)"
        reading.sel.append(SelEntry(ev.get("timestamp"), message, severity))
    reading.info["reader"] = "pyghmi"
    return reading


def _sensor_from_pyghmi(r, entry, cmd, cached: dict) -> Sensor:
    kind = _PYGHMI_KINDS.get(r.type, "other")
    health = r.health or 0
    state = Status.CRITICAL if health >= 2 else (Status.WARNING if health == 1 else Status.OK)
    sensor = Sensor(r.name, kind, r.value, state, list(r.states), present=not r.unavailable)
    if kind == "psu":
        sensor.present = "Present" in r.states or any("presence" in s.lower() for s in r.states)
        sensor.failed = any("fail" in s.lower() for s in r.states)
    elif entry is not None and r.value is not None:
        hit = cached.get(r.name)
        sensor.thresholds = hit if hit is not None else _pyghmi_thresholds(cmd, entry)
    return sensor


# ---- ipmitool (LAN fallback and in-band) -------------------------------------------------------------

_IPMITOOL_KINDS = {
    "degrees C": "temperature",
    "RPM": "fan",
    "Volts": "voltage",
    "Watts": "power",
    "Amps": "current",
}
_IPMITOOL_COLUMNS = THRESHOLD_NAMES  # `ipmitool sensor` prints lnr lc lnc unc uc unr, the same order
_CRITICAL_WORDS = re.compile(r"fail|critical|non-recoverable|uncorrectable|fault|lost", re.I)


def ipmitool_lan_args(target: BmcTarget) -> tuple[list[str], dict]:
    """LAN arguments; the password travels in IPMI_PASSWORD (`-E`), never on the command line."""
    args = [
        "-I",
        "lanplus",
        "-C",
        "3",
        "-H",
        target.host,
        "-p",
        str(target.port),
        "-U",
        target.username,
        "-E",
        "-N",
        "1",
        "-R",
        "2",
    ]
    return args, {"IPMI_PASSWORD": target.password}


def read_ipmitool(
    interface_args: list[str], display: str, timeout: float, env: dict | None = None, protocol: str = "ipmi"
) -> BmcReading:
    tool = shutil.which("ipmitool")
    if tool is None:
        raise BmcError("ipmitool is not installed (apt install ipmitool)", kind="missing")
    deadline = time.monotonic() + timeout
    full_env = {**os.environ, **(env or {})}

    def run(*command: str, verbose: bool = False) -> str:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BmcError(f"no answer from {display} within {timeout:g} s", kind="timeout")
        try:
            proc = subprocess.run(
                [tool, *(["-v"] if verbose else []), *interface_args, *command],
                capture_output=True,
                text=True,
                timeout=left,
                env=full_env,
            )
        except subprocess.TimeoutExpired:
            raise BmcError(f"no answer from {display} within {timeout:g} s", kind="timeout") from None
        if proc.returncode != 0:
            message = (proc.stderr.strip().splitlines() or ["ipmitool failed"])[-1]
            low = proc.stderr.lower()
            # `-v` on the first call: ipmitool then says why a session failed (RAKP 2 errors = auth)
            if "unauthorized name" in low or "hmac is invalid" in low or "password" in low:
                raise BmcError(f"authentication failed for {display} (wrong user or password)", kind="auth")
            if any(
                w in low for w in ("unable to establish", "no response", "could not open", "capabilities")
            ):
                raise BmcError(f"no answer from {display}: {message}", kind="unreachable")
            raise BmcError(f"ipmitool error from {display}: {message}", kind="protocol")
        return proc.stdout

    reading = BmcReading(protocol, display)
    power = (run("power", "status", verbose=True).strip().lower().splitlines() or [""])[-1]
    reading.sensors = parse_ipmitool_sensor(run("sensor"))
    reading.power_state = "on" if power.endswith(" on") else ("off" if power.endswith(" off") else None)
    reading.sel = parse_ipmitool_sel(run("sel", "elist"))[-SEL_LIMIT:]
    reading.info["reader"] = "ipmitool"
    return reading


def _number(text: str) -> float | None:
    """A finite number, or None (`float()` also reads "nan" and "inf", which are no limit)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _reading(text: str):
    """A sensor's value column: a number, None for "na" (not present), else the text itself, which
    the model reports as no reading (`bmc.model.reading_of`) instead of dropping it as absent."""
    if text in ("na", ""):
        return None
    value = _number(text)
    return value if value is not None else text


def parse_ipmitool_sensor(text: str) -> list[Sensor]:
    """`ipmitool sensor`: name | value | unit | status | lnr | lc | lnc | unc | uc | unr."""
    sensors = []
    for line in text.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) < 4 or not cols[0]:
            continue
        name, value, unit, status = cols[:4]
        if unit == "discrete":
            sensor = Sensor(name, "psu" if "ps" in name.lower() else "other")
            bits = int(status, 16) >> 8 if status.startswith("0x") else 0
            if sensor.kind == "psu":
                sensor.present, sensor.failed = bool(bits & 0x01), bool(bits & 0x02)
            sensors.append(sensor)
            continue
        sensor = Sensor(name, _IPMITOOL_KINDS.get(unit, "other"), _reading(value))
        sensor.present = value != "na"
        sensor.thresholds = {
            k: v
            for k, raw in zip(_IPMITOOL_COLUMNS, cols[4:10], strict=False)
            if (v := _number(raw)) is not None
        }
        if status in ("cr", "nr"):
            sensor.state, sensor.states = Status.CRITICAL, [f"ipmitool status {status}"]
        elif status == "nc":
            sensor.state, sensor.states = Status.WARNING, ["ipmitool status nc"]
        sensors.append(sensor)
    return sensors


def parse_ipmitool_sel(text: str) -> list[SelEntry]:
    """`ipmitool sel elist`: id | date | time | sensor | event | direction (date/time may be Pre-Init)."""
    entries = []
    for line in text.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) < 5:
            continue
        if cols[1] == "Pre-Init":
            stamp, rest = None, cols[3:]
        else:
            stamp, rest = f"{cols[1]} {cols[2]}", cols[3:]
        message = " ".join(c for c in rest if c)
        asserted = not any(c == "Deasserted" for c in rest)
        severity = Status.CRITICAL if asserted and _CRITICAL_WORDS.search(message) else Status.OK
        entries.append(SelEntry(stamp, message, severity))
    return entries


# ---- choosing a reader -------------------------------------------------------------------------------

INBAND_DEVICES = ("/dev/ipmi0", "/dev/ipmi/0", "/dev/ipmidev/0")


def inband_available() -> bool:
    return any(os.path.exists(d) for d in INBAND_DEVICES)


def read_inband(timeout: float = 5.0) -> BmcReading:
    """The node's own BMC through the kernel IPMI driver (ipmi_si + ipmi_devintf): no password."""
    return read_ipmitool(["-I", "open"], "local /dev/ipmi0", timeout, protocol="ipmi-inband")


def read_ipmi(target: BmcTarget, tool: str = "auto") -> BmcReading:
    """pyghmi when installed (one session, no process per command), else ipmitool."""
    if tool in ("auto", "pyghmi"):
        try:
            return read_pyghmi(target)
        except BmcError as err:
            if err.kind != "missing" or tool == "pyghmi":
                raise
    args, env = ipmitool_lan_args(target)
    return read_ipmitool(args, target.display, target.timeout, env)
