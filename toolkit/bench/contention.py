"""Competing load: what else used this machine while a load was measured.

A load that falls short on a machine where other work runs says nothing about the node, so before the
first load and during every load toolkit observes:

- the CPU time other processes used (psutil), excluding this process and its descendants (and, for a
  rank of a `--gpus N` run, its sibling ranks), per process, so the evidence names them;
- the machine's busy CPU time from /proc/stat less this process tree's own, which also counts what
  psutil cannot see (processes that came and went within the interval, other containers on the
  same kernel) — used only when this run may use every CPU of the machine;
- steal time (/proc/stat: a hypervisor giving this VM's CPU time to another guest);
- the 1-minute load average (recorded, not judged: it lags and counts this run itself);
- on a GPU, through NVML: other processes on the device (where NVML's pids are this machine's: in a
  container they are the host's and are only counted, as `unattributed_processes`), SM clock and
  clock-event (throttle) reasons.

The machine is **busy** when other processes used at least `BUSY_CORES_PER_CORE` (0.25) of a core per
core available to this run (0.5 core on 2 cores), or steal was at least `BUSY_STEAL` (5 %) of the
CPU time, or another process held the GPU. A load that falls short of its floor while the machine
was busy is *inconclusive*, with the evidence, never a fail (`toolkit.bench.record`); `--strict`
refuses to start on a busy machine (`refuse_if_busy`).
"""

from __future__ import annotations

import contextlib
import os
import time

from toolkit.errors import UsageError

BUSY_CORES_PER_CORE = 0.25
BUSY_STEAL = 0.05
# how long the observation before the first load lasts
PRE_RUN_SECONDS = 1.0
# processes named in the evidence (the busiest first)
NAMED = 3


def cores_available() -> int:
    """The CPUs this process may run on (its affinity; a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _proc_stat() -> tuple[float, float, float] | None:
    """(busy, steal, total) jiffies of the whole machine, or None where /proc/stat is missing."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    fields += [0.0] * (8 - len(fields))
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


def _own_tree(psutil, root: int) -> set[int]:
    pids = {root}
    with contextlib.suppress(psutil.Error):
        pids |= {p.pid for p in psutil.Process(root).children(recursive=True)}
    return pids


class _Snapshot:
    def __init__(self, psutil, exclude_root: int):
        self.at = time.monotonic()
        self.wall = time.time()
        self.stat = _proc_stat()
        self.own = _own_tree(psutil, exclude_root)
        self.procs: dict[int, tuple[str, float, float]] = {}  # pid -> (name, cpu seconds, created)
        for p in psutil.process_iter(["name", "cpu_times", "create_time"]):
            info = p.info
            times = info.get("cpu_times")
            if times is None:
                continue
            cpu = times.user + times.system
            if p.pid == exclude_root:  # with the children it waited for (a trainer run in a subprocess)
                cpu += getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)
            self.procs[p.pid] = (info.get("name") or "?", cpu, info["create_time"])


class Observer:
    """Observes competing load between `start()` and `stop()`; `stop()` returns the `contention` dict.

    `exclude_root`: the process whose tree is this run (default: this process; a rank of a `--gpus N`
    run passes its launcher's pid, so the other ranks are not counted as competing)."""

    def __init__(self, device: str = "cpu", exclude_root: int | None = None):
        self.device = device
        self.exclude_root = exclude_root or os.getpid()
        self.cores = cores_available()
        self._start: _Snapshot | None = None
        try:
            import psutil
        except ImportError:
            psutil = None
        self.psutil = psutil

    def start(self) -> Observer:
        if self.psutil is not None:
            self._start = _Snapshot(self.psutil, self.exclude_root)
        return self

    def stop(self) -> dict:
        if self.psutil is None or self._start is None:
            return {
                "busy": False,
                "evidence": "competing load not observed: psutil is not installed",
                "other_cpu_cores": None,
                "loadavg_1m": _loadavg(),
                "steal_fraction": None,
                "cores_available": self.cores,
            }
        end = _Snapshot(self.psutil, self.exclude_root)
        return _judge(self._start, end, self.cores, _gpu(self.device, end.own | self._start.own))


def _other_processes(start: _Snapshot, end: _Snapshot) -> tuple[dict[str, float], float, float]:
    """(cpu seconds per other process name, their sum, this tree's own cpu seconds) over the interval."""
    others: dict[str, float] = {}
    own = 0.0
    for pid, (name, cpu, created) in end.procs.items():
        before = start.procs.get(pid)
        if before is not None and before[2] == created:
            used = cpu - before[1]
        else:  # started within the interval: all its time is in it (one missed at the start: unknown)
            used = cpu if created >= start.wall - 1 else 0.0
        if pid in end.own or pid in start.own:
            own += max(used, 0.0)
        elif used > 0:
            others[name] = others.get(name, 0.0) + used
    return others, sum(others.values()), own


def _judge(start: _Snapshot, end: _Snapshot, cores: int, gpu: dict | None) -> dict:
    wall = max(end.at - start.at, 1e-6)
    others, other_seconds, own_seconds = _other_processes(start, end)
    per_process = other_seconds / wall
    steal = system_other = None
    if start.stat and end.stat:
        busy, stolen, total = (b - a for a, b in zip(start.stat, end.stat, strict=True))
        if total > 0:
            steal = stolen / total
            machine = os.cpu_count() or cores
            system_other = max(busy / total * machine - own_seconds / wall, 0.0)
    # /proc/stat counts the whole machine: only comparable when this run may use all of it
    whole_machine = system_other is not None and cores >= (os.cpu_count() or cores)
    other_cores = max(per_process, system_other) if whole_machine else per_process
    busy = other_cores >= BUSY_CORES_PER_CORE * cores or (steal or 0.0) >= BUSY_STEAL
    if gpu and gpu.get("other_processes"):
        busy = True
    result = {
        "busy": busy,
        "evidence": _evidence(others, wall, other_cores, steal, cores, gpu),
        "other_cpu_cores": round(other_cores, 3),
        "other_processes_cpu_cores": round(per_process, 3),
        "other_processes": {n: round(s / wall, 3) for n, s in _busiest(others)},
        "own_cpu_cores": round(own_seconds / wall, 3),
        "system_other_cpu_cores": None if system_other is None else round(system_other, 3),
        "loadavg_1m": _loadavg(),
        "steal_fraction": None if steal is None else round(steal, 4),
        "cores_available": cores,
        "interval_seconds": round(wall, 3),
        "threshold": f"busy: other processes >= {BUSY_CORES_PER_CORE:g} core per available core "
        f"({BUSY_CORES_PER_CORE * cores:g} of {cores}), or steal >= {BUSY_STEAL:.0%}, or another process "
        "on the GPU",
    }
    if gpu is not None:
        result["gpu"] = gpu
    return result


def _busiest(others: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(others.items(), key=lambda kv: -kv[1])[:NAMED]


def _evidence(others, wall, other_cores, steal, cores, gpu) -> str:
    count, per_process = len(others), sum(others.values()) / wall
    named = ", ".join(f"{n} {seconds / wall:.2f}" for n, seconds in _busiest(others))
    text = f"{count} other process{'es' if count != 1 else ''} used {per_process:.2f} core(s) of {cores}"
    if named:
        text += f" ({named})"
    if other_cores > per_process + 0.05:
        text += f"; the machine's CPU time shows {other_cores:.2f} core(s) used by others"
    if steal is not None:
        text += f"; steal {steal:.1%}"
    load = _loadavg()
    if load is not None:
        text += f"; load average {load:.2f}"
    if gpu and gpu.get("other_processes"):
        text += f"; {len(gpu['other_processes'])} other process(es) on the GPU"
    return text


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _gpu(device: str, own: set[int]) -> dict | None:
    """Other processes on the visible GPUs, their SM clocks and clock-event reasons (NVML); None on the
    CPU, {"error": ...} where NVML cannot be read."""
    if device == "cpu":
        return None
    from toolkit import nvml

    try:
        lib = nvml.init()
    except nvml.NvmlUnavailable as err:
        return {"error": str(err), "other_processes": []}
    try:
        return _read_gpus(lib, nvml, own)
    finally:
        nvml.shutdown(lib)


def _read_gpus(lib, nvml, own: set[int]) -> dict:
    """NVML reports the host's pids: in a container none of them is this process, and then the processes
    on the device cannot be told apart from this run's own (counted as `unattributed`, not as busy)."""
    seen, devices = [], []
    guard = nvml.NvmlGuard(lib)
    for index in range(guard.get("count", ("nvmlDeviceGetCount",)) or 0):
        handle = guard.get("handle", ("nvmlDeviceGetHandleByIndex", index))
        if handle is None:
            continue
        procs = guard.get("processes", ("nvmlDeviceGetComputeRunningProcesses", handle)) or []
        seen += [{"gpu": index, "pid": p.pid} for p in procs]
        clock = guard.get("sm_clock", ("nvmlDeviceGetClockInfo", handle, getattr(lib, "NVML_CLOCK_SM", 1)))
        mask = guard.get(
            "clock_events",
            ("nvmlDeviceGetCurrentClocksEventReasons", handle),
            ("nvmlDeviceGetCurrentClocksThrottleReasons", handle),
        )
        devices.append(
            {
                "index": index,
                "sm_clock_hertz": clock * 1e6 if clock is not None else None,
                "clock_event_reasons": nvml.decode_clock_events(mask) if mask is not None else None,
            }
        )
    attributable = any(p["pid"] in own for p in seen)
    others = [p for p in seen if p["pid"] not in own] if attributable else []
    return {
        "other_processes": others,
        "unattributed_processes": 0 if attributable else len(seen),
        "devices": devices,
        "errors": dict(guard.errors),
    }


def observe(seconds: float, device: str = "cpu", exclude_root: int | None = None) -> dict:
    """Observe for `seconds` (the observation before the first load) and return the contention dict."""
    observer = Observer(device, exclude_root).start()
    time.sleep(seconds)
    return observer.stop()


def refuse_if_busy(contention: dict) -> None:
    """`--strict`: a busy machine is refused before anything runs (exit 2), with the evidence."""
    if contention.get("busy"):
        raise UsageError(
            "--strict: the machine is busy, so its figures would not be the node's: "
            f"{contention['evidence']}",
            hint="stop the other work (or wait for it to end) and run again, or drop --strict to run and "
            "have the loads that fall short reported as inconclusive",
        )
