"""The GPU catalog: GPU classes and their peak figures, read from `data/gpus.toml`.

The figures live in a data file, not in code, so a user can read where each one
comes from (`source`) and whether a vendor datasheet backs it (`verified`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache

from toolkit.errors import UsageError
from toolkit.resources import data_text

CPU_PROFILE = "cpu"
FIGURES = (
    "memory_bytes",
    "memory_bandwidth_bytes_per_second",
    "fp32_flops",
    "bf16_tensor_flops",
    "fp16_tensor_flops",
    "tdp_watts",
)


@dataclass(frozen=True)
class Figure:
    value: float | None
    source: str
    verified: bool

    def as_dict(self) -> dict:
        return {"value": self.value, "source": self.source, "verified": self.verified}


@dataclass(frozen=True)
class GpuClass:
    key: str
    name: str
    vendor: str
    architecture: str
    figures: dict[str, Figure]
    device_names: tuple[str, ...] = ()
    notes: str = ""

    def value(self, figure: str) -> float | None:
        f = self.figures.get(figure)
        return f.value if f else None

    @property
    def tensor_dtype(self) -> str:
        """The 16-bit type the loads use: bf16 where the class has it, else fp16."""
        return "bfloat16" if self.value("bf16_tensor_flops") else "float16"

    @property
    def tensor_flops(self) -> float | None:
        return self.value("bf16_tensor_flops") or self.value("fp16_tensor_flops")

    def as_dict(self) -> dict:
        return {
            "class": self.key,
            "name": self.name,
            "vendor": self.vendor,
            "architecture": self.architecture,
            "device_names": list(self.device_names),
            "notes": self.notes,
            "figures": {k: f.as_dict() for k, f in self.figures.items()},
        }


@dataclass(frozen=True)
class Catalog:
    classes: dict[str, GpuClass]
    cpu: dict = field(default_factory=dict)

    @property
    def profiles(self) -> list[str]:
        return [*self.classes, CPU_PROFILE]

    def get(self, key: str) -> GpuClass:
        try:
            return self.classes[key.lower()]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(key.lower(), self.profiles, n=1, cutoff=0.5)
            raise UsageError(
                f"unknown profile {key!r}",
                hint=(f"did you mean {close[0]!r}? " if close else "")
                + "known profiles: "
                + ", ".join(self.profiles)
                + " (see `toolkit gpus`)",
            ) from None

    def match_device(self, device_name: str) -> GpuClass | None:
        """The class whose NVML / AMD SMI names include `device_name` (case-insensitive)."""
        wanted = " ".join(device_name.lower().split())
        for cls in self.classes.values():
            if any(wanted == n.lower() for n in cls.device_names):
                return cls
        return None


def _figure(raw) -> Figure:
    if not isinstance(raw, dict) or "source" not in raw or "verified" not in raw:
        raise ValueError(f"figure must be a table with source and verified: {raw!r}")
    value = raw.get("value")
    return Figure(float(value) if value is not None else None, str(raw["source"]), bool(raw["verified"]))


def parse_catalog(text: str) -> Catalog:
    data = tomllib.loads(text)
    classes = {}
    for key, raw in data.get("classes", {}).items():
        missing = [f for f in FIGURES if f not in raw]
        if missing:
            raise ValueError(f"GPU class {key!r} lacks {', '.join(missing)}")
        classes[key] = GpuClass(
            key=key,
            name=raw["name"],
            vendor=raw["vendor"],
            architecture=raw.get("architecture", ""),
            figures={f: _figure(raw[f]) for f in FIGURES},
            device_names=tuple(raw.get("nvml_names", []) + raw.get("amdsmi_names", [])),
            notes=raw.get("notes", ""),
        )
    return Catalog(classes=classes, cpu=data.get("cpu", {}))


@cache
def load_catalog() -> Catalog:
    text = data_text("gpus.toml")
    return parse_catalog(text)
