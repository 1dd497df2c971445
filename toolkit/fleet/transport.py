"""Run one command on one host: over SSH with fabric (paramiko), or on the controller itself for
`ansible_connection: local`. Both stream stderr line by line (the live display), keep stdout (the JSON
document) and honour a per-host deadline and a cancel event.

Stopping a remote run cleanly: the command runs under a small sh wrapper that keeps the channel's stdin
open; when the controller closes it (Ctrl-C, deadline) or the connection drops, the wrapper sends SIGTERM
to the toolkit, which saves what it finished (bench keeps the finished loads) and exits. A bare
disconnect would leave a bench running on the node for hours.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from toolkit.fleet.targets import Target

GRACE_SECONDS = 20.0  # after a stop: time the node's toolkit gets to save and print its partial result
VERSION_PREFIX = "toolkit-fleet: version "
MISSING_PREFIX = "toolkit-fleet: no toolkit at "
EXIT_NO_TOOLKIT = 127


@dataclass
class Outcome:
    state: str  # finished | unreachable | timeout | interrupted
    exit_code: int | None
    stdout: str
    stderr: str
    message: str = ""


def wrapper(toolkit: str, argv: list[str], prelude: str = "") -> str:
    """The sh script run on the node: the command with a stdin watchdog. TOOLKIT_FLEET=1 makes the node's
    toolkit say its version on stderr first (no second interpreter start per node just to ask)."""
    tk = shlex.quote(toolkit)
    args = " ".join(shlex.quote(a) for a in argv)
    return (
        "exec 3<&0\n"
        f"tk={tk}\n"
        f'[ -x "$tk" ] || {{ echo "{MISSING_PREFIX}$tk" >&2; exit {EXIT_NO_TOOLKIT}; }}\n'
        f"{prelude}"
        f'TOOLKIT_FLEET=1 "$tk" {args} "$@" </dev/null &\n'
        "pid=$!\n"
        # background lists get /dev/null as stdin and ignore SIGINT: read fd 3, send TERM
        '( head -c1 <&3 >/dev/null 2>&1; kill -TERM "$pid" 2>/dev/null ) >/dev/null 2>&1 &\n'
        "w=$!\n"
        'wait "$pid"; rc=$?\n'
        'kill "$w" 2>/dev/null\n'
        'exit "$rc"\n'
    )


class _Lines:
    """Collects a stream; calls `on_line` with each complete, non-empty stderr line."""

    def __init__(self, on_line: Callable[[str], None] | None):
        self.parts: list[str] = []
        self.pending = ""
        self.on_line = on_line

    def feed(self, text: str) -> None:
        self.parts.append(text)
        if self.on_line is None:
            return
        self.pending += text.replace("\r", "\n")
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if line.strip():
                self.on_line(line.strip())

    def text(self) -> str:
        return "".join(self.parts)


def run(
    target: Target,
    script: str,
    timeout: float | None,
    connect_timeout: float,
    cancel: threading.Event,
    on_line: Callable[[str], None] | None = None,
    strict_host_keys: bool = False,
) -> Outcome:
    if target.local:
        return _run_local(target, script, timeout, cancel, on_line)
    return _run_ssh(target, script, timeout, connect_timeout, cancel, on_line, strict_host_keys)


def _stop_reason(deadline: float | None, cancel: threading.Event) -> str | None:
    if cancel.is_set():
        return "interrupted"
    if deadline is not None and time.monotonic() > deadline:
        return "timeout"
    return None


def _unreachable(message: str, out: _Lines | None = None, errs: _Lines | None = None) -> Outcome:
    return Outcome("unreachable", None, out.text() if out else "", errs.text() if errs else "", message)


def _connection(target: Target, connect_timeout: float, strict_host_keys: bool):
    """The fabric Connection to the node, through its jump hosts or ProxyCommand (not opened yet)."""
    from fabric import Connection

    kwargs = {"banner_timeout": connect_timeout, "auth_timeout": connect_timeout}
    if target.key_file:
        kwargs["key_filename"] = target.key_file

    def one(host: str, user: str | None, port: int | None, gateway):
        conn = Connection(
            host, user=user, port=port, connect_timeout=connect_timeout, connect_kwargs=dict(kwargs),
            gateway=gateway,
        )  # fmt: skip
        if strict_host_keys:
            from paramiko import RejectPolicy

            conn.client.set_missing_host_key_policy(RejectPolicy())
        return conn

    gateway = target.proxy_command  # fabric runs a string gateway as ssh's ProxyCommand
    for user, host, port in target.jumps:  # ProxyJump: each hop reached through the one before
        gateway = one(host, user or target.user, port, gateway)
    return one(target.address, target.user, target.port, gateway)


def _connect(target: Target, connect_timeout: float, strict_host_keys: bool):
    """(an open fabric Connection, None), or (None, the Outcome that says why the node is unreachable)."""
    import logging

    from paramiko.ssh_exception import (
        AuthenticationException,
        ChannelException,
        NoValidConnectionsError,
        SSHException,
    )

    # paramiko's transport thread logs a peer that is not SSH with a traceback; with no handler of ours,
    # Python's last-resort handler would print it. The reason is in the host's own message instead.
    paramiko_log = logging.getLogger("paramiko")
    if not paramiko_log.handlers:
        paramiko_log.addHandler(logging.NullHandler())
    conn = _connection(target, connect_timeout, strict_host_keys)
    try:
        conn.open()
    except AuthenticationException:
        return None, _unreachable(f"SSH login as {conn.user} refused (key not accepted)")
    except NoValidConnectionsError as err:
        reason = "; ".join(sorted({e.strerror or str(e) for e in err.errors.values()})) or str(err)
        return None, _unreachable(f"cannot connect to {target.where}: {reason}")
    except ChannelException as err:  # the bastion could not open the way on (ProxyJump)
        return None, _unreachable(f"cannot connect to {target.where}: the jump host says {err.text}")
    except TimeoutError:
        return None, _unreachable(f"no answer from {target.where} in {connect_timeout:g} s")
    except (OSError, SSHException, EOFError) as err:
        text = str(err) or type(err).__name__
        if "not found in known_hosts" in text:
            text = "host key not in known_hosts (--strict-host-keys)"
        elif "protocol banner" in text:
            text = f"the port does not answer as an SSH server ({text}); check ansible_port"
        return None, _unreachable(f"SSH to {target.where} failed: {text}")
    finally:
        if not conn.is_connected:
            _close(conn)
    return conn, None


def _receive(chan, out: _Lines, errs: _Lines) -> bool:
    """Feed what the channel has ready to `out` and `errs`; whether there was anything."""
    busy = False
    if chan.recv_ready():
        out.feed(chan.recv(65536).decode("utf-8", "replace"))
        busy = True
    if chan.recv_stderr_ready():
        errs.feed(chan.recv_stderr(65536).decode("utf-8", "replace"))
        busy = True
    return busy


def _follow(chan, out: _Lines, errs: _Lines, deadline: float | None, cancel: threading.Event) -> str | None:
    """Read the channel until the command ends. On a stop (deadline, cancel) close its stdin and give it
    GRACE_SECONDS to hand back what it finished. The stop reason, or None when it ended by itself."""
    stopped, stop_at = None, None
    while True:
        if _receive(chan, out, errs):
            continue
        if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            break
        if chan.closed:
            break
        reason = stopped or _stop_reason(deadline, cancel)
        if reason and stopped is None:
            stopped, stop_at = reason, time.monotonic()
            chan.shutdown_write()  # EOF on the wrapper's fd 3: the toolkit gets SIGTERM
        if stopped and time.monotonic() - stop_at > GRACE_SECONDS:
            break
        time.sleep(0.05)
    return stopped


def _run_ssh(target, script, timeout, connect_timeout, cancel, on_line, strict_host_keys=False) -> Outcome:
    from paramiko.ssh_exception import SSHException

    conn, refused = _connect(target, connect_timeout, strict_host_keys)
    if refused is not None:
        return refused
    out, errs = _Lines(None), _Lines(on_line)
    deadline = time.monotonic() + timeout if timeout else None
    try:
        chan = conn.create_session()
        chan.exec_command(shlex.join([*_become(target), "sh", "-c", script, "toolkit-fleet"]))
        stopped = _follow(chan, out, errs, deadline, cancel)
        code = chan.recv_exit_status() if chan.exit_status_ready() else None
    except (OSError, SSHException, EOFError) as err:
        return _unreachable(f"connection to {target.where} lost: {err}", out, errs)
    finally:
        _close(conn)
    # no exit status (-1: paramiko's "killed by a signal"): the node may have gone away mid-run (powered
    # off, rebooted, network): if it no longer answers, it is unreachable, not a failed run
    if code in (None, -1) and stopped is None and not _answers(target, connect_timeout):
        return _unreachable(f"connection to {target.where} lost before the run ended", out, errs)
    return _outcome(stopped, code, out.text(), errs.text(), timeout)


def _become(target: Target) -> list[str]:
    """`ansible_become` (sudo): the command runs through passwordless sudo, as Ansible's would."""
    return ["sudo", "-n", "-u", target.become_user, "--"] if target.become_user else []


def _close(conn) -> None:
    """The connection and every jump connection it was opened through."""
    while conn is not None and not isinstance(conn, str):
        conn.close()
        conn = conn.gateway


def _answers(target: Target, connect_timeout: float, window: float = 5.0) -> bool:
    """Whether the node's SSH port keeps accepting connections over `window` seconds (a node shutting
    down may still accept for a moment). Behind a jump host the port cannot be tried from here: the
    lost connection is taken as the node gone."""
    if target.jumps or target.proxy_command:
        return False
    end = time.monotonic() + window
    while True:
        try:
            socket.create_connection(
                (target.address, target.port or 22), timeout=min(connect_timeout, 3)
            ).close()
        except OSError:
            return False
        if time.monotonic() >= end:
            return True
        time.sleep(0.5)


def _run_local(target, script, timeout, cancel, on_line) -> Outcome:
    proc = subprocess.Popen(
        [*_become(target), "sh", "-c", script, "toolkit-fleet"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # the user's Ctrl-C reaches the controller, which stops this cleanly
    )
    out, errs = _Lines(None), _Lines(on_line)

    def pump(stream, sink) -> None:
        for chunk in iter(lambda: stream.read1(65536), b""):
            sink.feed(chunk.decode("utf-8", "replace"))

    readers = [
        threading.Thread(target=pump, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, errs), daemon=True),
    ]
    for t in readers:
        t.start()
    deadline = time.monotonic() + timeout if timeout else None
    stopped, stop_at = None, None
    while proc.poll() is None:
        reason = stopped or _stop_reason(deadline, cancel)
        if reason and stopped is None:
            stopped, stop_at = reason, time.monotonic()
            proc.stdin.close()
        if stopped and time.monotonic() - stop_at > GRACE_SECONDS:
            proc.kill()
        time.sleep(0.05)
    for t in readers:
        t.join(timeout=5)
    return _outcome(stopped, proc.returncode, out.text(), errs.text(), timeout)


def _outcome(stopped: str | None, code: int | None, stdout: str, stderr: str, timeout) -> Outcome:
    if stopped == "timeout":
        return Outcome("timeout", code, stdout, stderr, f"stopped after the host timeout of {timeout:g} s")
    if stopped == "interrupted":
        return Outcome("interrupted", code, stdout, stderr, "interrupted")
    return Outcome("finished", code, stdout, stderr)


def remote_version(stderr: str) -> str | None:
    for line in stderr.splitlines():
        if line.startswith(VERSION_PREFIX):
            return line[len(VERSION_PREFIX) :].strip()
    return None
