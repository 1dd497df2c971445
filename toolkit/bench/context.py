"""The state a run shares with its loads: device, dtype, scale, peaks, progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from toolkit.bench.settings import BenchSettings, Floor, Scale
from toolkit.catalog import GpuClass


@dataclass
class Peaks:
    """The figures expectations derive from, with where each came from."""

    flops: float | None = None
    flops_basis: str = "not known yet"
    bandwidth: float | None = None
    bandwidth_basis: str = "not known yet"

    def as_dict(self) -> dict:
        return {
            "flops": self.flops,
            "flops_basis": self.flops_basis,
            "bandwidth_bytes_per_second": self.bandwidth,
            "bandwidth_basis": self.bandwidth_basis,
        }


@dataclass
class RunContext:
    device: str  # torch device: "cpu" or "cuda"
    dtype: str  # "float32" on the CPU, the class's 16-bit tensor type on a GPU
    scale: Scale
    settings: BenchSettings
    gpu_class: str  # the class's key, or "cpu"
    spec: GpuClass | None  # its catalog entry; None on the cpu profile
    peaks: Peaks = field(default_factory=Peaks)
    progress: Callable[[int, int], None] = lambda done, total: None
    seed: int = 0
    kto_loss: str | None = None  # LLaMA-Factory pref_loss override (validated up front)
    recipes: dict = field(default_factory=dict)  # name -> Recipe of the `train:NAME` loads
    model_path: str | None = None  # --model: real weights instead of synthetic ones
    engine: str = "trl"  # --engine: the trainer of the `train:NAME` loads (trl, llamafactory)
    qdrant: object | None = None  # vector_store.QdrantTarget of --qdrant-url (preflighted); None: in-process
    # the process tree that is this run, for the competing-load observation (a rank: its launcher's)
    exclude_root: int | None = None
    observer: object | None = None  # contention.Observer of the running load

    def observe_load(self) -> None:
        """Start observing the competing load for the load that starts now (toolkit.bench.contention)."""
        from toolkit.bench.contention import Observer

        self.observer = Observer(self.device, self.exclude_root).start()

    def end_observation(self) -> dict | None:
        """The competing load observed since `observe_load`, or None when none was started."""
        observer, self.observer = self.observer, None
        return observer.stop() if observer is not None else None

    @property
    def measured_peaks(self) -> bool:
        """The cpu profile measures its peaks in the run; GPU classes take them from the catalog."""
        return self.spec is None

    def floor(self, name: str) -> tuple[float | None, Floor]:
        f = self.settings.floors[name]
        return f.get(self.floor_key[:3], self.scale.name), f

    @property
    def floor_key(self) -> str:
        return f"{'cpu' if self.measured_peaks else 'gpu'}_{self.scale.name}"

    def check(self, rec, metric: str, minimum: float | None, basis: str, floor: Floor) -> None:
        """rec.check with this run's warn ratio and the floor's calibration state."""
        rec.check(
            metric,
            minimum,
            basis,
            self.settings.warn_ratio,
            floor.basis,
            calibrated=self.floor_key not in floor.uncalibrated,
        )

    def sync(self) -> None:
        if self.device != "cpu":
            import torch

            torch.cuda.synchronize()

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)
