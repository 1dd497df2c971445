"""`toolkit provision TARGET`: install and configure the GPU stack on hosts with Ansible.

Exit codes: 0 every host succeeded, 3 a host failed or was unreachable (the others still ran to
the end), 2 usage or environment error (unknown target, unreadable inventory, missing
ansible-playbook, a playbook that does not parse), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.errors import EXIT_OK, UsageError

if TYPE_CHECKING:
    from toolkit.provision.engine import PlaybookRun, RunResult

EXIT_HOSTS_FAILED = 3
CAPABILITIES = (
    "common",
    "grub",
    "nvidia_driver",
    "cuda_toolkit",
    "rocm",
    "docker",
    "nvidia_container_toolkit",
    "health_report",
    "qdrant",
    "llama_server",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="TARGET", help="host, group or `all` (any Ansible host pattern)")
    parser.add_argument(
        "-i",
        "--inventory",
        metavar="PATH",
        help="inventory file or folder (default: $TOOLKIT_INVENTORY or ./inventory)",
    )
    parser.add_argument(
        "--roles", metavar="A,B", help=f"only these roles, in this order ({', '.join(CAPABILITIES)})"
    )
    parser.add_argument("--tags", help="only tasks with these tags (e.g. docker_configure)")
    parser.add_argument("--skip-tags", help="skip tasks with these tags")
    parser.add_argument("--check", action="store_true", help="say what would change, change nothing")
    parser.add_argument("--diff", action="store_true", help="show the changes to files")
    parser.add_argument("--limit", help="further limit the hosts (Ansible pattern)")
    parser.add_argument(
        "-e",
        "--extra-vars",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a variable (repeatable; also JSON or @file, as ansible-playbook takes it)",
    )
    parser.add_argument(
        "--vault-password-file", metavar="FILE", help="decrypt Ansible Vault values with this file"
    )
    parser.add_argument("--forks", type=int, default=10, help="hosts worked on at once (default 10)")
    parser.add_argument(
        "--reboot",
        action="store_true",
        help="reboot the hosts a role marked (reboot-required) and wait for them",
    )
    parser.add_argument(
        "--keep-artifacts",
        type=int,
        default=20,
        metavar="N",
        help="runner artifact folders kept (default 20)",
    )
    parser.add_argument("--json", action="store_true", help="print the recap as JSON on stdout")


def _inventory_path(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    if os.environ.get("TOOLKIT_INVENTORY"):
        return Path(os.environ["TOOLKIT_INVENTORY"])
    return Path("inventory")


def _playbook(args, project: Path, state: Path) -> tuple[str, Path]:
    """(playbook, project folder): site.yml, or a generated playbook importing the capability playbooks
    of --roles in that order (each keeps its own group: docker on all GPU nodes, the NVIDIA roles on
    nvidia_nodes only)."""
    if not args.roles:
        return "site.yml", project
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    unknown = [r for r in roles if r not in CAPABILITIES]
    if unknown or not roles:
        raise UsageError(
            f"unknown role(s): {', '.join(unknown) or '(none given)'}",
            hint="roles: " + ", ".join(CAPABILITIES),
        )
    generated = state / "generated"
    generated.mkdir(parents=True, exist_ok=True)
    # written to the state folder, never into the checkout
    path = generated / f"roles-{os.getpid()}.yml"
    body = ["---"] + [
        f"- name: Role {r}\n  ansible.builtin.import_playbook: {project / (r + '.yml')}" for r in roles
    ]
    path.write_text("\n".join(body) + "\n")
    return str(path), project


def _preflight(args: argparse.Namespace) -> None:
    """What must hold before the inventory is read: sane arguments, ansible-playbook, ansible-core."""
    from toolkit.provision import engine

    if not args.target.strip():  # an unset shell variable: never "every host"
        raise UsageError(
            "TARGET is empty", hint="name a host, a group or `all` (`all` provisions every host)"
        )
    if args.limit is not None and not args.limit.strip():
        raise UsageError("--limit is empty", hint="name hosts or groups, or leave --limit out")
    if args.forks < 1:
        raise UsageError("--forks must be at least 1")
    if args.keep_artifacts < 1:
        raise UsageError("--keep-artifacts must be at least 1")
    engine.find_ansible_playbook()  # a clear error before anything else when Ansible is missing
    try:
        import ansible  # noqa: F401
    except ImportError:
        from toolkit.errors import MissingDependency

        raise MissingDependency("ansible-core is not installed", hint=engine.INSTALL_HINT) from None


def _run_with_grid(args: argparse.Namespace, run: PlaybookRun) -> RunResult:
    """The playbook run, with its live grid of hosts on stderr where someone watches."""
    from rich.live import Live

    from toolkit.console import err
    from toolkit.provision import engine
    from toolkit.provision.display import Grid

    grid = Grid(run.hosts)
    err.print(
        f"toolkit provision: {len(run.hosts)} host(s) ({', '.join(run.hosts)}), playbook {run.playbook}"
        + (" in check mode" if args.check else ""),
        highlight=False,
    )
    live = Live(
        grid.render(),
        console=err,
        refresh_per_second=4,
        transient=False,
        redirect_stdout=False,
        redirect_stderr=False,
    )

    def on_update(host, role, task, state):
        grid.update(host, role, task, state)
        live.update(grid.render())

    try:
        if err.is_terminal:  # the grid only where someone watches; logs get the recap
            live.start()
        return engine.run_playbook(run, on_update=on_update)
    finally:
        live.stop()
        if args.roles:
            Path(run.playbook).unlink(missing_ok=True)


def _check_applied(args: argparse.Namespace, hosts: list[str], result: RunResult) -> None:
    if result.error:
        raise UsageError(
            f"ansible-playbook could not run the playbook:\n{result.error}",
            hint=f"runner artifacts: {result.artifacts}",
        )
    untouched = [h for h in hosts if not any(result.stats.get(h, {}).values())]
    if untouched and not args.tags and not args.skip_tags:
        raise UsageError(
            f"no play applied to {', '.join(untouched)}: "
            "the playbooks target gpu_nodes, nvidia_nodes, amd_nodes, qdrant_nodes and llama_server_nodes",
            hint="put the hosts in those groups (see inventory/hosts.yml)",
        )


def _reboot(args: argparse.Namespace, run: PlaybookRun, result: RunResult) -> list[str]:
    """Reboot the hosts the run marked and wait for them (reboot.yml); the hosts rebooted. Their
    failures join the run's; the ones that came back no longer need a reboot."""
    from toolkit.provision import engine

    reboot = engine.run_playbook(
        engine.PlaybookRun(
            "reboot.yml",
            run.inventory,
            ":".join(result.reboot_required),
            result.reboot_required,
            extra_vars=args.extra_vars,
            vault_password_file=args.vault_password_file,
            forks=args.forks,
            keep_artifacts=args.keep_artifacts,
            project_dir=run.project_dir,
        )
    )
    if reboot.error:  # the reboot playbook never ran: no host counts as rebooted
        result.failures.append(engine.Failure("-", "reboot", "reboot.yml", reboot.error))
        reboot.stats = {h: {"failures": 1} for h in result.reboot_required}
    rebooted = [h for h in result.reboot_required if h not in reboot.failed_hosts]
    result.failures += reboot.failures
    for h in reboot.failed_hosts:
        result.stats[h]["failures"] = result.stats[h].get("failures", 0) + 1
    result.reboot_required = [h for h in result.reboot_required if h not in rebooted]
    return rebooted


def _print_recap(args: argparse.Namespace, result: RunResult, rebooted: list[str]) -> None:
    from toolkit.console import out
    from toolkit.provision.display import render_recap

    if args.json:
        json.dump(_as_json(result, args, rebooted), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    render_recap(result, out, args.check, show_changes=args.check or args.diff)
    if rebooted:
        out.print(f"Rebooted: {', '.join(rebooted)}")
    if result.reboot_required:
        out.print(
            f"[yellow]Reboot required[/] on {', '.join(result.reboot_required)} "
            "(toolkit provision ... --reboot does it)"
        )


def run(args: argparse.Namespace) -> int:
    from toolkit.console import err
    from toolkit.provision import engine
    from toolkit.provision.display import render_interrupted

    try:
        return _provision(args)
    except engine.PlaybookInterrupted as stop:
        render_interrupted(stop.progress, err)
        err.print(f"Runner artifacts: {stop.artifacts}", highlight=False)
        raise


def _provision(args: argparse.Namespace) -> int:
    from toolkit.console import err
    from toolkit.provision import engine
    from toolkit.provision.inventory import load_inventory

    _preflight(args)
    inventory = load_inventory(_inventory_path(args.inventory), args.vault_password_file)
    hosts = inventory.resolve(args.target, args.limit)
    project = engine.playbooks_dir()
    playbook, project = _playbook(args, project, engine.state_dir())
    playbook_run = engine.PlaybookRun(
        playbook,
        inventory.path,
        f"{args.target}:&{args.limit}" if args.limit else args.target,
        hosts,
        check=args.check,
        diff=args.diff,
        tags=args.tags,
        skip_tags=args.skip_tags,
        extra_vars=args.extra_vars,
        forks=args.forks,
        vault_password_file=args.vault_password_file,
        keep_artifacts=args.keep_artifacts,
        project_dir=project,
    )
    result = _run_with_grid(args, playbook_run)
    _check_applied(args, hosts, result)
    rebooted: list[str] = []
    if args.reboot and result.reboot_required and not args.check:
        rebooted = _reboot(args, playbook_run, result)
    _print_recap(args, result, rebooted)
    err.print(f"Runner artifacts: {result.artifacts}", highlight=False)
    return EXIT_HOSTS_FAILED if result.failed_hosts else EXIT_OK


def _as_json(result, args, rebooted) -> dict:
    return {
        "target": args.target,
        "check": args.check,
        "hosts": {h: result.stats.get(h, {}) for h in result.hosts},
        "failed_hosts": result.failed_hosts,
        "failures": [vars(f) for f in result.failures],
        "reboot_required": result.reboot_required,
        "rebooted": rebooted,
        "artifacts": str(result.artifacts),
        "changes": result.changes,
        "status": "ok" if not result.failed_hosts else "failed",
    }
