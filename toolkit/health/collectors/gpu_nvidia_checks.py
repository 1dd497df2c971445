"""The NVIDIA checks operators read from dcgm-exporter and `dcgmi health`, beyond the basics of
`gpu_nvidia_rules`: memory (HBM) temperature, PCIe replay growth, NVSwitch fabric state, the driver's
recovery action, NVLink link state, XID events, and row remapping where it cannot be read (MIG mode).

Rules (the checks carry the GPU's index, model and UUID as labels `gpu`, `name`, `uuid`; XID events are
one node check, `gpu.xid`, that names the GPU of every event):

- `gpuN.temperature.memory`: WARNING 5 °C below the board's memory limit, CRITICAL at it (90 / 95 °C,
  the HBM limit of A100/H100, where the board gives none or only a T.Limit margin).
- `gpuN.pcie.replay`: the replay counter (since the GPU was reset). Between two runs on the same boot, a
  growth of 8 or more per minute is WARNING (dcgm's default PCIe replay rate); any growth is said.
- `gpuN.fabric` (NVSwitch systems; absent where the state is N/A or Not Supported): Completed with
  status Success OK; Completed with an error status CRITICAL; In Progress WARNING; Not Started CRITICAL
  (CUDA cannot use the GPU until nvidia-fabricmanager registers it).
- `gpuN.recovery_action` (drivers that report one): None OK; drain (P2P, or drain and reset) WARNING;
  GPU/bus reset, node/system reboot CRITICAL.
- `gpuN.nvlink` (GPUs with NVLink): some links down while others are up is WARNING (bandwidth lost);
  none up is "no NVLink connected" (OK).
- `gpu.xid`: the worst new XID event since the last run (all of this boot without a state folder), by
  `gpu_xid.XID_TABLE`: application faults (13, 31, 43, 45) OK, 48/62/64/74/79/95/119/120 CRITICAL, ...
  `gpuN.xid` exports the last XID code of this boot (dcgm's DCGM_FI_DEV_XID_ERRORS), 0 for none.
- `gpuN.row_remapping` on a GPU that has row remapping (Ampere and later, or MIG on) whose remap state
  cannot be read (nvidia-smi and NVML answer N/A in MIG mode): XID 64 this boot CRITICAL, XID 63
  WARNING (a remap is pending a reset), else OK with the reason it is unread.
"""

from __future__ import annotations

from toolkit.health.collectors.gpu_rules import add, fmt_number
from toolkit.health.collectors.gpu_xid import meaning, new_since, pci_key
from toolkit.health.model import CollectorResult, Status

MEMORY_WARNING_C, MEMORY_CRITICAL_C = 90.0, 95.0
MEMORY_MARGIN_C = 5.0
REPLAY_RATE_PER_MINUTE = 8.0  # dcgm's default PCIe replay rate threshold
REMAPPING_ARCHITECTURES = {"ampere", "ada", "hopper", "blackwell"}
FABRIC_CODES = {"not_supported": 0, "not_started": 1, "in_progress": 2, "completed": 3}
RECOVERY = {
    "none": (0, Status.OK, "no recovery action needed"),
    "gpu_reset": (1, Status.CRITICAL, "the driver asks for a GPU reset (nvidia-smi -r once drained)"),
    "node_reboot": (2, Status.CRITICAL, "the driver asks for a node reboot"),
    "drain_p2p": (3, Status.WARNING, "drain the peer-to-peer traffic (NVLink) of this GPU"),
    "drain_and_reset": (4, Status.WARNING, "drain the GPU, then reset it"),
    "recover_imex_domain": (5, Status.CRITICAL, "recover the IMEX domain"),
    "bus_reset": (6, Status.CRITICAL, "the driver asks for a bus reset"),
    "system_reboot": (7, Status.CRITICAL, "the driver asks for a system reboot"),
}


def memory_temperature(result: CollectorResult, prefix: str, gpu: dict, labels: dict):
    temp = gpu.get("temperature_memory_c")
    if temp is None:
        return  # GDDR boards report none: no check rather than one more "not supported" per GPU
    limit = gpu.get("temperature_memory_max_c")
    if limit and limit >= 20:  # a smaller figure is a T.Limit margin, not a limit
        warning, critical = limit - MEMORY_MARGIN_C, float(limit)
        source = "memory's max operating temperature"
    else:
        warning, critical, source = MEMORY_WARNING_C, MEMORY_CRITICAL_C, "default HBM limit"
    limits = f"warning at {fmt_number(warning)} °C, critical at {fmt_number(critical)} °C ({source})"
    if temp >= critical:
        status, detail = (
            Status.CRITICAL,
            f"memory at {fmt_number(temp)} °C: at or above the {source}; {limits}",
        )
    elif temp >= warning:
        status, detail = Status.WARNING, f"memory at {fmt_number(temp)} °C: near the {source}; {limits}"
    else:
        status, detail = Status.OK, limits
    metric = "toolkit_gpu_memory_temperature_celsius"
    add(result, f"{prefix}.temperature.memory", status, temp, "°C", detail, metric, **labels)


def pcie_replay(
    result: CollectorResult, prefix: str, gpu: dict, before: dict | None, now: float, labels: dict
):
    count = gpu.get("pcie_replay_count")
    if count is None:
        return
    status, detail = Status.OK, f"{count} PCIe replay(s) since the GPU was reset"
    rollovers = gpu.get("pcie_replay_rollovers")
    if rollovers:
        detail += f" ({rollovers} rollover(s) of the counter)"
    if before and isinstance(before.get("count"), int) and count >= before["count"]:
        grown, minutes = count - before["count"], max((now - float(before.get("at", now))) / 60, 1 / 60)
        rate = grown / minutes
        if rate >= REPLAY_RATE_PER_MINUTE:
            status = Status.WARNING
            detail += (
                f"; +{grown} in {minutes:.1f} min ({rate:.1f}/min, at or above "
                f"{fmt_number(REPLAY_RATE_PER_MINUTE)}/min): check the riser, the slot and the link's seating"
            )
        else:
            detail += f"; +{grown} since the last run ({minutes:.1f} min ago)"
    else:
        detail += "; growth is judged between two runs of the same boot"
    add(
        result,
        f"{prefix}.pcie.replay",
        status,
        count,
        None,
        detail,
        "toolkit_gpu_pcie_replay_total",
        **labels,
    )


def fabric(result: CollectorResult, prefix: str, gpu: dict, labels: dict):
    state, status_text = gpu.get("fabric_state"), gpu.get("fabric_status")
    if state in (None, "not_supported"):
        return
    if state == "completed":
        if status_text in (None, "Success"):
            status, detail = Status.OK, "registered with the NVSwitch fabric (Completed, Success)"
        else:
            status, detail = (
                Status.CRITICAL,
                f"fabric registration failed ({status_text}): check nvidia-fabricmanager",
            )
    elif state == "in_progress":
        status, detail = Status.WARNING, "fabric registration in progress: CUDA waits until it completes"
    elif state == "not_started":
        status = Status.CRITICAL
        detail = "fabric registration not started: CUDA cannot use this GPU; start nvidia-fabricmanager"
    else:
        status, detail = Status.WARNING, f"fabric state {state}"
    add(
        result, f"{prefix}.fabric", status, state, None, detail, "toolkit_gpu_fabric_state",
        FABRIC_CODES.get(state), **labels,
    )  # fmt: skip


def recovery_action(result: CollectorResult, prefix: str, gpu: dict, labels: dict):
    action = gpu.get("recovery_action")
    if action is None:
        return
    code, status, detail = RECOVERY.get(action, (None, Status.WARNING, f"unknown recovery action {action}"))
    add(
        result,
        f"{prefix}.recovery_action",
        status,
        action,
        None,
        detail,
        "toolkit_gpu_recovery_action",
        code,
        **labels,
    )


def nvlink(result: CollectorResult, prefix: str, gpu: dict, labels: dict):
    links = gpu.get("nvlink_active")
    if not links:
        return
    up = [i for i, active in enumerate(links) if active]
    down = [i for i, active in enumerate(links) if not active]
    if not up:
        status, detail = Status.OK, f"no NVLink connected ({len(links)} link(s), none active)"
    elif down:
        status = Status.WARNING
        detail = (
            f"{len(up)} of {len(links)} NVLink link(s) up; down: {', '.join(map(str, down))} (bandwidth lost)"
        )
    else:
        status, detail = Status.OK, f"all {len(links)} NVLink link(s) up"
    add(
        result, f"{prefix}.nvlink", status, len(up), None, detail, "toolkit_gpu_nvlink_links_active", **labels
    )


def _gpu_names(gpus: list[dict]) -> dict[str, str]:
    return {pci_key(g.get("pci_bus_id")) or "": f"GPU{g.get('index')}" for g in gpus}


def xid_checks(result: CollectorResult, raw: dict, previous: dict, same_boot: bool) -> list[dict]:
    """`gpu.xid` and every GPU's `gpuN.xid`; returns the events of this boot for the other rules."""
    xid = raw.get("xid")
    gpus = raw.get("gpus") or []
    if xid is None:
        return []
    events = xid.get("events") or []
    if xid.get("error") and not events:
        add(result, "gpu.xid", Status.OK, None, None, f"XID events not read ({xid['error']})")
        return []
    last_key = previous.get("xid_last_key") if same_boot else None
    fresh = new_since(events, last_key)
    names = _gpu_names(gpus)
    status, parts = Status.OK, []
    groups: dict[tuple[int, str], int] = {}
    for event in fresh:
        groups[event["code"], event["pci"]] = groups.get((event["code"], event["pci"]), 0) + 1
    for (code, pci), count in groups.items():
        text, level, action = meaning(code)
        if level.severity > status.severity:
            status = level
        where = f"{names.get(pci, 'a GPU not enumerated')} ({pci})"
        parts.append(f"XID {code} ×{count} on {where}: {text}; {action}")
    scope = "since the last run" if previous else "this boot"
    source = xid.get("source") or "capture"
    if parts:
        detail = f"{len(fresh)} XID event(s) {scope} ({source}): " + " | ".join(parts)
    else:
        detail = f"no XID event {scope} ({source}; {len(events)} this boot)"
    add(result, "gpu.xid", status, len(fresh), None, detail)
    for gpu in gpus:
        mine = [e for e in events if e["pci"] == pci_key(gpu.get("pci_bus_id"))]
        last = mine[-1]["code"] if mine else 0
        labels = {"gpu": str(gpu.get("index")), "name": gpu.get("name") or "", "uuid": gpu.get("uuid") or ""}
        detail = f"last XID this boot: {last} ({meaning(last)[0]})" if last else "no XID this boot"
        add(
            result,
            f"gpu{gpu.get('index')}.xid",
            Status.OK,
            last,
            None,
            detail,
            "toolkit_gpu_xid_last_code",
            **labels,
        )
    return events


def has_row_remapping(gpu: dict) -> bool:
    """MIG mode, or an ECC board of Ampere or later (GeForce Ampere boards report neither mechanism)."""
    if gpu.get("mig_mode_current"):
        return True
    return gpu.get("architecture") in REMAPPING_ARCHITECTURES and gpu.get("ecc_mode_current") is not None


def row_remapping_unread(result: CollectorResult, prefix: str, gpu: dict, events: list[dict], labels: dict):
    """A GPU with row remapping whose remap state is not readable: the XIDs of this boot say what it hides."""
    mine = [e for e in events if e.get("pci") == pci_key(gpu.get("pci_bus_id"))]
    codes = {e["code"] for e in mine}
    why = "while MIG is enabled" if gpu.get("mig_mode_current") else "on this driver"
    error = (gpu.get("errors") or {}).get("remapped_rows") or "N/A"
    if 64 in codes:
        status, value = Status.CRITICAL, "failure"
        detail = (
            f"XID 64 this boot: a row remap failed to record; drain the GPU and reset it (state unread {why})"
        )
    elif 63 in codes:
        status, value = Status.WARNING, "pending"
        detail = (
            f"XID 63 this boot: a row was marked for remapping; reset the GPU to remap (state unread {why})"
        )
    else:
        status, value = Status.OK, None
        detail = (
            f"row remapping state not readable {why} ({error}); no XID 63/64 this boot"
            if events or gpu.get("mig_mode_current")
            else f"row remapping state not readable {why} ({error})"
        )
    add(result, f"{prefix}.row_remapping", status, value, None, detail, None, **labels)
