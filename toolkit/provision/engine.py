"""Runs a playbook through ansible-runner's Python API and turns its events into a per-host recap.

Every host runs to the end: one failed or unreachable host never stops the others (Ansible's
default; no any_errors_fatal). Artifacts are kept under the state folder, rotated, with secrets
scrubbed from the environment ansible-runner records.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import MissingDependency

INTERNAL_ROLES = ("apt_packages", "apt_vendor_repo", "os_support")
COUNTERS = ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored")
SECRET_NAME = re.compile(r"PASS|SECRET|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)
REBOOT_TASK = "Toolkit reboot status"
INSTALL_HINT = "pip install 'llm-node-toolkit[provision]' (ansible-core and ansible-runner)"


def find_ansible_playbook() -> str:
    """ansible-playbook on PATH or beside this Python (a venv's bin/ that is not on PATH)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), str(Path(sys.executable).parent)])
    found = shutil.which("ansible-playbook", path=search)
    if not found:
        raise MissingDependency(
            "ansible-playbook was not found on PATH or beside this Python", hint=INSTALL_HINT
        )
    return found


def playbooks_dir() -> Path:
    """The playbooks shipped beside the package (a checkout or an editable install), or $TOOLKIT_PLAYBOOKS."""
    configured = os.environ.get("TOOLKIT_PLAYBOOKS")
    path = Path(configured) if configured else Path(__file__).resolve().parents[2] / "playbooks"
    if not (path / "site.yml").exists():
        raise MissingDependency(
            f"toolkit's playbooks were not found in {path}",
            hint="run from a checkout of toolkit (pip install -e .) "
            "or set TOOLKIT_PLAYBOOKS to its playbooks/ folder",
        )
    return path


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(os.environ.get("TOOLKIT_STATE_DIR") or Path(base) / "toolkit")


@dataclass
class Failure:
    host: str
    role: str
    task: str
    message: str
    unreachable: bool = False


@dataclass
class RunResult:
    rc: int
    status: str
    stats: dict[str, dict[str, int]]  # host -> counter -> n
    failures: list[Failure]
    reboot_required: list[str]
    artifacts: Path
    hosts: list[str]
    error: str | None = None
    changes: list[dict] = field(default_factory=list)

    @property
    def failed_hosts(self) -> list[str]:
        return [
            h
            for h in self.hosts
            if self.stats.get(h, {}).get("failures") or self.stats.get(h, {}).get("dark")
        ]

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed_hosts


@dataclass
class EventSink:
    """Collects what the recap needs from runner events and forwards them to a display."""

    on_update: Callable[[str, str, str, str], None] = lambda host, role, task, state: None
    capture_changes: bool = False
    failures: list[Failure] = field(default_factory=list)
    reboot: dict[str, bool] = field(default_factory=dict)
    changes: list[dict] = field(default_factory=list)
    running: dict[str, str] = field(default_factory=dict)  # host -> the task it is running now
    done: dict[str, str] = field(default_factory=dict)  # host -> the last task it ended
    _capability: dict[str, str] = field(default_factory=dict)

    def __call__(self, event: dict) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        host = data.get("host") or data.get("remote_addr")
        role = self._role(host, data.get("role"))
        task = data.get("task") or ""
        if host and kind.startswith("runner_on_"):
            self._progress(kind, host, task)
        if kind == "runner_on_start" and host:
            self.on_update(host, role, task, "running")
        elif kind == "runner_on_ok" and host:
            res = data.get("res") or {}
            if task == REBOOT_TASK:
                self.reboot[host] = bool((res.get("stat") or {}).get("exists"))
            if res.get("changed") and self.capture_changes:
                self.changes.append({"host": host, "role": role, "task": task, "diff": res.get("diff")})
            self.on_update(host, role, task, "changed" if res.get("changed") else "ok")
        elif kind == "runner_on_skipped" and host:
            self.on_update(host, role, task, "skipped")
        elif kind in ("runner_on_failed", "runner_on_unreachable") and host:
            if kind == "runner_on_failed" and data.get("ignore_errors"):
                return True
            res = data.get("res") or {}
            self.failures.append(
                Failure(host, role, task, module_message(res), kind == "runner_on_unreachable")
            )
            self.on_update(host, role, task, "unreachable" if kind == "runner_on_unreachable" else "failed")
        return True  # keep the event in the artifacts

    def _progress(self, kind: str, host: str, task: str) -> None:
        if kind == "runner_on_start":
            self.running[host] = task
        elif kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_on_skipped"):
            self.running.pop(host, None)
            self.done[host] = task

    def _role(self, host: str | None, role: str | None) -> str:
        """Events of the shared internal roles count for the capability role that included them."""
        if not role:
            return "(play)"
        if role in INTERNAL_ROLES:
            return self._capability.get(host or "", role)
        self._capability[host or ""] = role
        return role


def module_message(res: dict) -> str:
    """The module's own words: msg, else stderr, else the first result lines. A generic msg
    ("non-zero return code") gets the command's error lines appended."""
    stderr = res.get("stderr") or res.get("module_stderr") or ""
    if isinstance(stderr, str) and stderr.strip():
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith(("E:", "W:", "ERROR", "Error"))] or lines[-3:]
        stderr = " | ".join(errors)
    msg = res.get("msg")
    if isinstance(msg, str) and msg.strip():
        generic = msg.strip() in ("non-zero return code", "MODULE FAILURE") or msg.strip().endswith(":")
        return (f"{msg.strip()} {stderr}" if generic and stderr else msg.strip())[:2000]
    for key in ("stderr", "module_stderr", "reason"):
        value = res.get(key)
        if value:
            text = stderr if key != "reason" and stderr else value
            text = text if isinstance(text, str) else json.dumps(text)
            return text.strip()[:2000]
    results = res.get("results")
    if isinstance(results, list):
        msgs = [module_message(r) for r in results if isinstance(r, dict) and r.get("failed")]
        if msgs:
            return "; ".join(msgs)[:2000]
    return json.dumps({k: v for k, v in res.items() if not k.startswith("_")})[:2000]


def scrub_artifacts(folder: Path) -> None:
    """ansible-runner records the whole environment in `command`: keep ANSIBLE_* and PATH, drop the rest
    (a BMC password read from the environment must not land on disk)."""
    for command in folder.rglob("command"):
        try:
            doc = json.loads(command.read_text())
        except (OSError, ValueError):
            continue
        env = doc.get("env") or {}
        doc["env"] = {
            k: v
            for k, v in env.items()
            if (k.startswith("ANSIBLE_") or k == "PATH") and not SECRET_NAME.search(k)
        }
        doc["env_note"] = "other environment variables omitted by toolkit"
        command.write_text(json.dumps(doc))


@dataclass(frozen=True)
class HostProgress:
    """Where a host stood when a run was interrupted."""

    host: str
    state: str  # finished (no task running, none failed) | failed | interrupted | not started
    task: str  # the task it was running (interrupted), else the last one it ended ("" not started)


class PlaybookInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped ansible-playbook (and everything it started): exit 130, with where
    each host stood."""

    def __init__(self, progress: list[HostProgress], artifacts: Path):
        super().__init__("interrupted")
        self.progress = progress
        self.artifacts = artifacts


def _progress(sink: EventSink, hosts: list[str]) -> list[HostProgress]:
    failed = {f.host for f in sink.failures}
    out = []
    for host in hosts:
        if host in sink.running:
            out.append(HostProgress(host, "interrupted", sink.running[host]))
        elif host in failed:
            out.append(HostProgress(host, "failed", sink.done.get(host, "")))
        elif host in sink.done:
            out.append(HostProgress(host, "finished", sink.done[host]))
        else:
            out.append(HostProgress(host, "not started", ""))
    return out


STOP_GRACE = 5.0  # seconds ansible-playbook and its workers get to end after SIGTERM, before SIGKILL


def stop_children(grace: float = STOP_GRACE) -> None:
    """Stop every process this one started and every process group they made: frozen first (SIGSTOP, so
    none forks a new worker while they are counted), then SIGTERM, then SIGKILL for what is left after
    `grace` seconds. ansible-playbook runs in a session of its own (ansible-runner's pty) and each of its
    forks calls setsid(): runner's killpg of ansible-playbook's group never reaches the workers nor the
    commands they run (an apt, a `sleep`), which kept running after toolkit had exited."""
    own = os.getpgid(0)
    procs, groups = _tree(own)
    while True:  # freeze, count again until the tree stops growing
        _signal_groups(groups, signal.SIGSTOP)
        more, more_groups = _tree(own)
        if {p.pid for p in more} <= {p.pid for p in procs}:
            break
        procs, groups = procs + [p for p in more if p.pid not in {q.pid for q in procs}], groups | more_groups
    loose = [p for p in procs if _pgid(p.pid) == own]  # one left in this process's own group
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 1.0)):
        _signal_groups(groups, sig)
        _signal_groups(groups, signal.SIGCONT)
        for proc in loose:
            with contextlib.suppress(OSError):
                os.kill(proc.pid, sig)
        if _wait_gone(procs, wait):
            return


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _tree(own: int) -> tuple[list, set[int]]:
    """This process's descendants and their process groups (its own group left out)."""
    import psutil

    try:
        procs = psutil.Process().children(recursive=True)
    except psutil.Error:
        procs = []
    groups = {_pgid(p.pid) for p in procs} - {None, own}
    return procs, groups


def _signal_groups(groups: set[int], sig: int) -> None:
    for group in groups:
        with contextlib.suppress(OSError):
            os.killpg(group, sig)


def _wait_gone(procs: list, timeout: float) -> bool:
    """True when every process has ended (a zombie waiting to be reaped has ended) within `timeout`."""
    import time

    import psutil

    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for proc in procs:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.Error:
                pass
        if not alive or time.monotonic() >= deadline:
            return not alive
        time.sleep(0.1)


@dataclass(frozen=True)
class PlaybookRun:
    """One ansible-playbook run: the playbook, the hosts it runs on, and ansible-playbook's options."""

    playbook: str  # a file in project_dir, or an absolute path
    inventory: Path
    limit: str  # the Ansible host pattern
    hosts: list[str]  # the hosts the recap lists, in this order
    check: bool = False
    diff: bool = False
    tags: str | None = None
    skip_tags: str | None = None
    extra_vars: list[str] | None = None  # as `-e` takes them: KEY=VALUE, JSON or @file
    forks: int = 10
    vault_password_file: str | None = None
    keep_artifacts: int = 20
    project_dir: Path | None = None  # None: the shipped playbooks


def _cmdline(run: PlaybookRun) -> list[str]:
    """ansible-playbook's arguments that ansible-runner has no parameter for."""
    cmdline = []
    if run.check:
        cmdline.append("--check")
    if run.diff:
        cmdline.append("--diff")
    for item in run.extra_vars or []:
        # ansible-playbook runs in the playbooks folder: make `@file` relative to where the user is
        if item.startswith("@"):
            item = "@" + str(Path(item[1:]).expanduser().resolve())
        cmdline += ["-e", item]
    if run.vault_password_file:
        cmdline += ["--vault-password-file", str(Path(run.vault_password_file).resolve())]
    return cmdline


def _envvars(project: Path, playbook_bin: str) -> dict[str, str]:
    return {
        "ANSIBLE_ROLES_PATH": str(project / "roles"),
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_FORCE_COLOR": "False",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
        # one SSH round trip per task instead of several; facts gathered once per host, not per play
        "ANSIBLE_PIPELINING": os.environ.get("ANSIBLE_PIPELINING", "True"),
        "ANSIBLE_GATHERING": os.environ.get("ANSIBLE_GATHERING", "smart"),
        "PATH": os.pathsep.join([str(Path(playbook_bin).parent), os.environ.get("PATH", "")]),
    }


def _host_stats(raw: dict | None, hosts: list[str]) -> dict[str, dict[str, int]]:
    """host -> counter -> n: every host of the run (all zero where the playbook never reached it)."""
    stats: dict[str, dict[str, int]] = {h: dict.fromkeys(COUNTERS, 0) for h in hosts}
    raw = raw or {}
    for counter in COUNTERS:
        for host, n in (raw.get(counter) or {}).items():
            stats.setdefault(host, dict.fromkeys(COUNTERS, 0))[counter] = n
    return stats


def run_playbook(
    run: PlaybookRun, on_update: Callable[[str, str, str, str], None] | None = None
) -> RunResult:
    playbook_bin = find_ansible_playbook()
    try:
        import ansible_runner
    except ImportError:
        raise MissingDependency("ansible-runner is not installed", hint=INSTALL_HINT) from None
    project = run.project_dir or playbooks_dir()
    private = state_dir() / "provision"
    private.mkdir(parents=True, exist_ok=True, mode=0o700)
    cmdline = _cmdline(run)
    sink = EventSink(on_update=on_update or (lambda *a: None), capture_changes=run.check or run.diff)
    envvars = _envvars(project, playbook_bin)
    ident = uuid.uuid4().hex
    artifacts = private / "artifacts" / ident
    cancel = {"requested": False, "stopped": False}
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def request_cancel(signum, frame):  # ansible-playbook runs in its own session: a Ctrl-C never reaches it
        cancel["requested"] = True

    def cancelled() -> bool:  # runner asks at least every second (pexpect_timeout)
        if cancel["requested"] and not cancel["stopped"]:
            cancel["stopped"] = True
            stop_children()  # the whole tree, before runner kills ansible-playbook's group only
        return cancel["requested"]

    for sig in previous:
        signal.signal(sig, request_cancel)
    try:
        runner = ansible_runner.run(
            ident=ident,
            cancel_callback=cancelled,
            settings={"pexpect_timeout": 1},
            private_data_dir=str(private),
            project_dir=str(project),
            playbook=run.playbook,
            inventory=str(Path(run.inventory).resolve()),
            limit=run.limit,
            tags=run.tags,
            skip_tags=run.skip_tags,
            cmdline=" ".join(_quote(a) for a in cmdline) or None,
            forks=run.forks,
            envvars=envvars,
            event_handler=sink,
            quiet=True,
            rotate_artifacts=run.keep_artifacts,
            suppress_env_files=True,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        scrub_artifacts(artifacts)  # also after Ctrl-C or a crash: the environment must not stay on disk
    stats = _host_stats(runner.stats, run.hosts)
    error = None
    if cancel["requested"] or runner.status == "canceled":
        raise PlaybookInterrupted(_progress(sink, run.hosts), artifacts)
    if runner.stats is None or runner.status in ("error", "timeout"):
        error = _tail(runner) or f"ansible-playbook ended with status {runner.status} (rc {runner.rc})"
    return RunResult(
        rc=runner.rc,
        status=runner.status,
        stats=stats,
        failures=sink.failures,
        changes=sink.changes,
        reboot_required=sorted(h for h, needed in sink.reboot.items() if needed),
        artifacts=artifacts,
        hosts=run.hosts,
        error=error,
    )


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def _tail(runner) -> str:
    """The last lines ansible-playbook printed: what an error before the first play says."""
    try:
        text = runner.stdout.read()
    except (AttributeError, OSError, ValueError):
        return ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-6:])
