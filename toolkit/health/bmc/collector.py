"""The BMC section of `toolkit health`: picks the reader (IPMI over LAN, Redfish, or in-band IPMI when
no BMC is named) from options and settings, and turns an unreachable BMC into an UNKNOWN check instead
of a failed run. The readers only read; `bmc_checks()` judges."""

from __future__ import annotations

from toolkit.health.bmc import ipmi
from toolkit.health.bmc.model import BmcError, bmc_checks
from toolkit.health.bmc.target import DEFAULT_TIMEOUT, parse_target, read_password
from toolkit.health.collector import Context
from toolkit.health.model import Check, CollectorResult, Status

HANDOVER_SECONDS = 1.0  # past it, the run stops waiting for the read's thread


class BmcCollector:
    """A network read; its settings are checked in its own thread, and a bad one stops the run when the
    run takes the section."""

    name = "bmc"

    def __init__(self) -> None:
        self.timeout = DEFAULT_TIMEOUT

    def prepare(self, ctx: Context) -> bool:
        self.timeout = _timeout(ctx)
        return True  # whether a BMC is there is known only by trying: /dev/ipmi0 or a configured URL

    def deadline(self) -> float:
        """Each reader keeps the BMC timeout itself; a read stuck past it (a peer that drips bytes, a slow
        resolver) is left behind a second later, so the run and its report lock never wait on it."""
        return self.timeout + HANDOVER_SECONDS

    def collect(self, ctx: Context) -> CollectorResult:
        return _read(ctx) or CollectorResult(self.name)

    def settle(self, ctx: Context, result: CollectorResult | None, waited: float) -> CollectorResult | None:
        if result is None and (ctx.opts.bmc_url or (ctx.config.get("bmc") or {}).get("url")):
            return _overdue(waited)
        return result if result is not None and result.checks else None  # no BMC here: no section at all


def _timeout(ctx: Context) -> float:
    return float(ctx.opts.bmc_timeout or (ctx.config.get("bmc") or {}).get("timeout") or DEFAULT_TIMEOUT)


def _overdue(waited: float) -> CollectorResult:
    """The section when the read thread itself did not come back in time."""
    detail = f"the BMC did not finish answering within {waited:.1f} s"
    result = CollectorResult("bmc", up=False, detail=detail, info={"error": "timeout"})
    result.add(
        "bmc.connection", Status.UNKNOWN, "timeout", None, detail, "toolkit_bmc_reachable", prom_value=0.0
    )
    return result


def _read(ctx: Context) -> CollectorResult | None:
    opts = ctx.opts
    cfg = ctx.config.get("bmc") or {}
    url = opts.bmc_url or cfg.get("url")
    timeout = _timeout(ctx)
    window = float(ctx.config.get("sel_window_hours", 24))
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
