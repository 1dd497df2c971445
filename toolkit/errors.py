"""Errors a user can act on, their stable references, and the exit codes they map to (docs/REFERENCE.md,
"Exit codes" and "Error references").

A `ToolkitError` is printed as one message with a hint, never with a traceback unless `--debug` is
given. Its `ref` is a short, stable word that names the kind of error; JSON outputs carry it, so a
caller (the fleet controller, a monitoring system) classifies by it instead of by the message's text.
How an error maps onto each command's exit codes is `toolkit/exits.py`.
"""

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# `toolkit health` follows the Nagios plugin convention: 3 is UNKNOWN, also for a run that cannot start.
EXIT_UNKNOWN = 3
# `toolkit bench`: verdict `incomplete`, a load the user named (or any load that ran) was not judged
EXIT_INCOMPLETE = 4

# Stable error references (docs/REFERENCE.md, "Error references"); never renamed, only added to.
REF_USAGE = "usage"  # bad arguments or options, an unknown name, input that cannot be used
REF_SETTINGS = "settings"  # a settings file that cannot be read or used
REF_DEPENDENCY = "missing-dependency"  # an optional dependency is not installed
REF_HEALTH = "health-setup"  # `toolkit health` cannot start (BMC URL, password, ...)
REF_LOCKED = "locked"  # another run holds the lock
REF_FILE = "file"  # a file or folder that cannot be read or written (an OSError)
REF_INTERNAL = "internal"  # an unexpected exception: a bug in toolkit
REF_INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM


class ToolkitError(Exception):
    """A problem the user can fix; carries the exit code, an optional hint and a stable reference."""

    exit_code = EXIT_USAGE
    ref = REF_USAGE

    def __init__(
        self, message: str, hint: str | None = None, exit_code: int | None = None, ref: str | None = None
    ):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code
        if ref is not None:
            self.ref = ref


class UsageError(ToolkitError):
    """Bad arguments, unknown profile, profile/device mismatch: exit 2."""


class HealthError(ToolkitError):
    """`toolkit health` cannot run (bad BMC URL, no password, settings file, lock held): exit 3, UNKNOWN."""

    exit_code = EXIT_UNKNOWN
    ref = REF_HEALTH


class MissingDependency(ToolkitError):
    """An optional dependency (the ML extra) is not installed: exit 2."""

    ref = REF_DEPENDENCY
