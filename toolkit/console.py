"""Rich consoles for results (stdout) and progress/errors (stderr).

Imported only by commands that print tables, never on the `--help` path. Rich
already honours NO_COLOR and plain output when the stream is not a terminal.
"""

from __future__ import annotations

import os

from rich.console import Console


def _console(stderr: bool) -> Console:
    console = Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = max(console.width, 140)  # logs and pipes: keep table rows on one line
    return console


out = _console(stderr=False)
err = _console(stderr=True)
