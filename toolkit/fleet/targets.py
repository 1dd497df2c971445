"""The hosts of a fleet run and how to reach them, from the inventory's own variables.

Connection: `ansible_host`, `ansible_user`, `ansible_port`, `ansible_ssh_private_key_file` (as Ansible
reads them, group_vars/ and templates included); `ansible_connection: local` (or the implicit
localhost) runs on the controller itself, without SSH. The route through a bastion comes from the ssh
options Ansible passes, `ansible_ssh_common_args` and `ansible_ssh_extra_args`: `-J HOP[,HOP]`,
`-o ProxyJump=...` or `-o ProxyCommand=...` (the other ssh options do not change where the connection
goes and are not applied); the same key logs in to every hop. `ansible_become` (method sudo) runs the
command through `sudo -n`, as `ansible_become_user` (root by default).
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
    "ansible_ssh_common_args",
    "ansible_ssh_extra_args",
    "ansible_become",
    "ansible_become_user",
    "ansible_become_method",
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
    jumps: tuple[tuple[str | None, str, int | None], ...] = ()  # (user, host, port) per hop, in order
    proxy_command: str | None = None  # with %h, %p and %r already filled in
    become_user: str | None = None  # run the command through `sudo -n -u USER`

    @property
    def where(self) -> str:
        if self.local:
            return "local"
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        via = f" via {self.jumps[-1][1]}" if self.jumps else " via ProxyCommand" if self.proxy_command else ""
        return f"{user}{self.address}{port}{via}"


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
    address = str(v.get("ansible_host") or name)
    return Target(
        name=name,
        address=address,
        user=v.get("ansible_user") or None,
        port=port or None,
        key_file=v.get("ansible_ssh_private_key_file") or None,
        local=local,
        toolkit=str(v.get("toolkit_path") or f"{venv}/bin/toolkit"),
        results_dir=str(v.get("toolkit_results_dir") or DEFAULT_RESULTS_DIR),
        health_config=str(v.get("health_report_config_path") or DEFAULT_HEALTH_CONFIG),
        gpu_profile=v.get("gpu_profile") or None,
        **_route(name, v, address, port or 22, v.get("ansible_user") or None),
        become_user=_become(name, v),
    )


def _ssh_options(name: str, v: dict) -> list[tuple[str, str]]:
    """(option, value) of the `-J` and `-o` options in the inventory's ssh arguments, ssh's spelling
    (`-o Key=Value`, `-o "Key Value"`, `-oKey=Value`, `-J hop`) all read."""
    import shlex

    words = []
    for key in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        try:
            words += shlex.split(str(v.get(key) or ""))
        except ValueError as err:
            raise UsageError(f"{name}: {key} cannot be read as ssh arguments ({err})") from None
    found, i = [], 0
    while i < len(words):
        word = words[i]
        if word in ("-o", "-J") and i + 1 < len(words):
            value, i = words[i + 1], i + 2
        elif word.startswith(("-o", "-J")) and len(word) > 2:
            value, i = word[2:], i + 1
        else:
            i += 1
            continue
        if word.startswith("-J"):
            found.append(("proxyjump", value))
            continue
        key, _, rest = value.replace("=", " ", 1).partition(" ")
        found.append((key.lower(), rest.strip()))
    return found


def _hop(text: str) -> tuple[str | None, str, int | None]:
    """[user@]host[:port] (or ssh://[user@]host[:port]) of one ProxyJump hop."""
    from urllib.parse import urlsplit

    parts = urlsplit(text if text.startswith("ssh://") else f"ssh://{text}")
    if not parts.hostname:
        raise ValueError(text)
    return parts.username, parts.hostname, parts.port


def _route(name: str, v: dict, address: str, port: int, user: str | None) -> dict:
    options = dict(_ssh_options(name, v))  # the last one wins, as Ansible appends extra_args after
    jump, command = options.get("proxyjump"), options.get("proxycommand")
    if command and command.lower() != "none":
        filled = command.replace("%h", address).replace("%p", str(port)).replace("%r", user or "")
        return {"proxy_command": filled.replace("%%", "%")}
    if not jump or jump.lower() == "none":
        return {}
    try:
        return {"jumps": tuple(_hop(h.strip()) for h in jump.split(","))}
    except ValueError:
        raise UsageError(
            f"{name}: ProxyJump {jump!r} is not [user@]host[:port]", hint="as ssh -J takes it"
        ) from None


def _become(name: str, v: dict) -> str | None:
    become = v.get("ansible_become")
    if isinstance(become, str):
        become = become.strip().lower() in ("1", "true", "yes", "on")
    if not become:
        return None
    method = str(v.get("ansible_become_method") or "sudo")
    if method != "sudo":
        raise UsageError(
            f"{name}: ansible_become_method {method} is not supported by fleet runs",
            hint="fleet runs become another user with sudo -n (passwordless sudo)",
        )
    return str(v.get("ansible_become_user") or "root")
