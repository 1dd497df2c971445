"""NVIDIA XID events: the driver's error reports (`NVRM: Xid (PCI:0000:19:00): 48, ...`) read from the
kernel log, with what each common XID means and what an operator does about it.

Where the events come from: a health run is one short process, and an NVML event set only delivers
events that happen while it is registered, so it would miss everything between two runs. The kernel log
keeps them: `journalctl -k -b` (this boot) where systemd's journal is readable, else the kernel's ring
buffer through `/dev/kmsg`. Which events are new is decided against the mark the last run left in the
GPU state file (`gpu_nvidia_state`): events up to that mark were reported then and are not alerted again.

`parse_kernel_log()` reads every form a kernel log reaches an operator in: `dmesg` (`[  12.345678]`),
`dmesg -T` (`[Sun Feb 23 16:24:18 2025]`), `dmesg --time-format iso` with or without `--decode`,
`journalctl -k` (short and short-iso) and `/dev/kmsg` records (`4,1234,5678901,-;NVRM: ...`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from toolkit.glossary import Status

# code -> (meaning, status of a new event, what to do), after NVIDIA's XID catalogue
XID_TABLE: dict[int, tuple[str, Status, str]] = {
    8: (
        "GPU stopped processing (timeout)",
        Status.WARNING,
        "check the application; reset the GPU if it repeats",
    ),
    13: (
        "graphics engine exception",
        Status.OK,
        "usually the application (out-of-range access); hardware only if it repeats across jobs",
    ),
    31: (
        "GPU memory page fault",
        Status.OK,
        "usually the application (illegal address); hardware only if it repeats across jobs",
    ),
    32: (
        "invalid or corrupted push buffer stream",
        Status.WARNING,
        "driver or PCIe trouble; check the PCIe link",
    ),
    38: ("driver firmware error", Status.WARNING, "update the driver; reset the GPU if it repeats"),
    43: (
        "GPU stopped processing (application fault)",
        Status.OK,
        "the job was stopped; the GPU keeps running",
    ),
    45: ("preemptive cleanup after earlier errors", Status.OK, "follows another XID; look at that one"),
    48: (
        "double-bit ECC error (uncorrectable)",
        Status.CRITICAL,
        "drain the GPU and reset it; replace it if it repeats",
    ),
    61: ("internal micro-controller warning", Status.WARNING, "reset the GPU if it repeats"),
    62: ("internal micro-controller halt", Status.CRITICAL, "drain the GPU and reset it"),
    63: ("row remap / page retirement recorded", Status.WARNING, "reset the GPU to activate the remap"),
    64: (
        "row remap / page retirement recording failed",
        Status.CRITICAL,
        "drain the GPU and reset it; replace it if it repeats",
    ),
    68: ("video decoder exception", Status.WARNING, "reset the GPU if it repeats"),
    69: ("graphics engine class error", Status.WARNING, "reset the GPU if it repeats"),
    74: ("NVLink error", Status.CRITICAL, "check the NVLink/NVSwitch links; reset the GPU"),
    79: (
        "GPU has fallen off the bus",
        Status.CRITICAL,
        "the GPU is gone: reboot; check power, cooling, the riser and the slot",
    ),
    92: ("high single-bit ECC error rate", Status.WARNING, "watch the ECC counters; plan a replacement"),
    94: (
        "contained ECC error",
        Status.WARNING,
        "the affected job was stopped; reset the GPU when it is drained",
    ),
    95: (
        "uncontained ECC error",
        Status.CRITICAL,
        "every job on the GPU is affected: drain the GPU and reset it",
    ),
    109: ("context switch timeout", Status.WARNING, "check the application; reset the GPU if it repeats"),
    119: (
        "GSP firmware RPC timeout",
        Status.CRITICAL,
        "reset the GPU (or reboot); update the driver if it repeats",
    ),
    120: (
        "GSP firmware error",
        Status.CRITICAL,
        "reset the GPU (or reboot); update the driver if it repeats",
    ),
    121: ("C2C link error", Status.WARNING, "watch for repeats; reset the GPU"),
    140: ("unrecovered ECC error", Status.CRITICAL, "drain the GPU and reset it"),
    143: ("GPU initialisation failure", Status.CRITICAL, "reset the GPU or reboot"),
    154: (
        "the driver changed the GPU's recovery action",
        Status.WARNING,
        "follow the recovery action the GPU reports",
    ),
}
UNKNOWN_XID = ("not in toolkit's table", Status.WARNING, "look the code up in NVIDIA's XID catalogue")

_XID = re.compile(
    r"NVRM: Xid \((?:PCI:)?([0-9a-fA-F]+:[0-9a-fA-F]+:[0-9a-fA-F]+)(?:\.\d+)?\):?\s*(\d+),\s*(.*)$"
)
_ISO = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:[.,](\d+))?([+-]\d\d:?\d\d|Z)?")
_CTIME = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]")
_KMSG = re.compile(r"^\d+,(\d+),(\d+),[^;]*;")
_MONO = re.compile(r"^\[\s*(\d+\.\d+)\]")


@dataclass
class XidEvent:
    code: int
    pci: str  # "0000:19:00", the form the driver prints (domain:bus:device)
    detail: str
    time: str | None  # ISO 8601 when the log line has a wall-clock time
    key: str  # what makes this event itself: its time (or record number) and text

    def to_json(self) -> dict:
        return asdict(self)


def meaning(code: int) -> tuple[str, Status, str]:
    return XID_TABLE.get(code, UNKNOWN_XID)


def pci_key(bus_id: str | None) -> str | None:
    """One spelling for the driver's `0000:19:00` and NVML's `00000000:19:00.0`."""
    if not bus_id:
        return None
    parts = bus_id.split(".")[0].split(":")
    if len(parts) != 3:
        return None
    try:
        domain, bus, device = (int(p, 16) for p in parts)
    except ValueError:
        return None
    return f"{domain:04x}:{bus:02x}:{device:02x}"


def _line_time(line: str, boot_epoch: float | None) -> str | None:
    iso = _ISO.search(line[:48])
    if iso:
        stamp = iso.group(1) + (f".{iso.group(2)[:6]}" if iso.group(2) else "")
        zone = (iso.group(3) or "").replace("Z", "+00:00")
        if zone and ":" not in zone:
            zone = f"{zone[:3]}:{zone[3:]}"
        return stamp + zone
    ctime = _CTIME.match(line)
    if ctime:
        return datetime.strptime(ctime.group(1), "%a %b %d %H:%M:%S %Y").isoformat()
    kmsg = _KMSG.match(line)
    mono = float(kmsg.group(2)) / 1e6 if kmsg else None
    if mono is None and (m := _MONO.match(line)):
        mono = float(m.group(1))
    if mono is not None and boot_epoch is not None:
        return datetime.fromtimestamp(boot_epoch + mono, UTC).isoformat(timespec="microseconds")
    return None


def parse_kernel_log(text: str, boot_epoch: float | None = None) -> list[XidEvent]:
    """Every XID line of a kernel log, in log order. `boot_epoch` turns seconds-since-boot into times."""
    events = []
    for number, line in enumerate(text.splitlines()):
        match = _XID.search(line)
        if not match:
            continue
        pci, code, detail = match.groups()
        stamp = _line_time(line, boot_epoch)
        kmsg = _KMSG.match(line)
        mark = f"seq {kmsg.group(1)}" if kmsg else (stamp or f"line {number}")
        events.append(
            XidEvent(int(code), pci_key(pci) or pci, detail.strip(), stamp, f"{mark} {code} {detail.strip()}")
        )
    return events


def new_since(events: list[dict], last_key: str | None) -> list[dict]:
    """The events (as JSON) after the one the last run saw last; all of them when that one is no longer
    in the log (rotated away, or another boot)."""
    if last_key is None:
        return events
    for i in range(len(events) - 1, -1, -1):
        if events[i].get("key") == last_key:
            return events[i + 1 :]
    return events


def boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _boot_epoch() -> float | None:
    try:
        with open("/proc/uptime") as f:
            return time.time() - float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_kmsg(path: str = "/dev/kmsg", limit: int = 200_000) -> str:
    """The kernel ring buffer, record by record, without waiting for new records."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    lines = []
    try:
        for _ in range(limit):
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:  # a record was overwritten while reading: skip on
                continue
            if not record:
                break
            lines.append(record.decode(errors="replace").splitlines()[0])
    finally:
        os.close(fd)
    return "\n".join(lines)


def read_kernel_xids(timeout: float = 10.0) -> dict:
    """{"source", "events", "error"} for this boot: journalctl first, then /dev/kmsg."""
    errors = []
    journalctl = shutil.which("journalctl")
    if journalctl:
        try:
            done = subprocess.run(
                [journalctl, "-k", "-b", "--no-pager", "-q", "-o", "short-iso-precise"],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            if done.returncode == 0 and done.stdout.strip():
                events = parse_kernel_log(done.stdout)
                return {"source": "journalctl", "events": [e.to_json() for e in events], "error": None}
            errors.append(
                f"journalctl: {(done.stderr.strip() or 'no kernel messages this boot').splitlines()[0]}"
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            errors.append(f"journalctl: {type(err).__name__}")
    try:
        events = parse_kernel_log(_read_kmsg(), _boot_epoch())
        return {"source": "/dev/kmsg", "events": [e.to_json() for e in events], "error": None}
    except OSError as err:
        errors.append(f"/dev/kmsg: {err.strerror or err}")
    return {"source": None, "events": [], "error": "; ".join(errors) or "no kernel log reader"}
