"""`toolkit completion bash|zsh`: a shell completion script generated from the command line's own parser.

Nothing is hand-written per option: the commands, their options and every option's choices are read from
the argparse parser `toolkit` itself parses with, so the script cannot drift from the command line. GPU
classes, shipped recipes and load names are added to the options that take them. The zsh script is the
bash one under zsh's `bashcompinit`.

    source <(toolkit completion bash)          # or: toolkit completion bash > /etc/bash_completion.d/toolkit
    source <(toolkit completion zsh)           # in ~/.zshrc
"""

from __future__ import annotations

import argparse
import shlex
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=("bash", "zsh"), help="the shell to print the script for")


def run(args: argparse.Namespace) -> int:
    script = bash_script(args._root_parser)
    if args.shell == "zsh":
        script = "autoload -U +X compinit && compinit\nautoload -U +X bashcompinit && bashcompinit\n" + script
    sys.stdout.write(script)
    return 0


def _names() -> dict[str, list[str]]:
    """Values of options whose argparse declaration has no `choices`: the catalog's classes, the shipped
    recipes, the loads (by the option's dest)."""
    names: dict[str, list[str]] = {}
    try:
        from toolkit.catalog import load_catalog

        names["profile"] = load_catalog().profiles
    except Exception:  # a broken data file must not break the shell's start-up script
        pass
    try:
        from toolkit.bench.recipes import shipped

        names["recipes"] = sorted(shipped())
    except Exception:
        pass
    from toolkit.bench.workloads import DISTRIBUTED_WORKLOADS, WORKLOADS

    names["workloads"] = [*WORKLOADS, *DISTRIBUTED_WORKLOADS]
    return names


def _commands(root: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _visible(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.help is not argparse.SUPPRESS]


def _case_values(parser: argparse.ArgumentParser, names: dict[str, list[str]]) -> list[str]:
    """One bash `case` arm per option that takes a value: its choices, or nothing (files: bash's own)."""
    arms = []
    for action in _visible(parser):
        if action.nargs == 0:
            continue
        words = [str(c) for c in action.choices] if action.choices else names.get(action.dest, [])
        pattern = "|".join(action.option_strings)
        if words:
            listed = shlex.quote(" ".join(words))
            arms.append(f'      {pattern}) COMPREPLY=($(compgen -W {listed} -- "$cur")); return;;')
        else:  # a path, a number, a URL: bash completes file names (complete -o default)
            arms.append(f"      {pattern}) return;;")
    return arms


def bash_script(root: argparse.ArgumentParser) -> str:
    names = _names()
    commands = _commands(root)
    top = " ".join([*(s for a in _visible(root) for s in a.option_strings), *commands])
    lines = [
        "# toolkit completion for bash, generated from its parser by `toolkit completion bash`",
        "_toolkit() {",
        '  local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" cmd="" word',
        '  for word in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do',
        '    case "$word" in',
        f'      {"|".join(commands)}) cmd="$word"; break;;',
        "    esac",
        "  done",
        "  COMPREPLY=()",
        '  case "$cmd" in',
    ]
    for name, parser in commands.items():
        options = " ".join(s for a in _visible(parser) for s in a.option_strings)
        positional = [a for a in parser._actions if not a.option_strings and a.choices]
        words = " ".join([options, *(str(c) for a in positional for c in a.choices)])
        lines += [f"    {name})", '    case "$prev" in', *_case_values(parser, names), "    esac"]
        lines += [f'    COMPREPLY=($(compgen -W {shlex.quote(words)} -- "$cur"));;']
    lines += [
        f'    *) COMPREPLY=($(compgen -W {shlex.quote(top)} -- "$cur"));;',
        "  esac",
        "}",
        "complete -o default -F _toolkit toolkit",
        "",
    ]
    return "\n".join(lines)
