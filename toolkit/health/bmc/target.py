"""BMC targets (`ipmi://USER@HOST[:PORT]`, `redfish://USER@HOST[:PORT]`) and where passwords come from.

The password comes from `TOOLKIT_BMC_PASSWORD` or a password file (or the 0600 config file written by
the `health_report` role) — never from the command line, never printed (docs/REFERENCE.md, BMC settings).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from toolkit.errors import HealthError
from toolkit.health import secrets
from toolkit.inputs import SECRET_CAP, read_text

DEFAULT_PORTS = {"ipmi": 623, "redfish": 443}
# The whole BMC read (`--bmc-timeout`, `bmc.timeout`), seconds. A 56-sensor board read cold (no SDR
# cache) takes 12.2 s with ipmitool and 8.1 s with pyghmi at a BMC's latency (benchmarks/
# bmc_ipmi_deadline.py; docs/HEALTH.md, "IPMI on real boards"); 20 s leaves 1.6x the slower.
DEFAULT_TIMEOUT = 20.0


class BmcConfigError(HealthError):
    pass


@dataclass
class BmcTarget:
    protocol: str  # ipmi | redfish
    host: str
    port: int
    username: str
    password: str = field(default="", repr=False)
    insecure_tls: bool = False  # accept a self-signed Redfish certificate (said in the report)
    timeout: float = DEFAULT_TIMEOUT
    auth: str = "session"  # redfish: session (falls back to basic) | basic

    @property
    def display(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.protocol}://{self.username}@{host}:{self.port}"


def parse_target(url: str) -> BmcTarget:
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise BmcConfigError(
            f"unknown BMC URL scheme {parts.scheme or '(none)'!r}",
            hint="use ipmi://USER@HOST[:PORT] or redfish://USER@HOST[:PORT]",
        )
    if parts.password is not None:
        # Never echo the URL back: it holds the secret.
        raise BmcConfigError(
            "the BMC URL contains a password; a password on the command line is visible to every user",
            hint="put it in TOOLKIT_BMC_PASSWORD or a file given with --bmc-password-file",
        )
    if not parts.username or not parts.hostname:
        raise BmcConfigError(
            f"BMC URL {url!r} needs a user and a host",
            hint=f"for example {parts.scheme}://ADMIN@10.0.0.5",
        )
    try:
        port = parts.port
    except ValueError as err:
        raise BmcConfigError(f"bad port in BMC URL {url!r}: {err}", hint="a port from 1 to 65535") from None
    if port is None:
        port = DEFAULT_PORTS[parts.scheme]
    elif not 1 <= port <= 65535:
        raise BmcConfigError(
            f"bad port in BMC URL {url!r}: {port}",
            hint=f"a port from 1 to 65535, or none for the default ({DEFAULT_PORTS[parts.scheme]})",
        )
    return BmcTarget(parts.scheme, parts.hostname, port, parts.username)


def read_password(password_file: str | None = None, inline: str | None = None) -> str:
    """Password order: a password file, then TOOLKIT_BMC_PASSWORD, then the (0600) config file's value."""
    if password_file:
        password = read_text(
            Path(password_file),
            "the BMC password file",
            SECRET_CAP,
            BmcConfigError,
            hint="the file holds the password on its first line; check the path and its permissions",
        ).rstrip("\r\n")
    else:
        password = os.environ.get("TOOLKIT_BMC_PASSWORD") or inline or ""
    if not password:
        raise BmcConfigError(
            "no BMC password given",
            hint="set TOOLKIT_BMC_PASSWORD or use --bmc-password-file FILE (or bmc.password in a 0600 file)",
        )
    secrets.register(password)
    return password
