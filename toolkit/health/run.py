"""One health run: pick the collectors from options and configuration, run each under its own guard,
and assemble the report. Used by `toolkit health` and by the scheduled service alike."""

from __future__ import annotations

import math
import socket
import threading
import time

from toolkit.glossary import utc_now
from toolkit.health.collector import Collector, Context, FirstUp, NetworkCollector, Options
from toolkit.health.model import CollectorResult, Report, timed


def _collectors() -> list[Collector]:
    """Every collector, in report order, fresh for each run. Imported here, when a run starts, so that
    `--help` does not pay for them."""
    from toolkit.health.bmc.collector import BmcCollector
    from toolkit.health.collectors.docker import DockerCollector
    from toolkit.health.collectors.gpu_amd import AmdCollector
    from toolkit.health.collectors.gpu_nvidia import NvidiaCollector
    from toolkit.health.collectors.qdrant import QdrantCollector
    from toolkit.health.collectors.serving import ServingCollector
    from toolkit.health.collectors.system import SystemCollector

    return [
        FirstUp("gpu", (NvidiaCollector(), AmdCollector())),
        BmcCollector(),
        DockerCollector(),
        SystemCollector(),
        QdrantCollector(),
        ServingCollector(),
    ]


class _Background:
    """A network read in a daemon thread: it never holds up Ctrl-C or the process exit, and one stuck in
    the network (a peer that drips bytes, a slow resolver) is left behind at its deadline, not the report."""

    def __init__(self, collector: NetworkCollector, ctx: Context):
        self.collector = collector
        self.box: dict = {}
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._read, args=(ctx,), daemon=True, name=collector.name)
        self.thread.start()

    def _read(self, ctx: Context) -> None:
        try:
            self.box["result"] = timed(self.collector.name, self.collector.collect, ctx)
        except BaseException as err:  # a settings error: raised again in the main thread
            self.box["error"] = err

    def section(self, ctx: Context) -> CollectorResult | None:
        deadline = self.collector.deadline()
        bound = math.inf if deadline is None else self.started + deadline
        while self.thread.is_alive() and time.monotonic() < bound:  # join in slices: Ctrl-C stays responsive
            self.thread.join(0.1)
        if "error" in self.box:
            raise self.box["error"]
        return self.collector.settle(ctx, self.box.get("result"), time.monotonic() - self.started)


def collect(opts: Options) -> Report:
    """The network reads (BMC, Qdrant; each up to its deadline) run in daemon threads while the local
    collectors run one after the other; the report lists the sections in the registered order."""
    start = time.perf_counter()
    ctx = Context(opts)
    chosen = [c for c in _collectors() if c.name not in opts.skip]
    background = {
        c.name: _Background(c, ctx) for c in chosen if isinstance(c, NetworkCollector) and c.prepare(ctx)
    }
    for c in chosen:
        if not isinstance(c, NetworkCollector):
            ctx.sections[c.name] = timed(c.name, c.collect, ctx)
    for name, read in background.items():
        section = read.section(ctx)
        if section is not None:
            ctx.sections[name] = section
    results = [ctx.sections[c.name] for c in chosen if c.name in ctx.sections]
    return Report(socket.gethostname(), results, utc_now(), time.perf_counter() - start)
