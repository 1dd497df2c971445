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

import os
import stat
from pathlib import Path

from toolkit.errors import HealthError
from toolkit.health import secrets

KNOWN_KEYS = {
    "expect_gpus",
    "thresholds",
    "bmc",
    "docker",
    "system",
    "qdrant",
    "report_dir",
    "keep_days",
    "prom_file",
    "sel_window_hours",
}


class ConfigError(HealthError):
    pass


def load(path: str | None) -> dict:
    if not path:
        return {}
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
        mode = file.stat().st_mode
    except OSError as err:
        raise ConfigError(
            f"cannot read the health configuration {file}: {err.strerror}",
            hint="check the path given with --config",
        ) from None
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{file}{where} is not valid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{file} must hold a mapping of settings, not {type(data).__name__}")
    unknown = sorted(set(data) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(
            f"{file}: unknown setting(s) {', '.join(unknown)}",
            hint=f"known settings: {', '.join(sorted(KNOWN_KEYS))}",
        )
    held = []
    for section, key, what in (
        ("bmc", "password", "a BMC password"),
        ("qdrant", "api_key", "a Qdrant API key"),
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
