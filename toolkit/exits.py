"""The exit-code contract (docs/REFERENCE.md, "Exit codes"): which family of codes each command uses, and
how whatever ends a command — a `ToolkitError`, an `OSError`, Ctrl-C, any other exception — maps onto its
family, with a stable reference (`toolkit/errors.py`) and one message.

Two families:

- **standard** (bench, provision, gpus, report, and their fleet runs): 0 ok, 1 a check failed, 2 usage,
  settings, file or internal error, 3 a host failed or was unreachable (fleet runs, provision), 4 (bench
  only) the verdict is `incomplete`: a load the user named was skipped, or a load that ran could not be
  judged (inconclusive, unstable), 130 interrupted.
- **nagios** (`toolkit health`): 0 OK, 1 WARNING, 2 CRITICAL come only from the checks; every usage,
  settings, file or internal error is 3 UNKNOWN; an interrupted run is 130.

Standard library only: the CLI imports this before any command module.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.errors import (
    EXIT_INTERRUPTED,
    EXIT_UNKNOWN,
    EXIT_USAGE,
    REF_FILE,
    REF_INTERNAL,
    REF_INTERRUPTED,
    ToolkitError,
)


@dataclass(frozen=True)
class Family:
    """The codes a command's non-check endings take."""

    name: str
    error: int  # usage, settings, a file that cannot be read or written, an internal error
    interrupted: int
    errors_keep_their_code: bool  # a ToolkitError's own exit_code stands (standard) or becomes `error`


STANDARD = Family("standard", error=EXIT_USAGE, interrupted=EXIT_INTERRUPTED, errors_keep_their_code=True)
# an interrupted health run is 130, as every command's: no status was found, and nothing was written
NAGIOS = Family("nagios", error=EXIT_UNKNOWN, interrupted=EXIT_INTERRUPTED, errors_keep_their_code=False)

FAMILY_OF = {"health": NAGIOS}  # every other command is standard


def family_of(command: str | None) -> Family:
    return FAMILY_OF.get(command or "", STANDARD)


@dataclass(frozen=True)
class Ending:
    """How a command ended when it did not return: the code, the reference, the message and hint the CLI
    prints, and whether it was a bug (the traceback is worth showing with --debug)."""

    exit_code: int
    ref: str
    message: str
    hint: str | None = None
    internal: bool = False

    def as_json(self) -> dict:
        """What a command that promised JSON on stdout prints there instead of its document."""
        return {
            "error": {
                "ref": self.ref,
                "message": self.message,
                "hint": self.hint,
                "exit_code": self.exit_code,
            }
        }


def _file_message(err: OSError) -> str:
    names = " -> ".join(str(n) for n in (err.filename, err.filename2) if n is not None)
    reason = err.strerror or str(err) or type(err).__name__
    return f"cannot use {names}: {reason}" if names else f"{type(err).__name__}: {reason}"


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def ending_of(exc: BaseException, family: Family) -> Ending:
    """The one mapping from an exception that ended a command onto its family's codes."""
    if isinstance(exc, ToolkitError):
        code = exc.exit_code if family.errors_keep_their_code else family.error
        return Ending(code, exc.ref, exc.message, exc.hint)
    if isinstance(exc, KeyboardInterrupt):
        return Ending(family.interrupted, REF_INTERRUPTED, "interrupted")
    if isinstance(exc, OSError):
        return Ending(
            family.error, REF_FILE, _file_message(exc), "check the path, its folder and permissions"
        )
    detail = _first_line(str(exc))
    return Ending(
        family.error,
        REF_INTERNAL,
        f"internal error: {type(exc).__name__}" + (f": {detail}" if detail else ""),
        "this is a bug in toolkit: run again with --debug for the traceback and report it",
        internal=True,
    )
