"""The `toolkit` command line.

Start-up must stay fast: this module imports only the standard library. Each
subcommand lives in `toolkit.commands.<name>` and is imported only when it runs,
so `toolkit --help` never loads torch, transformers, trl or ansible.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from toolkit import __version__
from toolkit.errors import EXIT_INTERRUPTED, EXIT_USAGE, ToolkitError

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
        epilog="Exit codes: 0 ok, 1 a check failed (bench), 2 usage or environment error, "
        "3 a host failed or was unreachable (provision, fleet runs), 130 interrupted; "
        "`toolkit health` uses the Nagios codes 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
    )
    parser.add_argument("--version", action="version", version=f"toolkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        _command_module(module).add_arguments(p)
        p.set_defaults(_module=module)
        p.usage_exit = p.get_default("_usage_exit") or EXIT_USAGE
    return parser


def _command_module(module: str):
    # Command modules import only argparse-level things at top level; their
    # heavy work is imported inside run().
    return importlib.import_module(f"toolkit.commands.{module}")


def report_error(err: ToolkitError) -> None:
    sys.stderr.write(f"toolkit: error: {err.message}\n")
    if err.hint:
        sys.stderr.write(f"  hint: {err.hint}\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser.usage_exit = getattr(args, "_usage_exit", EXIT_USAGE)
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    debug = args.debug or os.environ.get("TOOLKIT_DEBUG") == "1"
    if os.environ.pop("TOOLKIT_FLEET", None) == "1":  # run by a fleet controller, which compares versions
        sys.stderr.write(f"toolkit-fleet: version {__version__}\n")
        sys.stderr.flush()
    try:
        return int(_command_module(args._module).run(args) or 0)
    except ToolkitError as err:
        if debug:
            traceback.print_exc()
        report_error(err)
        return err.exit_code
    except BrokenPipeError:
        # `toolkit gpus | head`: the reader went away; not an error of ours.
        sys.stderr.close()
        return 0
    except OSError as err:  # a result or report that cannot be written: say which, keep the exit contract
        if debug:
            traceback.print_exc()
        where = f" {err.filename}" if err.filename else ""
        report_error(ToolkitError(f"cannot write{where}: {err.strerror or err}"))
        return EXIT_USAGE
    except KeyboardInterrupt:
        if debug:
            raise
        sys.stderr.write("toolkit: interrupted\n")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
