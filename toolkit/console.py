"""Rich consoles for results (stdout) and progress/errors (stderr).

Imported only by commands that print tables, never on the `--help` path. Rich
already honours NO_COLOR and plain output when the stream is not a terminal.
"""

from __future__ import annotations

import errno
import os
import time

from rich.console import Console
from rich.text import Text

from toolkit.glossary import Tone, tone_of

TONE_STYLE = {
    Tone.GOOD: "green",
    Tone.WARN: "yellow",
    Tone.BAD: "red",
    Tone.SEVERE: "red bold",
    Tone.UNKNOWN: "magenta",
    Tone.STOPPED: "yellow bold",
    Tone.QUIET: "dim",
}


def style_of(word: str | None) -> str:
    """The terminal style of a status word of any family (glossary.TONE_OF); "" for other words."""
    tone = tone_of(word)
    return TONE_STYLE[tone] if tone else ""


# -1 with -q (results and errors only), 0 by default, 1+ with -v (time stamps on progress lines, every
# detail); set once by the CLI from -v/-q before the command runs.
verbosity = 0
_STARTED = time.monotonic()
_KEPT_WHEN_QUIET = ("toolkit: error", "hint:", "toolkit: warning")


def set_verbosity(level: int) -> None:
    global verbosity
    verbosity = level


class _Console(Console):
    def print(self, *objects, **kwargs) -> None:
        """On stderr a line of progress or a note (text, not a table) is left out with -q, unless it is an
        error or its hint, and carries the seconds since start with -v."""
        if self.stderr and verbosity and objects and isinstance(objects[0], (str, Text)):
            if verbosity < 0:
                plain = objects[0].plain if isinstance(objects[0], Text) else objects[0]
                if not plain.lstrip().startswith(_KEPT_WHEN_QUIET):
                    return
            else:
                stamp = Text(f"[+{time.monotonic() - _STARTED:.1f}s] ", style="dim")
                first = objects[0] if isinstance(objects[0], Text) else Text.from_markup(objects[0])
                objects = (Text.assemble(stamp, first), *objects[1:])
        super().print(*objects, **kwargs)

    def on_broken_pipe(self) -> None:
        """The reader went away (`toolkit gpus | head`): stop writing and let the CLI boundary decide,
        instead of rich's exit 1."""
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "the reader of the output went away")


PIPE_WIDTH = 80  # a stream that is not a terminal, unless COLUMNS says otherwise


def _console(stderr: bool) -> Console:
    """A terminal's console follows the terminal's real width; a piped or logged stream is 80 columns
    wide unless COLUMNS says otherwise (rich would read the width of whatever terminal stdin or the other
    stream is attached to). Tables fit the width they get (bench/report.py); a message that must stay on
    one line is printed with soft_wrap."""
    console = _Console(stderr=stderr)
    columns = os.environ.get("COLUMNS", "")
    if not console.is_terminal and not (columns.isdigit() and int(columns) > 0):
        console.width = PIPE_WIDTH
    return console


def load_progress(console: Console):
    """The progress bar of the running load (single runs and the `--gpus N` launcher alike); nothing when
    the console is not a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal or verbosity < 0,
    )


out = _console(stderr=False)
err = _console(stderr=True)
