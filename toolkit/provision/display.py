"""Live hosts x roles grid while a playbook runs, and the recap when it ends."""

from __future__ import annotations

from toolkit.provision.engine import RunResult

STATE_ORDER = {"": 0, "skipped": 1, "ok": 2, "running": 3, "changed": 4, "failed": 5, "unreachable": 6}
STYLE = {
    "ok": "green",
    "changed": "yellow",
    "failed": "red bold",
    "unreachable": "magenta bold",
    "skipped": "dim",
    "running": "cyan",
}


class Grid:
    """Worst state per (host, role) so far; `running` gives way to the result of the task."""

    def __init__(self, hosts: list[str]):
        self.hosts = list(hosts)
        self.roles: list[str] = []
        self.cells: dict[tuple[str, str], str] = {}
        self.current: dict[str, str] = {}

    def update(self, host: str, role: str, task: str, state: str) -> None:
        if host not in self.hosts:
            self.hosts.append(host)
        if role not in self.roles:
            self.roles.append(role)
        key = (host, role)
        previous = self.cells.get(key, "")
        if state == "running":
            self.current[host] = f"{role}: {task}"
            if previous in ("", "skipped", "ok"):
                self.cells[key] = "running"
            return
        if previous == "running":
            previous = ""
        self.cells[key] = state if STATE_ORDER[state] >= STATE_ORDER[previous] else previous

    def render(self):
        from rich.table import Table

        table = Table(title="toolkit provision", title_justify="left")
        table.add_column("host")
        for role in self.roles:
            table.add_column(role)
        table.add_column("now", overflow="ellipsis", no_wrap=True, max_width=50)
        for host in self.hosts:
            cells = []
            for role in self.roles:
                state = self.cells.get((host, role), "")
                cells.append(f"[{STYLE.get(state, '')}]{state}[/]" if state else "")
            table.add_row(host, *cells, self.current.get(host, ""))
        return table


def render_recap(result: RunResult, console, check: bool, show_changes: bool = False) -> None:
    from rich.table import Table

    title = "Recap" + (" (check mode: nothing was changed)" if check else "")
    table = Table(title=title, title_justify="left")
    for col in ("host", "ok", "changed", "failed", "unreachable", "skipped", "reboot"):
        table.add_column(col, justify="left" if col in ("host", "reboot") else "right")
    for host in result.hosts:
        s = result.stats.get(host, {})
        unreachable = s.get("dark", 0)
        table.add_row(
            host,
            str(s.get("ok", 0)),
            f"[yellow]{s.get('changed', 0)}[/]" if s.get("changed") else "0",
            f"[red]{s.get('failures', 0)}[/]" if s.get("failures") else "0",
            f"[magenta]{unreachable}[/]" if unreachable else "0",
            str(s.get("skipped", 0)),
            "[yellow]required[/]" if host in result.reboot_required else "",
        )
    console.print(table)
    if show_changes:
        for change in result.changes:
            verb = "would change" if check else "changed"
            console.print(
                f"[yellow]{verb}[/] {change['host']} · role {change['role']} · {change['task']}",
                highlight=False,
            )
            for text in diff_lines(change.get("diff")):
                console.print(text, highlight=False, markup=False)
    for f in result.failures:
        kind = "unreachable" if f.unreachable else "failed"
        console.print(
            f"[red]{kind}[/] {f.host} · role {f.role} · task {f.task!r}: {f.message}", highlight=False
        )


def diff_lines(diff) -> list[str]:
    """Ansible's before/after diff(s) as unified diff lines."""
    import difflib

    out: list[str] = []
    for d in diff if isinstance(diff, list) else [diff] if diff else []:
        before, after = d.get("before"), d.get("after")
        if isinstance(before, str) and isinstance(after, str):
            out += [
                "    " + line.rstrip("\n")
                for line in difflib.unified_diff(
                    before.splitlines(True),
                    after.splitlines(True),
                    d.get("before_header", "before"),
                    d.get("after_header", "after"),
                )
            ]
        elif isinstance(d.get("prepared"), str):
            out += ["    " + line for line in d["prepared"].splitlines()]
    return out


def render_interrupted(progress: list, console) -> None:
    """Where each host stood when Ctrl-C or SIGTERM stopped the run (engine.HostProgress)."""
    console.print(
        "toolkit provision: interrupted; ansible-playbook and every process it started were stopped",
        highlight=False,
    )
    words = {
        "finished": "finished (no task running; last task {task!r})",
        "failed": "failed (last task {task!r})",
        "interrupted": "interrupted during task {task!r}",
        "not started": "not started",
    }
    for p in progress:
        console.print(f"  {p.host}: {words[p.state].format(task=p.task)}", highlight=False, markup=False)
