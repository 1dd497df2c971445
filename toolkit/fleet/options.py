"""The fleet options `toolkit bench` and `toolkit health` share (argparse only: the `--help` path)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser, default_timeout: str) -> None:
    group = parser.add_argument_group(
        "fleet (run on every host an inventory selects, over SSH, and gather the results)"
    )
    group.add_argument(
        "-i",
        "--inventory",
        metavar="FILE",
        help="Ansible inventory (YAML/INI/folder): run on its hosts over SSH with ansible_host, "
        "ansible_user, ansible_port and ansible_ssh_private_key_file",
    )
    group.add_argument(
        "--limit", metavar="PATTERN", help="hosts or groups to run on (Ansible pattern; default all)"
    )
    group.add_argument(
        "--forks", type=int, metavar="N", default=5, help="hosts run at once (default 5, as Ansible)"
    )
    group.add_argument(
        "--host-timeout",
        type=float,
        metavar="SECONDS",
        help=f"stop a host's run after this long; it is reported as timeout (default {default_timeout})",
    )
    group.add_argument(
        "--connect-timeout",
        type=float,
        metavar="SECONDS",
        default=10.0,
        help="SSH connect timeout (default 10)",
    )
    group.add_argument(
        "--vault-password-file", metavar="FILE", help="for an inventory that uses Ansible Vault"
    )
    group.add_argument(
        "--strict-host-keys",
        action="store_true",
        help="refuse hosts whose SSH key is not in known_hosts (default: a key that differs from known_hosts "
        "is refused, an unknown host is accepted for this run, as ssh's accept-new without saving)",
    )
