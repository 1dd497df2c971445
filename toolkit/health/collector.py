"""The one shape every health collector has, so that `toolkit.health.run` reads a registered list of them
through one loop instead of naming each: a new source is a new entry in that list, not a new branch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from toolkit.health.model import CollectorResult


@dataclass
class Options:
    bmc_url: str | None = None
    bmc_password_file: str | None = None
    bmc_insecure: bool = False
    bmc_timeout: float | None = None
    bmc_tool: str | None = None  # None: the settings file's bmc.tool, else auto
    expect_gpus: int | None = None
    qdrant_url: str | None = None  # else the settings file's qdrant.url; the API key never comes from here
    serving_url: str | None = None  # else the settings file's serving.url; likewise no key from here
    skip: set[str] = field(default_factory=set)
    config: dict = field(default_factory=dict)


@dataclass
class Context:
    """What a collector reads besides its own source: the run's options and settings, and the sections
    read before it (whether this node has NVIDIA GPUs changes the Docker and Qdrant rules)."""

    opts: Options
    sections: dict[str, CollectorResult] = field(default_factory=dict)

    @property
    def config(self) -> dict:
        return self.opts.config

    def nvidia_gpus(self) -> bool | None:
        """None when the GPU section was not read (`--skip gpu`): then nobody knows."""
        gpu = self.sections.get("gpu")
        if gpu is None:
            return None
        return any(c.name.startswith("gpu") and c.name.endswith(".temperature") for c in gpu.checks)


class Collector(Protocol):
    name: str  # the report section, and the word `--skip` takes

    def collect(self, ctx: Context) -> CollectorResult:
        """The section. The run turns a crash into an UNKNOWN check of this section alone."""
        ...


@runtime_checkable
class NetworkCollector(Collector, Protocol):
    """A read that waits on the network (a BMC, Qdrant). The run starts it in a daemon thread before the
    local collectors and takes its section after them, so its deadline is not added to their time."""

    def prepare(self, ctx: Context) -> bool:
        """Whether there is anything to read. Bad settings raise here, in the main thread, before any
        collector runs, so the run stops with their message (exit 3)."""
        ...

    def deadline(self) -> float | None:
        """Seconds the run waits for the thread before leaving it behind; None: until it ends."""
        ...

    def settle(self, ctx: Context, result: CollectorResult | None, waited: float) -> CollectorResult | None:
        """The section from what the thread returned (None: it did not come back in time), judged with
        what the local collectors found. None leaves the section out of the report."""
        ...


@dataclass
class FirstUp:
    """One section that more than one source can fill (NVIDIA GPUs, else AMD ones): the first source that
    is up, else the first source's result, which says why none is."""

    name: str
    sources: tuple[Collector, ...]

    def collect(self, ctx: Context) -> CollectorResult:
        down = []
        for source in self.sources:
            result = source.collect(ctx)
            if result.up:
                return result
            down.append(result)
        return down[0]
