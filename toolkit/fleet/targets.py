"""The hosts of a fleet run and how to reach them, from the inventory's own variables.

Connection: `ansible_host`, `ansible_user`, `ansible_port`, `ansible_ssh_private_key_file` (as Ansible
reads them, group_vars/ and templates included); `ansible_connection: local` (or the implicit
localhost) runs on the controller itself, without SSH.
The toolkit on a node: `toolkit_path`, else `<health_report_venv>/bin/toolkit` (where the
`health_report` role installs it, /opt/toolkit/venv by default). Its results stay on the node in
`toolkit_results_dir` (default /var/lib/toolkit/results); its health settings are the role's
`health_report_config_path` (/etc/toolkit/health.yml).
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.errors import UsageError

DEFAULT_VENV = "/opt/toolkit/venv"
DEFAULT_RESULTS_DIR = "/var/lib/toolkit/results"
DEFAULT_HEALTH_CONFIG = "/etc/toolkit/health.yml"
VARIABLES = (
    "ansible_host",
    "ansible_user",
    "ansible_port",
    "ansible_ssh_private_key_file",
    "ansible_connection",
    "gpu_profile",
    "toolkit_path",
    "toolkit_results_dir",
    "health_report_venv",
    "health_report_config_path",
)


@dataclass(frozen=True)
class Target:
    name: str
    address: str
    user: str | None
    port: int | None
    key_file: str | None
    local: bool
    toolkit: str
    results_dir: str
    health_config: str
    gpu_profile: str | None

    @property
    def where(self) -> str:
        if self.local:
            return "local"
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{self.address}{port}"


def select(inventory_path: str, pattern: str, vault_password_file: str | None = None) -> list[Target]:
    """The hosts `pattern` (a host, group or Ansible pattern, as `--limit` takes) selects; exit 2 when
    the inventory is unreadable or selects nothing."""
    from toolkit.provision.inventory import load_inventory

    inventory = load_inventory(inventory_path, vault_password_file)
    names = inventory.resolve(pattern)
    found = inventory.variables(names, VARIABLES)
    return [_target(name, found[name]) for name in names]


def _target(name: str, v: dict) -> Target:
    port = v.get("ansible_port")
    if port not in (None, ""):
        try:
            port = int(port)
        except (TypeError, ValueError):
            raise UsageError(f"{name}: ansible_port {port!r} is not a number") from None
    local = v.get("ansible_connection") == "local"
    venv = str(v.get("health_report_venv") or DEFAULT_VENV).rstrip("/")
    return Target(
        name=name,
        address=str(v.get("ansible_host") or name),
        user=v.get("ansible_user") or None,
        port=port or None,
        key_file=v.get("ansible_ssh_private_key_file") or None,
        local=local,
        toolkit=str(v.get("toolkit_path") or f"{venv}/bin/toolkit"),
        results_dir=str(v.get("toolkit_results_dir") or DEFAULT_RESULTS_DIR),
        health_config=str(v.get("health_report_config_path") or DEFAULT_HEALTH_CONFIG),
        gpu_profile=v.get("gpu_profile") or None,
    )
