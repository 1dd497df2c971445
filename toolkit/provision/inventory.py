"""Inventories through Ansible's own inventory machinery: INI, YAML, group_vars and vault all work.

Only host and group names are resolved here (vault-encrypted variables are not decrypted).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import UsageError


@dataclass
class Inventory:
    path: Path
    hosts: list[str]
    groups: dict[str, list[str]]  # group -> hosts, 'all' and 'ungrouped' left out
    _manager: object
    _loader: object = None

    def variables(self, hosts: list[str], names: tuple[str, ...]) -> dict[str, dict]:
        """The named variables of each host as a play would see them: host and group variables (group_vars/
        and host_vars/ beside the inventory included) with their templates rendered, lookups too.
        Only the named ones are rendered: a vaulted secret the caller does not ask for stays closed."""
        from ansible.plugins.loader import init_plugin_loader
        from ansible.template import Templar
        from ansible.vars.manager import VariableManager

        init_plugin_loader()
        manager = VariableManager(loader=self._loader, inventory=self._manager)
        out: dict[str, dict] = {}
        for host in hosts:
            found = manager.get_vars(host=self._manager.get_host(host), include_hostvars=False)
            templar = Templar(loader=self._loader, variables=found)
            out[host] = {}
            for name in names:
                if name not in found:
                    continue
                try:
                    out[host][name] = _plain(templar.template(found[name]))
                except Exception as err:  # Ansible's template errors have many types
                    first = str(err).splitlines()[0] if str(err) else type(err).__name__
                    raise UsageError(
                        f"inventory variable {name} of {host} cannot be rendered: {first}",
                        hint="check the variable in the inventory, group_vars/ or host_vars/",
                    ) from None
        return out

    def resolve(self, target: str, limit: str | None = None) -> list[str]:
        """Hosts a TARGET (host, group, `all` or an Ansible pattern) and --limit select."""
        if not target.strip() or (limit is not None and not limit.strip()):
            # Ansible reads an empty pattern as every host: an unset shell variable must not be that
            raise UsageError(
                "empty host pattern", hint="name a host, a group or `all` (`all` selects every host)"
            )
        pattern = f"{target}:&{limit}" if limit else target
        # a plain name in a list ("gpu01,gpu99") that matches nothing is a typo, not a filter
        for name in re.split(r"[,:]", target):
            plain = name.lstrip("!&")
            if (
                plain
                and re.fullmatch(r"[A-Za-z0-9_.-]+", plain)
                and plain != "all"
                and plain not in self.groups
                and plain not in self.hosts
            ):
                raise UsageError(
                    f"{plain!r} is neither a host nor a group of {self.path}",
                    hint=f"groups: {', '.join(sorted(self.groups))}; hosts: {', '.join(sorted(self.hosts))}",
                )
        with contextlib.redirect_stderr(io.StringIO()):  # "could not match pattern": said below
            hosts = [h.name for h in self._manager.get_hosts(pattern=pattern)]
        if not hosts:
            known_groups = ", ".join(sorted(self.groups)) or "(none)"
            known_hosts = ", ".join(sorted(self.hosts)) or "(none)"
            what = f"{target!r}" + (f" limited by {limit!r}" if limit else "")
            raise UsageError(
                f"no host in {self.path} matches {what}",
                hint=f"groups: {known_groups}; hosts: {known_hosts}",
            )
        return hosts


def load_inventory(path: str | os.PathLike, vault_password_file: str | None = None) -> Inventory:
    path = Path(path)
    if not path.exists():
        raise UsageError(f"inventory {path} does not exist", hint="pass -i FILE (YAML or INI) or a folder")
    # A source no plugin can parse is an error naming the file, not a warning and an empty inventory.
    os.environ["ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED"] = "True"
    os.environ.setdefault("ANSIBLE_INVENTORY_UNPARSED_WARNING", "False")
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    warnings = io.StringIO()
    loader = DataLoader()
    if vault_password_file:  # an inventory encrypted with ansible-vault
        from ansible.parsing.vault import get_file_vault_secret

        if not Path(vault_password_file).is_file():
            raise UsageError(f"no vault password file {vault_password_file}", hint="check the path given")
        secret = get_file_vault_secret(filename=str(Path(vault_password_file).resolve()), loader=loader)
        secret.load()
        loader.set_vault_secrets([("default", secret)])
    try:
        with contextlib.redirect_stderr(warnings):  # Ansible's parser warnings: kept for the error
            manager = InventoryManager(loader=loader, sources=[str(path)])
    except AnsibleError as err:
        # "YAML parsing failed: ... Origin: FILE:LINE:COL" says where; the plugin-by-plugin story does not
        text = warnings.getvalue()
        cause = re.search(r"caused by >>>\s*\n\s*(.+)", text)
        origin = re.search(r"Origin: (\S+:\d+(?::\d+)?)", text)
        detail = cause.group(1).strip() if cause else str(err).strip().splitlines()[0]
        raise UsageError(
            f"cannot read inventory {origin.group(1) if origin else path}: {detail}",
            hint="check the file's YAML/INI syntax "
            "(ansible-inventory -i FILE --list shows the parser's view)",
        ) from None
    groups = {
        name: [h.name for h in group.get_hosts()]
        for name, group in manager.groups.items()
        if name not in ("all", "ungrouped")
    }
    return Inventory(path=path, hosts=sorted(manager.hosts), groups=groups, _manager=manager, _loader=loader)


def _plain(value):
    """Ansible 2.19 tags values with their origin: hand out plain str/int/bool/list/dict."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
