"""One health run: pick the collectors from options and configuration, run each under its own guard,
and assemble the report. Used by `toolkit health` and by the scheduled service alike."""

from __future__ import annotations

import datetime as dt
import socket
import time
from dataclasses import dataclass, field

from toolkit.health.model import Check, CollectorResult, Report, Status, timed


@dataclass
class Options:
    bmc_url: str | None = None
    bmc_password_file: str | None = None
    bmc_insecure: bool = False
    bmc_timeout: float | None = None
    bmc_tool: str | None = None  # None: the settings file's bmc.tool, else auto
    expect_gpus: int | None = None
    qdrant_url: str | None = None  # else the settings file's qdrant.url; the API key never comes from here
    skip: set[str] = field(default_factory=set)
    config: dict = field(default_factory=dict)


def _gpu(opts: Options) -> CollectorResult:
    from toolkit.health.collectors import gpu_amd, gpu_nvidia

    expect = opts.expect_gpus if opts.expect_gpus is not None else opts.config.get("expect_gpus")
    thresholds = opts.config.get("thresholds") or {}
    nvidia = gpu_nvidia.collect(expect_gpus=expect, thresholds=thresholds)
    if nvidia.up:
        return nvidia
    amd_raw = gpu_amd.read_amdsmi()
    if amd_raw.get("available"):
        return gpu_amd.checks_from_amdsmi(amd_raw, expect_gpus=expect, thresholds=thresholds)
    return nvidia


def _bmc(opts: Options) -> CollectorResult | None:
    from toolkit.health.bmc import ipmi
    from toolkit.health.bmc.target import parse_target, read_password

    cfg = opts.config.get("bmc") or {}
    url = opts.bmc_url or cfg.get("url")
    timeout = float(opts.bmc_timeout or cfg.get("timeout") or 5.0)
    window = float(opts.config.get("sel_window_hours", 24))
    inband = cfg.get("inband", "auto")
    if not url:
        if inband is True or (inband == "auto" and ipmi.inband_available()):
            return _guarded_read(lambda: ipmi.read_inband(timeout), "local /dev/ipmi0", window)
        return None
    target = parse_target(url)
    target.password = read_password(opts.bmc_password_file or cfg.get("password_file"), cfg.get("password"))
    target.timeout = timeout
    target.insecure_tls = opts.bmc_insecure or bool(cfg.get("insecure_tls"))
    target.auth = cfg.get("auth", "session")
    if target.protocol == "redfish":
        from toolkit.health.bmc.redfish import read_redfish

        reader = lambda: read_redfish(target)  # noqa: E731
    else:
        reader = lambda: ipmi.read_ipmi(target, opts.bmc_tool or cfg.get("tool") or "auto")  # noqa: E731
    result = _guarded_read(reader, target.display, window)
    if target.protocol == "redfish" and target.insecure_tls and result.up:
        result.info["tls"] = "certificate NOT verified (--bmc-insecure)"
        result.add(
            "bmc.tls",
            Status.OK,
            "not verified",
            None,
            f"the certificate of {target.display} was NOT verified (--bmc-insecure / insecure_tls)",
        )
    return result


def _guarded_read(reader, display: str, window: float) -> CollectorResult:
    from toolkit.health.bmc.model import BmcError, bmc_checks

    try:
        reading = reader()
    except BmcError as err:
        result = CollectorResult(
            "bmc", up=False, detail=str(err), info={"target": display, "error": err.kind}
        )
        result.add(
            "bmc.connection",
            Status.UNKNOWN,
            err.kind,
            None,
            str(err),
            "toolkit_bmc_reachable",
            prom_value=0.0,
        )
        return result
    result = bmc_checks(reading, sel_window_hours=window)
    result.checks.insert(
        0,
        Check(
            "bmc.connection",
            Status.OK,
            "ok",
            None,
            f"read {len(reading.sensors)} sensors from {display} ({reading.protocol})",
            "toolkit_bmc_reachable",
            {},
            "bmc",
            1.0,
        ),
    )
    return result


def _start_qdrant(opts: Options):
    """(settings, thread, box) for the Qdrant read, or None when Qdrant is not configured. Settings are
    checked here, before any collector runs, so a bad one stops the run with its message (exit 3)."""
    import threading

    from toolkit.health.collectors import qdrant

    settings = qdrant.settings(opts.config.get("qdrant"), opts.qdrant_url)
    if settings is None:
        return None
    box: dict = {"started": time.monotonic()}

    def read():
        box["result"] = timed("qdrant", qdrant.collect, settings)

    thread = threading.Thread(target=read, daemon=True, name="qdrant")
    thread.start()
    return settings, thread, box


def _finish_qdrant(started, nvidia: bool | None) -> CollectorResult:
    """Wait for the Qdrant read, never past its own deadline plus a second: a read stuck in the network
    (a peer that drips bytes, a slow resolver) leaves its daemon thread behind, not the report."""
    from toolkit.health.collectors import qdrant

    settings, thread, box = started
    bound = box["started"] + settings.timeout + 1.0
    while thread.is_alive() and time.monotonic() < bound:
        thread.join(0.1)
    result = box.get("result") or qdrant.overdue(settings, time.monotonic() - box["started"])
    qdrant.judge_gpu_indexing(result, settings, nvidia)
    return result


def collect(opts: Options) -> Report:
    """The BMC and Qdrant reads (network-bound, each up to its deadline) run in daemon threads while the
    local collectors run; a daemon thread never holds up Ctrl-C or the process exit."""
    import threading

    start = time.perf_counter()
    results: list[CollectorResult] = []
    box: dict = {}
    bmc_thread = None
    if "bmc" not in opts.skip:

        def read_bmc():
            try:
                box["result"] = timed("bmc", lambda: _bmc(opts) or CollectorResult("bmc"))
            except BaseException as err:  # a settings error: raised again in the main thread
                box["error"] = err

        bmc_thread = threading.Thread(target=read_bmc, daemon=True, name="bmc")
        bmc_thread.start()
    qdrant_read = _start_qdrant(opts) if "qdrant" not in opts.skip else None
    if "gpu" not in opts.skip:
        results.append(timed("gpu", _gpu, opts))
    if "docker" not in opts.skip:
        from toolkit.health.collectors import docker

        nvidia = any(
            c.name.startswith("gpu") and c.name.endswith(".temperature") for r in results for c in r.checks
        )
        results.append(timed("docker", docker.collect, opts.config.get("docker") or {}, nvidia))
    if "system" not in opts.skip:
        from toolkit.health.collectors import system

        results.append(timed("system", system.collect, opts.config.get("system") or {}))
    if bmc_thread is not None:
        while bmc_thread.is_alive():  # join in slices: Ctrl-C stays responsive
            bmc_thread.join(0.1)
        if "error" in box:
            raise box["error"]
        if box["result"].checks:  # no BMC configured and no local interface: no section at all
            results.insert(0 if "gpu" in opts.skip else 1, box["result"])
    if qdrant_read is not None:
        nvidia = None
        if "gpu" not in opts.skip:  # whether this node has NVIDIA GPUs is known only when they were read
            nvidia = any(
                c.name.startswith("gpu") and c.name.endswith(".temperature")
                for r in results
                for c in r.checks
            )
        results.append(_finish_qdrant(qdrant_read, nvidia))
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return Report(
        socket.gethostname(), results, now.isoformat().replace("+00:00", "Z"), time.perf_counter() - start
    )
