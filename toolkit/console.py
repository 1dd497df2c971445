"""Rich consoles for results (stdout) and progress/errors (stderr).

Imported only by commands that print tables, never on the `--help` path. Rich
already honours NO_COLOR and plain output when the stream is not a terminal.
"""

from __future__ import annotations

import errno
import os

from rich.console import Console

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


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader went away (`toolkit gpus | head`): stop writing and let the CLI boundary decide,
        instead of rich's exit 1."""
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "the reader of the output went away")


def _console(stderr: bool) -> Console:
    console = _Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = max(console.width, 140)  # logs and pipes: keep table rows on one line
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
        disable=not console.is_terminal,
    )


out = _console(stderr=False)
err = _console(stderr=True)
