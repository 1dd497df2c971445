"""One fleet run's result: each host's end (state, exit code, message, toolkit version) and its own JSON
document, gathered into one document saved as `fleet-<command>-<time>.json` in the results folder; each
host's document is also stored on its own there (the history `toolkit report` and `--compare` read)."""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from toolkit import __version__
from toolkit.atomic import write_text_atomic
from toolkit.console import style_of
from toolkit.fleet.runner import HostRun
from toolkit.fleet.transport import EXIT_NO_TOOLKIT, MISSING_PREFIX, Outcome, remote_version

SCHEMA_VERSION = 1


@dataclass
class HostResult:
    """What a host's run means for the fleet: `state` names it, `exit_code` ranks it."""

    name: str
    where: str
    state: str
    exit_code: int
    duration_seconds: float | None
    toolkit_version: str | None
    started_at: str | None = None
    message: str = ""
    doc: dict | None = None
    saved: str | None = None
    extra: dict = field(default_factory=dict)
    ref: str | None = None  # why it did not end well: the node's own reference, or what the controller saw

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "address": self.where,
            "state": self.state,
            "exit_code": self.exit_code,
            "started_at": self.started_at,
            "duration_seconds": round(self.duration_seconds, 3)
            if self.duration_seconds is not None
            else None,
            "toolkit_version": self.toolkit_version,
            "version_mismatch": bool(self.toolkit_version) and self.toolkit_version != __version__,
            "message": self.message,
            "ref": self.ref,
            "saved": self.saved,
            **self.extra,
            "result": self.doc,
        }


def _json_object(stdout: str) -> dict | None:
    text = stdout.strip()
    if not text.startswith("{"):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def parse_doc(stdout: str) -> dict | None:
    """The node's JSON document (stdout holds nothing else with `--json`); not its error (`node_error`)."""
    doc = _json_object(stdout)
    return None if doc is None or node_error_of(doc) else doc


def node_error_of(doc: dict) -> dict | None:
    """`{"error": {"ref": ..., "message": ..., "hint": ..., "exit_code": ...}}`: what a node's toolkit prints
    on stdout instead of its document when an error ends it (toolkit/exits.py)."""
    error = doc.get("error") if len(doc) == 1 else None
    return error if isinstance(error, dict) and isinstance(error.get("ref"), str) else None


# what the controller itself saw, when the node said nothing
CONTROLLER_REFS = {
    "unreachable": "unreachable",
    "timeout": "timeout",
    "interrupted": "interrupted",
    "not_started": "not-started",
}


def classify(host: HostResult, out: Outcome | None) -> None:
    """The host's reference and message: from the node's JSON error where it sent one; else what the
    controller saw (unreachable, timeout, no toolkit); else, for an older node that sends no reference,
    from its stderr (a traceback: `internal`)."""
    error = node_error_of(_json_object(out.stdout) or {}) if out else None
    if error:
        host.ref = error["ref"]
        message, hint = str(error.get("message") or ""), error.get("hint")
        host.message = f"{message} (hint: {hint})" if hint else message
    elif host.state in CONTROLLER_REFS:
        host.ref = CONTROLLER_REFS[host.state]
    elif out and out.exit_code == EXIT_NO_TOOLKIT and MISSING_PREFIX in out.stderr:
        host.ref = "no-toolkit"
    elif out and host.doc is None and "Traceback (most recent call last)" in out.stderr:
        host.ref = "internal"


def error_line(stderr: str) -> str:
    """The node toolkit's own one-line error (and hint), or the last line it printed."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("toolkit-fleet:")]
    for i, line in enumerate(lines):
        if line.startswith("toolkit: error:"):
            text = line.removeprefix("toolkit: error:").strip()
            if i + 1 < len(lines) and lines[i + 1].startswith("hint:"):
                text += f" ({lines[i + 1]})"
            return text
    return lines[-1] if lines else ""


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text) or "host"


def fleet_doc(
    command: str,
    started_at: str,
    finished_at: str,
    options: dict,
    hosts: list[HostResult],
    exit_code: int,
    interrupted: bool,
) -> dict:
    states: dict[str, int] = {}
    for h in hosts:
        states[h.state] = states.get(h.state, 0) + 1
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "fleet",
        "command": command,
        "started_at": started_at,
        "finished_at": finished_at,
        "controller": {"host": socket.gethostname(), "toolkit_version": __version__},
        **options,
        "interrupted": interrupted,
        "summary": {"hosts": len(hosts), "states": states},
        "version_mismatches": [h.name for h in hosts if h.as_dict()["version_mismatch"]],
        "exit_code": exit_code,
        "hosts": [h.as_dict() for h in hosts],
    }


def save_json(path, doc: dict) -> Path:
    return write_text_atomic(path, json.dumps(doc, indent=1) + "\n")


def save(doc: dict, folder: Path) -> Path:
    stamp = doc["started_at"].replace("-", "").replace(":", "")
    return save_json(folder / f"fleet-{doc['command']}-{stamp}.json", doc)


def render(doc: dict, console, columns: list[tuple[str, callable]]) -> None:
    """The fleet table: a row per host, then the version mismatches and where things were saved."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title=f"toolkit {doc['command']} · {len(doc['hosts'])} hosts · exit {doc['exit_code']}",
        title_justify="left",
        padding=(0, 1),
        collapse_padding=True,
    )
    for col in ("host", "state", "exit", "time", "toolkit", *(c for c, _ in columns), "detail"):
        table.add_column(col, no_wrap=col != "detail", overflow="fold")
    for h in doc["hosts"]:
        style = style_of(h["state"])
        version = h["toolkit_version"] or "-"
        if h["version_mismatch"]:
            version = f"[yellow]{escape(version)} ≠ {__version__}[/]"
        table.add_row(
            escape(h["name"]),
            f"[{style}]{h['state']}[/]",
            str(h["exit_code"]),
            f"{h['duration_seconds']:.1f} s" if h["duration_seconds"] is not None else "-",
            version,
            *(escape(fn(h)) for _, fn in columns),
            escape(h["message"]),
        )
    console.print(table)
    if doc["version_mismatches"]:
        console.print(
            f"[yellow]toolkit version differs from the controller's ({__version__}) on: "
            f"{', '.join(doc['version_mismatches'])}[/] — re-run the health_report role to update the nodes",
            highlight=False,
        )


def version_of(run: HostRun) -> str | None:
    return remote_version(run.outcome.stderr) if run.outcome else None
