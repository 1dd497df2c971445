"""System checks: free space of the data folders, memory, load, and the kernel command line against
what the `grub` role set (its drop-in records the parameters on a `# toolkit_cmdline="..."` line)."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from toolkit.health.collector import Context
from toolkit.health.model import CollectorResult, Status

GRUB_DROPIN = "/etc/default/grub.d/90-toolkit.cfg"
REBOOT_REQUIRED = "/var/run/reboot-required"


def _level(value: float, warning: float, critical: float, higher_is_worse: bool = True) -> Status:
    if higher_is_worse:
        return Status.CRITICAL if value >= critical else Status.WARNING if value >= warning else Status.OK
    return Status.CRITICAL if value <= critical else Status.WARNING if value <= warning else Status.OK


def expected_cmdline(dropin: str = GRUB_DROPIN) -> list[str] | None:
    try:
        text = Path(dropin).read_text()
    except OSError:
        return None
    match = re.search(r'^# toolkit_cmdline="([^"]*)"', text, re.M)
    return shlex.split(match.group(1)) if match else None


def collect(cfg: dict) -> CollectorResult:
    import psutil

    result = CollectorResult("system")
    disk_warn = float(cfg.get("disk_warning_percent", 85))
    disk_crit = float(cfg.get("disk_critical_percent", 95))
    for folder in cfg.get("data_dirs") or ["/"]:
        try:
            usage = psutil.disk_usage(folder)
        except OSError as err:
            result.add(
                f"system.disk.{folder}",
                Status.CRITICAL,
                None,
                None,
                f"{folder}: {err.strerror or err}",
                None,
                path=folder,
            )
            continue
        status = _level(usage.percent, disk_warn, disk_crit)
        result.add(
            f"system.disk.{folder}",
            status,
            usage.free,
            "bytes",
            f"{usage.percent:.1f}% used, {usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.1f} GiB "
            f"(warning at {disk_warn:g}%, critical at {disk_crit:g}%)",
            "toolkit_filesystem_free_bytes",
            path=folder,
        )
    mem = psutil.virtual_memory()
    avail_pct = 100.0 * mem.available / mem.total
    result.add(
        "system.memory",
        _level(
            avail_pct,
            float(cfg.get("memory_warning_available_percent", 10)),
            float(cfg.get("memory_critical_available_percent", 5)),
            False,
        ),
        mem.available,
        "bytes",
        f"{avail_pct:.1f}% available ({mem.available / 2**30:.1f} of {mem.total / 2**30:.1f} GiB)",
        "toolkit_memory_available_bytes",
    )
    load1, _, _ = os.getloadavg()
    cpus = os.cpu_count() or 1
    per_cpu = load1 / cpus
    result.add(
        "system.load",
        _level(
            per_cpu, float(cfg.get("load_warning_per_cpu", 2.0)), float(cfg.get("load_critical_per_cpu", 4.0))
        ),
        round(load1, 2),
        None,
        f"1-minute load {load1:.2f} on {cpus} CPUs ({per_cpu:.2f} per CPU)",
        "toolkit_load1",
    )
    _cmdline_check(result, cfg)
    return result


class SystemCollector:
    name = "system"

    def collect(self, ctx: Context) -> CollectorResult:
        return collect(ctx.config.get("system") or {})


def _cmdline_check(result: CollectorResult, cfg: dict) -> None:
    wanted = cfg.get("kernel_cmdline")
    source = "configuration"
    if wanted is None:
        wanted, source = expected_cmdline(cfg.get("grub_dropin", GRUB_DROPIN)), "the grub role's drop-in"
    if not wanted:
        return
    running = Path(cfg.get("proc_cmdline", "/proc/cmdline")).read_text().split()
    missing = [p for p in wanted if p not in running]
    if not missing:
        result.add(
            "system.kernel_cmdline",
            Status.OK,
            len(wanted),
            "parameters",
            f"all {len(wanted)} parameters set by {source} are active",
        )
        return
    pending = os.path.exists(cfg.get("reboot_required_file", REBOOT_REQUIRED))
    detail = f"not active: {' '.join(missing)} (wanted by {source})"
    detail += "; a reboot is pending (toolkit provision --reboot)" if pending else "; reboot to apply"
    result.add("system.kernel_cmdline", Status.WARNING, len(missing), "missing", detail)
