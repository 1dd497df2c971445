"""The health configuration file (`/etc/toolkit/health.yml`, written by the `health_report` role).

It may hold the BMC password or the Qdrant API key, so when it does it must not be readable by group or
others (mode 0600): a readable file is refused, like ssh refuses a readable private key.

    expect_gpus: 8
    thresholds: {temperature_warning_c: 83, temperature_critical_c: 90}
    bmc: {url: "ipmi://ADMIN@10.0.0.5", password: "...", insecure_tls: false, timeout: 5,
          inband: auto}            # auto: use /dev/ipmi0 when there is no url
    docker: {containers: [qdrant], require_nvidia_runtime: true}
    system: {data_dirs: [/, /var/lib/docker], disk_warning_percent: 85, kernel_cmdline: [iommu=pt]}
    qdrant: {url: "http://127.0.0.1:6333", api_key: "...", required: true, timeout: 3,
             storage_path: /var/lib/qdrant/storage}
    report_dir: /var/lib/toolkit/health
    keep_days: 14
    prom_file: /var/lib/prometheus/node-exporter/toolkit.prom
"""

from __future__ import annotations

import difflib
import math
import os
import stat
from pathlib import Path

from toolkit.errors import HealthError
from toolkit.health import secrets
from toolkit.inputs import SETTINGS_CAP, read_text

NUMBER, TEXT, BOOL, TEXTS = "a number", "a string", "true or false", "a list of strings"
SECRET = "a string (quote it)"  # never echoed back
# every setting and what it must hold; a section's own keys likewise (qdrant checks its own section)
SCHEMA: dict = {
    "expect_gpus": "a whole number of GPUs",
    "thresholds": {"temperature_warning_c": NUMBER, "temperature_critical_c": NUMBER},
    "bmc": {
        "url": TEXT,
        "password": SECRET,
        "password_file": TEXT,
        "insecure_tls": BOOL,
        "timeout": "a positive number of seconds",
        "inband": "true, false or auto",
        "auth": "session or basic",
        "tool": "auto, pyghmi or ipmitool",
    },
    "docker": {
        "url": TEXT,
        "containers": TEXTS,
        "require_nvidia_runtime": BOOL,
        "required": BOOL,
        "timeout": "a positive number of seconds",
    },
    "system": {
        "data_dirs": TEXTS,
        "disk_warning_percent": NUMBER,
        "disk_critical_percent": NUMBER,
        "memory_warning_available_percent": NUMBER,
        "memory_critical_available_percent": NUMBER,
        "load_warning_per_cpu": NUMBER,
        "load_critical_per_cpu": NUMBER,
        "kernel_cmdline": "a string or a list of strings",
        "grub_dropin": TEXT,
        "proc_cmdline": TEXT,
        "reboot_required_file": TEXT,
    },
    "qdrant": None,  # toolkit/health/collectors/qdrant_settings.py checks its section
    "serving": None,  # toolkit/health/collectors/serving_settings.py checks its section
    "report_dir": TEXT,
    "keep_days": "a number of days, at least 0",
    "prom_file": TEXT,
    "sel_window_hours": "a positive number of hours",
}
KNOWN_KEYS = set(SCHEMA)


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _texts(v) -> bool:
    return isinstance(v, list) and all(isinstance(i, str) for i in v)


# what each expectation accepts (a key set to null is left at its default)
ACCEPTS = {
    NUMBER: _number,
    TEXT: lambda v: isinstance(v, str),
    SECRET: lambda v: isinstance(v, str | int) and not isinstance(v, bool),
    BOOL: lambda v: isinstance(v, bool),
    TEXTS: _texts,
    "a whole number of GPUs": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "a positive number of seconds": lambda v: _number(v) and v > 0,
    "a positive number of hours": lambda v: _number(v) and v > 0,
    "a number of days, at least 0": lambda v: _number(v) and v >= 0,
    "true, false or auto": lambda v: v in (True, False, "auto"),
    "session or basic": lambda v: v in ("session", "basic"),
    "auto, pyghmi or ipmitool": lambda v: v in ("auto", "pyghmi", "ipmitool"),
    "a string or a list of strings": lambda v: isinstance(v, str) or _texts(v),
}


def _unknown(file, where: str, keys, known) -> None:
    unknown = sorted(str(k) for k in set(keys) - set(known))
    if not unknown:
        return
    close = difflib.get_close_matches(unknown[0], [str(k) for k in known], n=1)
    raise ConfigError(
        f"{file}: unknown setting(s) {', '.join(where + k for k in unknown)}",
        hint=(f"did you mean {where}{close[0]}? " if close else "")
        + f"known settings{' of ' + where.rstrip('.') if where else ''}: {', '.join(sorted(known))}",
    )


def _check_value(file, key: str, value, expected: str) -> None:
    if value is not None and not ACCEPTS[expected](value):
        shown = "that" if expected == SECRET else repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ConfigError(
            f"{file}: {key}: must be {expected}, not {shown}",
            hint=f"fix {key} in {file} (or remove it for the default)",
        )


def check(data: dict, file) -> None:
    """Refuse unknown settings (top level and inside sections) and values of the wrong type."""
    _unknown(file, "", data, SCHEMA)
    for key, expected in SCHEMA.items():
        value = data.get(key)
        if expected is None or value is None:
            continue
        if isinstance(expected, str):
            _check_value(file, key, value, expected)
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{file}: {key}: must be a mapping of settings, not {value!r}")
        _unknown(file, f"{key}.", value, expected)
        for name, want in expected.items():
            _check_value(file, f"{key}.{name}", value.get(name), want)


class ConfigError(HealthError):
    ref = "settings"  # toolkit/errors.py, the stable references


def load(path: str | None) -> dict:
    if not path:
        return {}
    file = Path(path)
    text = read_text(
        file, "the health configuration", SETTINGS_CAP, ConfigError, hint="check the path given with --config"
    )
    try:
        mode = file.stat().st_mode
    except OSError as err:
        raise ConfigError(f"cannot read the health configuration {file}: {err.strerror}") from None
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{file}{where} is not valid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{file} must hold a mapping of settings, not {type(data).__name__}")
    check(data, file)
    held = []
    for section, key, what in (
        ("bmc", "password", "a BMC password"),
        ("qdrant", "api_key", "a Qdrant API key"),
        ("serving", "api_key", "a model server's API key"),
    ):
        part = data.get(section)
        if isinstance(part, dict) and part.get(key):
            secrets.register(str(part[key]))
            held.append(what)
    if (
        held
        and mode & (stat.S_IRWXG | stat.S_IRWXO)
        and os.environ.get("TOOLKIT_ALLOW_READABLE_CONFIG") != "1"
    ):
        raise ConfigError(
            f"{file} holds {' and '.join(held)} but is readable by others (mode {stat.S_IMODE(mode):04o})",
            hint=f"chmod 600 {file}",
        )
    return data
