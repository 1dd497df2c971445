"""The `toolkit` command line.

Start-up must stay fast: this module imports only the standard library. Each
subcommand lives in `toolkit.commands.<name>` and is imported only when it runs,
so `toolkit --help` never loads torch, transformers, trl or ansible.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import difflib
import importlib
import json
import os
import re
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
    "completion": ("completion", "print a shell completion script (bash or zsh) generated from this parser"),
}

_CHOICE = re.compile(r"invalid choice: '?([^'\s]*)'? \(choose from (.*)\)")
_SETTING = re.compile(r"^[A-Za-z_][\w.-]*=")  # matmul.repeats=3: a --set value without its flag


class _Parser(argparse.ArgumentParser):
    usage_exit = EXIT_USAGE  # `toolkit health` uses 3 (Nagios UNKNOWN) for usage errors

    def __init__(self, *args, **kwargs) -> None:
        # No abbreviations: `--workload` must not quietly mean `--workloads` (and stop working the day a
        # second option starts the same way); a near miss gets a did-you-mean instead.
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str) -> None:  # argparse exits 2 already; keep one clear line
        self.fail(message, _choice_hint(message))

    def fail(self, message: str, hint: str | None = None) -> None:
        self.print_usage(sys.stderr)
        sys.stderr.write(f"toolkit: error: {message}\n")
        if hint:
            sys.stderr.write(f"  hint: {hint}\n")
        raise SystemExit(self.usage_exit)


def _choice_hint(message: str) -> str | None:
    """`invalid choice: 'benhc' (choose from 'bench', ...)` -> did you mean 'bench'?"""
    found = _CHOICE.search(message)
    if not found:
        return None
    choices = re.findall(r"'([^']*)'", found.group(2)) or [c.strip() for c in found.group(2).split(",")]
    close = difflib.get_close_matches(found.group(1), choices, n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}?" if close else None


def _unrecognized_hint(parser: argparse.ArgumentParser, extra: list[str]) -> str | None:
    """What an unrecognized argument most likely meant: a near option name, or `--set` before a bare
    KEY=VALUE."""
    options = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    for token in extra:
        if token.startswith("-"):
            close = difflib.get_close_matches(token.split("=", 1)[0], options, n=1, cutoff=0.6)
            if close:
                return f"did you mean {close[0]}?"
        elif _SETTING.match(token) and "--set" in options:
            return f"did you mean --set {token}? (a bare KEY=VALUE is not an option)"
    return None


def _add_common(parser: argparse.ArgumentParser, top: bool) -> None:
    """Options every command takes, before or after its name (`toolkit -q bench`, `toolkit bench -q`)."""
    default = 0 if top else argparse.SUPPRESS
    parser.add_argument("--version", action="version", version=f"toolkit {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="show tracebacks on errors",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default,
        help="more detail: time stamps on progress lines, every health check (repeatable)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=default,
        help="only results and errors: no progress lines or notes",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="toolkit",
        description="Provision, benchmark and health-check self-hosted GPU nodes for LLM work.",
        epilog="Exit codes: 0 ok, 1 a check failed (bench), 2 usage, settings, file or internal error, "
        "3 a host failed or was unreachable (provision, fleet runs), 130 interrupted; "
        "`toolkit health` uses the Nagios codes 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (also for every "
        'error). With --json an error is printed as {"error": {"ref": ...}}.',
    )
    _add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_common(p, top=False)
        _command_module(module).add_arguments(p)
        p.set_defaults(_module=module)
        p.usage_exit = family_of(name).error  # `toolkit health`: 3, UNKNOWN
    sub.choices["completion"].set_defaults(_root_parser=parser)  # the script is generated from this parser
    return parser


def _subparser(parser: argparse.ArgumentParser, name: str | None) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name:
            return action.choices.get(name)
    return None


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
        own = _subparser(parser, args.command) or parser
        parser.fail(f"unrecognized arguments: {' '.join(extra)}", _unrecognized_hint(own, extra))
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    debug = args.debug or os.environ.get("TOOLKIT_DEBUG") == "1"
    verbosity = args.verbose - args.quiet
    if verbosity:
        from toolkit import console  # rich: only for a command that runs, never on the --help path

        console.set_verbosity(verbosity)
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
        return _ended(exc, family, debug, watched, _nagios(args))
    except (Exception, KeyboardInterrupt) as exc:
        return _ended(exc, family, debug, watched, _nagios(args))
    finally:
        if watched:
            sys.stdout = watched._stream


def _redacted(ending: Ending) -> Ending:
    """A library's exception text may quote a secret this run knows (a BMC password, an API key)."""
    import dataclasses

    from toolkit.health.secrets import redact

    return dataclasses.replace(ending, message=redact(ending.message), hint=redact(ending.hint))


def _nagios(args: argparse.Namespace) -> bool:
    return getattr(args, "nagios", False) is True


def _ended(exc: BaseException, family, debug: bool, watched: _Watched | None, nagios: bool = False) -> int:
    ending = _redacted(ending_of(exc, family))
    try:
        if debug:
            traceback.print_exception(exc)
        report_error(ending)
    except OSError:  # stderr is gone too: the exit code still tells
        pass
    if nagios:  # a monitoring system reads stdout: UNKNOWN first, as the plugin guidelines ask
        from toolkit.health.nagios import error_text

        with contextlib.suppress(OSError):
            sys.stdout.write(error_text(ending.message, ending.hint))
            sys.stdout.flush()
    if watched and not watched.written:
        try:
            watched.write(json.dumps(ending.as_json(), indent=1) + "\n")
            watched.flush()
        except BrokenPipeError:
            _leave_quietly()
    return ending.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
