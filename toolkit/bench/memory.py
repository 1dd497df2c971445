"""Peak memory of one load: device allocator stats on a GPU, peak RSS on the CPU.

On the CPU the kernel's high-water mark (VmHWM) is reset before each load by
writing 5 to /proc/self/clear_refs, so each load gets its own peak at no
per-step cost. Where that is not allowed, the peak since process start is
reported and the record says so.
"""

from __future__ import annotations

import resource


def _status_bytes(field: str) -> int | None:
    """A kB field of /proc/self/status (VmHWM: peak RSS, VmRSS: current RSS) in bytes."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class PeakMemory:
    def __init__(self, device_type: str):
        self.device_type = device_type
        self.scope = "load"

    def reset(self) -> None:
        if self.device_type == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            return
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
            self.scope = "load"
        except OSError:
            self.scope = "process"
        self.baseline = _status_bytes("VmRSS")

    def read(self) -> dict:
        if self.device_type == "cuda":
            import torch

            torch.cuda.synchronize()
            return {
                "peak_memory_bytes": int(torch.cuda.max_memory_allocated()),
                "peak_memory_reserved_bytes": int(torch.cuda.max_memory_reserved()),
            }
        peak = _status_bytes("VmHWM")
        if peak is None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.scope = "process"
        return {"peak_memory_bytes": int(peak), "baseline_memory_bytes": self.baseline}

    @property
    def note(self) -> str:
        if self.device_type == "cuda":
            return "peak_memory_bytes: torch.cuda.max_memory_allocated during the load (reserved apart)"
        what = (
            "during the load" if self.scope == "load" else "since the process started (VmHWM reset refused)"
        )
        return (
            f"peak_memory_bytes: peak RSS of the whole process {what}, interpreter and libraries included; "
            "glibc keeps freed memory, so it can exceed live tensors by 20-40% (MALLOC_MMAP_THRESHOLD_=65536 "
            "makes RSS follow live memory, at a cost in speed)"
        )
