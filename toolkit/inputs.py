"""Files the user names (a password file, a settings file, a recipe), read with a size cap.

A named file is read at most `cap + 1` bytes, whatever it is: `/dev/zero`, a FIFO or a huge file is
refused instead of filling memory, and a pipe that never writes is given up after `wait` seconds.
The text must be UTF-8; the error names the file and the offset of the first byte that is not.
Errors are raised as the caller's kind (`UsageError` for bench, `HealthError` for health).
"""

from __future__ import annotations

import os
import select
import stat
import time

from toolkit.errors import ToolkitError, UsageError

SECRET_CAP = 64 * 1024  # a password or key file
SETTINGS_CAP = 4 * 1024 * 1024  # a settings file, a recipe, an inventory
PIPE_WAIT_S = 10.0  # a FIFO or pipe that writes nothing for this long is given up


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n >= 1024 * 1024 else f"{n // 1024} KiB"


def _read_stream(fd: int, cap: int, wait: float) -> bytes | None:
    """Up to cap + 1 bytes of a pipe, a FIFO or a device; None when it wrote nothing for `wait` s."""
    chunks, total = [], 0
    deadline = time.monotonic() + wait
    os.set_blocking(fd, False)
    while total <= cap:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        try:
            chunk = os.read(fd, min(65536, cap + 1 - total))
        except BlockingIOError:
            continue
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        deadline = time.monotonic() + wait
    return b"".join(chunks)


def _read_capped(fd: int, cap: int, regular: bool, wait: float) -> bytes | None:
    if not regular:
        return _read_stream(fd, cap, wait)
    chunks, total = [], 0
    while total <= cap:
        chunk = os.read(fd, min(1 << 20, cap + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def read_bytes(
    path, what: str, cap: int = SETTINGS_CAP, error: type[ToolkitError] = UsageError, hint: str | None = None
) -> bytes:
    """The bytes of the file the user named as `what` (e.g. "the BMC password file"), at most `cap`."""
    try:
        # O_NONBLOCK: opening a FIFO nobody writes to must not block; reads of a regular file ignore it
        fd = os.open(os.fspath(path), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise error(f"cannot read {what} {path}: {err.strerror or err}", hint=hint) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise error(f"cannot read {what} {path}: it is a folder", hint=hint)
        regular = stat.S_ISREG(mode)
        if regular:
            os.set_blocking(fd, True)
        data = _read_capped(fd, cap, regular, PIPE_WAIT_S)
    except OSError as err:
        raise error(f"cannot read {what} {path}: {err.strerror or err}", hint=hint) from None
    finally:
        os.close(fd)
    if data is None:
        raise error(
            f"{what} {path} wrote nothing for {PIPE_WAIT_S:.0f} s",
            hint=hint or "name a regular file",
        )
    if len(data) > cap:
        raise error(
            f"{what} {path} is larger than {_size(cap)}: reading stopped there",
            hint=hint or "name the right file; devices such as /dev/zero never end",
        )
    return data


def read_text(
    path, what: str, cap: int = SETTINGS_CAP, error: type[ToolkitError] = UsageError, hint: str | None = None
) -> str:
    """`read_bytes` decoded as UTF-8 (a leading byte-order mark is dropped)."""
    data = read_bytes(path, what, cap, error, hint)
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        raise error(
            f"{what} {path} is not UTF-8 text (byte {err.start}: 0x{data[err.start]:02x})",
            hint="save it as UTF-8",
        ) from None
