"""The `toolkit` command line.

Start-up must stay fast: this module imports only the standard library. Each
subcommand lives in `toolkit.commands.<name>` and is imported only when it runs,
so `toolkit --help` never loads torch, transformers, trl or ansible.
"""

from __future__ import annotations

import argparse
import codecs
import importlib
import json
import os
import select
import sys
import traceback

from toolkit import __version__
from toolkit.errors import EXIT_USAGE
from toolkit.exits import Ending, ending_of, family_of

# name -> (module under toolkit.commands, one-line help). Order is the help order.
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("bench", "run reference loads and compare them with the GPU class's figures"),
    "gpus": ("gpus", "list the GPU catalog (classes, peaks, memory, device names)"),
    "provision": ("provision", "install and configure the GPU stack on hosts with Ansible roles"),
    "health": ("health", "report GPU, BMC, Docker and system health (Nagios exit codes, JSON, Prometheus)"),
    "report": ("report", "write one self-contained HTML report (plots, tables) from the stored results"),
}


class _Parser(argparse.ArgumentParser):
    usage_exit = EXIT_USAGE  # `toolkit health` uses 3 (Nagios UNKNOWN) for usage errors

    def error(self, message: str) -> None:  # argparse exits 2 already; keep one clear line
        self.print_usage(sys.stderr)
        sys.stderr.write(f"toolkit: error: {message}\n")
        raise SystemExit(self.usage_exit)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="toolkit",
        description="Provision, benchmark and health-check self-hosted GPU nodes for LLM work.",
        epilog="Exit codes: 0 ok, 1 a check failed (bench), 2 usage, settings, file or internal error, "
        "3 a host failed or was unreachable (provision, fleet runs), 130 interrupted; "
        "`toolkit health` uses the Nagios codes 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (also for every "
        'error). With --json an error is printed as {"error": {"ref": ...}}.',
    )
    parser.add_argument("--version", action="version", version=f"toolkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        _command_module(module).add_arguments(p)
        p.set_defaults(_module=module)
        p.usage_exit = family_of(name).error  # `toolkit health`: 3, UNKNOWN
    return parser


def _command_module(module: str):
    # Command modules import only argparse-level things at top level; their
    # heavy work is imported inside run().
    return importlib.import_module(f"toolkit.commands.{module}")


def report_error(ending: Ending) -> None:
    sys.stderr.write(f"toolkit: error: {ending.message}\n")
    if ending.hint:
        sys.stderr.write(f"  hint: {ending.hint}\n")


# What an ASCII-only stream (LANG=C, PYTHONIOENCODING=ascii) gets instead of the characters toolkit prints.
_ASCII = {
    "\u2014": "-", "\u2013": "-", "\u2265": ">=", "\u2264": "<=", "\u00d7": "x", "\u2260": "!=",
    "\u25c0": "<", "\u25b6": ">", "\u00b7": "-", "\u2026": "...", "\u2192": "->", "\u2190": "<-",
    "\u00b1": "+/-", "\u00b5": "u", "\u00b0": " deg", "\u2018": "'", "\u2019": "'", "\u201c": '"',
    "\u201d": '"', "\u2713": "ok", "\u2717": "x",
}  # fmt: skip


def _ascii_fallback(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeEncodeError):
        raise err
    return "".join(_ASCII.get(ch, "?") for ch in err.object[err.start : err.end]), err.end


def _tolerant_streams() -> None:
    """Output never crashes on a stream that cannot encode a character: it gets an ASCII stand-in."""
    codecs.register_error("toolkit-ascii", _ascii_fallback)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and not (stream.encoding or "").lower().startswith("utf"):
            stream.reconfigure(errors="toolkit-ascii")


class _Watched:
    """stdout, noting whether anything was written (a command's document, then an error after it)."""

    def __init__(self, stream):
        self._stream, self.written = stream, False

    def write(self, text: str) -> int:
        self.written = self.written or bool(text)
        return self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _stdout_closed() -> bool:
    """Whether the reader of stdout went away (a BrokenPipeError may also come from a peer's socket)."""
    try:
        poller = select.poll()
        poller.register(sys.__stdout__.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return True


def _leave_quietly() -> int:
    """`toolkit gpus | head`: the reader went away; not an error of ours. What is still buffered goes to
    /dev/null, so the interpreter's last flush is silent."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.__stdout__.fileno())
    os.close(devnull)
    return 0


def main(argv: list[str] | None = None) -> int:
    _tolerant_streams()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser.usage_exit = family_of(args.command).error
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    debug = args.debug or os.environ.get("TOOLKIT_DEBUG") == "1"
    if os.environ.pop("TOOLKIT_FLEET", None) == "1":  # run by a fleet controller, which compares versions
        sys.stderr.write(f"toolkit-fleet: version {__version__}\n")
        sys.stderr.flush()
    return run_command(_command_module(args._module).run, args, debug)


def run_command(run, args: argparse.Namespace, debug: bool = False) -> int:
    """The one boundary: whatever ends the command becomes one message (a traceback only with --debug),
    its family's exit code (toolkit/exits.py) and, where the command promised JSON on stdout and has not
    written its document, `{"error": {"ref": ..., ...}}` there."""
    family = family_of(args.command)
    watched = _Watched(sys.stdout) if getattr(args, "json", None) in (True, "-") else None
    if watched:
        sys.stdout = watched
    try:
        code = int(run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return code
    except BrokenPipeError as exc:
        if _stdout_closed():
            return _leave_quietly()
        return _ended(exc, family, debug, watched)
    except (Exception, KeyboardInterrupt) as exc:
        return _ended(exc, family, debug, watched)
    finally:
        if watched:
            sys.stdout = watched._stream


def _redacted(ending: Ending) -> Ending:
    """A library's exception text may quote a secret this run knows (a BMC password, an API key)."""
    import dataclasses

    from toolkit.health.secrets import redact

    return dataclasses.replace(ending, message=redact(ending.message), hint=redact(ending.hint))


def _ended(exc: BaseException, family, debug: bool, watched: _Watched | None) -> int:
    ending = _redacted(ending_of(exc, family))
    try:
        if debug:
            traceback.print_exception(exc)
        report_error(ending)
    except OSError:  # stderr is gone too: the exit code still tells
        pass
    if watched and not watched.written:
        try:
            watched.write(json.dumps(ending.as_json(), indent=1) + "\n")
            watched.flush()
        except BrokenPipeError:
            _leave_quietly()
    return ending.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
