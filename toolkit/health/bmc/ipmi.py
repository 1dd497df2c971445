"""IPMI readers behind one interface: pyghmi over LAN (default), ipmitool over LAN (fallback), and
ipmitool/FreeIPMI through the node's own `/dev/ipmi0` (in-band: no password needed).

Every reader returns a `BmcReading`; the whole read runs under one deadline (`target.timeout`,
`target.DEFAULT_TIMEOUT` by default) so a BMC that does not answer costs bounded time and the rest
of the report still comes out.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from toolkit.health.bmc.ipmi_pyghmi import SEL_LIMIT, pyghmi_reading
from toolkit.health.bmc.ipmi_text import merge_sdr, parse_ipmitool_sel, parse_ipmitool_sensor, parse_sdr_elist
from toolkit.health.bmc.ipmi_time import parse_clock
from toolkit.health.bmc.model import BmcError, BmcReading, unique_names
from toolkit.health.bmc.target import DEFAULT_TIMEOUT, BmcTarget

__all__ = ["parse_ipmitool_sel", "parse_ipmitool_sensor", "read_inband", "read_ipmi", "read_ipmitool"]


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
            return pyghmi_reading(cmd, target, cache)
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


# ---- ipmitool (LAN fallback and in-band) -------------------------------------------------------------


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


SDR_CACHE_SECONDS = 24 * 3600  # a BMC's SDR changes with its firmware or hardware, not between runs
# ipmitool prints times in the C library's locale forms; the C locale and UTC make them one form,
# and make the SEL's times and the BMC's clock (`sel time get`) comparable
_IPMITOOL_ENV = {"LC_ALL": "C", "TZ": "UTC0"}


class _Ipmitool:
    """One ipmitool command line after another, all under one deadline."""

    def __init__(self, interface_args: list[str], display: str, timeout: float, env: dict | None):
        tool = shutil.which("ipmitool")
        if tool is None:
            raise BmcError("ipmitool is not installed (apt install ipmitool)", kind="missing")
        self.tool, self.args, self.display, self.timeout = tool, interface_args, display, timeout
        self.deadline = time.monotonic() + timeout
        self.env = {**os.environ, **(env or {}), **_IPMITOOL_ENV}

    def run(self, *command: str, verbose: bool = False, sdr: Path | None = None) -> str:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise BmcError(f"no answer from {self.display} within {self.timeout:g} s", kind="timeout")
        extra = (["-v"] if verbose else []) + (["-S", str(sdr)] if sdr else [])
        try:
            proc = subprocess.run(
                [self.tool, *extra, *self.args, *command],
                capture_output=True,
                text=True,
                timeout=left,
                env=self.env,
            )
        except subprocess.TimeoutExpired:
            raise BmcError(
                f"no answer from {self.display} within {self.timeout:g} s", kind="timeout"
            ) from None
        if proc.returncode != 0:
            raise self._error(proc.stderr)
        return proc.stdout

    def _error(self, stderr: str) -> BmcError:
        message = (stderr.strip().splitlines() or ["ipmitool failed"])[-1]
        low = stderr.lower()
        # `-v` on the first call: ipmitool then says why a session failed (RAKP 2 errors = auth)
        if "unauthorized name" in low or "hmac is invalid" in low or "password" in low:
            return BmcError(f"authentication failed for {self.display} (wrong user or password)", kind="auth")
        if any(w in low for w in ("unable to establish", "no response", "could not open", "capabilities")):
            return BmcError(f"no answer from {self.display}: {message}", kind="unreachable")
        return BmcError(f"ipmitool error from {self.display}: {message}", kind="protocol")

    def sdr_cache(self, name: str) -> Path | None:
        """The BMC's SDR repository in a file (`ipmitool sdr dump`), read again once a day; later
        commands read it with `-S` instead of fetching every record from the BMC."""
        folder = sdr_cache_dir()
        if folder is None:
            return None
        path = folder / name
        with contextlib.suppress(OSError):
            if time.time() - path.stat().st_mtime < SDR_CACHE_SECONDS and path.stat().st_size > 0:
                return path
        part = path.with_name(f".{path.name}.{os.getpid()}")
        try:
            self.run("sdr", "dump", str(part))
            if part.stat().st_size > 0:
                os.chmod(part, 0o600)
                os.replace(part, path)
                return path
        except (OSError, BmcError):
            pass
        with contextlib.suppress(OSError):
            part.unlink()
        return None


def read_ipmitool(
    interface_args: list[str],
    display: str,
    timeout: float,
    env: dict | None = None,
    protocol: str = "ipmi",
    cache_name: str | None = None,
) -> BmcReading:
    """Power state, sensors (with thresholds), discrete states and the SEL with the BMC's clock. The
    optional parts (`sdr elist`, `sel time get`) that fail or run out of time leave the rest."""
    tool = _Ipmitool(interface_args, display, timeout, env)
    reading = BmcReading(protocol, display)
    power = (tool.run("power", "status", verbose=True).strip().lower().splitlines() or [""])[-1]
    reading.power_state = "on" if power.endswith(" on") else ("off" if power.endswith(" off") else None)
    sdr = tool.sdr_cache(cache_name) if cache_name else None
    try:
        text = tool.run("sensor", sdr=sdr)
    except BmcError as err:
        if sdr is None or err.kind == "timeout":
            raise
        with contextlib.suppress(OSError):
            sdr.unlink()  # a cache ipmitool could not use: read the SDR from the BMC
        sdr, text = None, tool.run("sensor")
    reading.sensors = parse_ipmitool_sensor(text)
    reading.sel = parse_ipmitool_sel(tool.run("sel", "elist", sdr=sdr))[-SEL_LIMIT:]
    missing = []
    try:
        merge_sdr(reading.sensors, parse_sdr_elist(tool.run("sdr", "elist", sdr=sdr)))
    except BmcError as err:
        missing.append(f"sdr elist: {err}")
    try:
        reading.clock = _utc(parse_clock(tool.run("sel", "time", "get")))
    except BmcError as err:
        missing.append(f"sel time get: {err}")
    for entry in reading.sel:
        entry.when = _utc(entry.when)
    unique_names(reading.sensors)
    reading.info["reader"] = "ipmitool"
    reading.info["sdr_cache"] = "used" if sdr else "none"
    if missing:
        reading.info["incomplete"] = missing
    return reading


def _utc(when: dt.datetime | None) -> dt.datetime | None:
    """ipmitool ran with TZ=UTC0: a time without a zone is UTC."""
    return when.replace(tzinfo=dt.UTC) if when is not None and when.tzinfo is None else when


# ---- choosing a reader -------------------------------------------------------------------------------

INBAND_DEVICES = ("/dev/ipmi0", "/dev/ipmi/0", "/dev/ipmidev/0")


def inband_available() -> bool:
    return any(os.path.exists(d) for d in INBAND_DEVICES)


def read_inband(timeout: float = DEFAULT_TIMEOUT) -> BmcReading:
    """The node's own BMC through the kernel IPMI driver (ipmi_si + ipmi_devintf): no password."""
    return read_ipmitool(
        ["-I", "open"], "local /dev/ipmi0", timeout, protocol="ipmi-inband", cache_name="sdr-local.bin"
    )


def read_ipmi(target: BmcTarget, tool: str = "auto") -> BmcReading:
    """pyghmi when installed (one session, no process per command), else ipmitool."""
    if tool in ("auto", "pyghmi"):
        try:
            return read_pyghmi(target)
        except BmcError as err:
            if err.kind != "missing" or tool == "pyghmi":
                raise
    args, env = ipmitool_lan_args(target)
    cache = f"sdr-{target.host}-{target.port}.bin"
    return read_ipmitool(args, target.display, target.timeout, env, cache_name=cache)
