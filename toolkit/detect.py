"""Which accelerator this machine has: NVIDIA through NVML, AMD through amdsmi or
rocm-smi, else the CPU. Never imports torch: `toolkit gpus` and the profile check
before a benchmark must stay fast.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field


@dataclass
class Device:
    name: str
    vendor: str  # nvidia | amd
    index: int
    memory_total_bytes: int | None = None
    driver_version: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Detection:
    vendor: str  # nvidia | amd | cpu
    devices: list[Device]
    via: str  # nvml | amdsmi | rocm-smi | none
    notes: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        if not self.devices:
            return f"no GPU ({cpu_model()})"
        names = sorted({d.name for d in self.devices})
        return f"{len(self.devices)} x {' / '.join(names)} (via {self.via})"

    def as_dict(self) -> dict:
        return {
            "vendor": self.vendor,
            "via": self.via,
            "devices": [asdict(d) for d in self.devices],
            "notes": self.notes,
        }


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def detect_nvidia(notes: list[str]) -> list[Device]:
    try:
        import pynvml
    except ImportError:
        notes.append("nvidia-ml-py is not installed: NVIDIA GPUs cannot be seen")
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:  # no driver / no library: the common CPU case
        notes.append(f"NVML unavailable: {err}")
        return []

    def read(what: str, fn, *args):
        # one unsupported query (vGPU, a GPU fallen off the bus) must not hide the others
        try:
            return fn(*args)
        except pynvml.NVMLError as err:
            notes.append(f"NVML {what}: {err}")
            return None

    try:
        driver = read("driver version", pynvml.nvmlSystemGetDriverVersion)
        cuda = read("CUDA driver version", pynvml.nvmlSystemGetCudaDriverVersion_v2)
        devices = []
        for i in range(read("device count", pynvml.nvmlDeviceGetCount) or 0):
            h = read(f"device {i}", pynvml.nvmlDeviceGetHandleByIndex, i)
            if h is None:
                continue
            name = read(f"device {i} name", pynvml.nvmlDeviceGetName, h)
            mem = read(f"device {i} memory", pynvml.nvmlDeviceGetMemoryInfo, h)
            devices.append(
                Device(
                    name=_text(name) if name is not None else f"NVIDIA GPU {i} (name unavailable)",
                    vendor="nvidia",
                    index=i,
                    memory_total_bytes=int(mem.total) if mem is not None else None,
                    driver_version=_text(driver) if driver is not None else None,
                    extra={"cuda_driver_version": f"{cuda // 1000}.{cuda % 1000 // 10}"} if cuda else {},
                )
            )
        return devices
    finally:
        pynvml.nvmlShutdown()


def detect_amd(notes: list[str]) -> tuple[list[Device], str]:
    try:
        import amdsmi  # shipped with ROCm, not on PyPI
    except ImportError:
        amdsmi = None
    if amdsmi is not None:
        try:
            amdsmi.amdsmi_init()
            try:
                devices = []
                for i, h in enumerate(amdsmi.amdsmi_get_processor_handles()):
                    info = amdsmi.amdsmi_get_gpu_asic_info(h)
                    vram = amdsmi.amdsmi_get_gpu_vram_info(h)
                    devices.append(
                        Device(
                            name=str(info.get("market_name", "AMD GPU")),
                            vendor="amd",
                            index=i,
                            memory_total_bytes=int(vram.get("vram_size", 0)) * 1024 * 1024 or None,
                        )
                    )
                return devices, "amdsmi"
            finally:
                amdsmi.amdsmi_shut_down()
        except Exception as err:  # amdsmi raises its own exception types
            notes.append(f"amdsmi failed: {err}")
    rocm_smi = shutil.which("rocm-smi")
    if rocm_smi:
        try:
            out = subprocess.run(
                [rocm_smi, "--showproductname", "--json"],
                capture_output=True,
                text=True,
                timeout=15,
                check=True,
            ).stdout
            cards = json.loads(out)
        except (subprocess.SubprocessError, OSError, ValueError) as err:
            notes.append(f"rocm-smi failed: {err}")
            return [], "rocm-smi"
        devices = [
            Device(name=str(v.get("Card Series") or v.get("Card series") or "AMD GPU"), vendor="amd", index=i)
            for i, (k, v) in enumerate(sorted(cards.items()))
            if k.startswith("card")
        ]
        return devices, "rocm-smi"
    return [], "none"


def detect() -> Detection:
    """Probe NVIDIA first, then AMD; `TOOLKIT_FORCE_CPU=1` skips both."""
    notes: list[str] = []
    if os.environ.get("TOOLKIT_FORCE_CPU") == "1":
        return Detection("cpu", [], "none", ["TOOLKIT_FORCE_CPU=1"])
    nv = detect_nvidia(notes)
    if nv:
        return Detection("nvidia", nv, "nvml", notes)
    amd, via = detect_amd(notes)
    if amd:
        return Detection("amd", amd, via, notes)
    return Detection("cpu", [], "none", notes)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
