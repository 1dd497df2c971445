"""Subcommands whose issues have not landed yet. They say so and exit 2; they never pretend."""

from __future__ import annotations

import argparse

from toolkit.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    raise UsageError(
        f"`toolkit {args.command}` is not available yet in this version",
        hint="only `toolkit bench` and `toolkit gpus` work today; see README.md",
    )
