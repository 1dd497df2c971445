"""Errors a user can act on, and the exit codes they map to (docs/REFERENCE.md, "Exit codes").

A `ToolkitError` is printed as one message with a hint, never with a traceback
unless `--debug` is given.
"""

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# `toolkit health` follows the Nagios plugin convention: 3 is UNKNOWN, also for a run that cannot start.
EXIT_UNKNOWN = 3


class ToolkitError(Exception):
    """A problem the user can fix; carries the exit code and an optional hint."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(ToolkitError):
    """Bad arguments, unknown profile, profile/device mismatch: exit 2."""


class HealthError(ToolkitError):
    """`toolkit health` cannot run (bad BMC URL, no password, settings file, lock held): exit 3, UNKNOWN."""

    exit_code = EXIT_UNKNOWN


class MissingDependency(ToolkitError):
    """An optional dependency (the ML extra) is not installed: exit 2."""
