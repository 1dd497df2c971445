"""Atomic file writes: a temp file in the target's folder, fsync, then rename.

A reader never sees a half-written report, and an interrupted write leaves the
previous version in place.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def check_writable(folder: str | os.PathLike, hint: str) -> None:
    """Find out before the work, not after it, that results cannot be written to `folder` (exit 2)."""
    from toolkit.errors import UsageError

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise UsageError(f"cannot write results to {folder}: {err.strerror or err}", hint=hint) from None


def write_text_atomic(path: str | os.PathLike, text: str, mode: int = 0o644) -> Path:
    """Write `text` to `path` or leave the previous version in place. A failure (a full disk fails on
    the write, with no file named) is raised as an OSError that names `path`, not the temp file."""
    target = Path(path)
    try:
        return _write(target, text, mode)
    except OSError as err:
        raise OSError(err.errno, err.strerror or str(err), str(target)) from err


def _write(target: Path, text: str, mode: int) -> Path:
    tmp = _complete_temp(target.parent, target.name, text, mode)
    try:
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def write_text_new(folder: Path, stem: str, text: str, mode: int = 0o644, suffix: str = ".json") -> Path:
    """Write `text` to `stem.json`, or `stem-2.json`, `stem-3.json` ... when taken, never replacing a file:
    the complete file appears at once (a temp file hard-linked in, which fails rather than replace).
    FileExistsError when no name is free."""
    tmp = _complete_temp(folder, stem, text, mode)
    try:
        for n in range(1, 10000):
            path = folder / (f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}")
            try:
                os.link(tmp, path)
                return path
            except FileExistsError:
                continue
        raise FileExistsError(f"no free name for {stem} in {folder}")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _complete_temp(folder: Path, name: str, text: str, mode: int) -> str:
    """A temp file in `folder` holding all of `text`, synced to disk, with `mode`."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp
