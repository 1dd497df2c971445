"""The NVIDIA GPU section on real third-party captures (tests/fixtures/nvidia/, PROVENANCE.md there):
`nvidia-smi -q -x` XML of five boards from netdata's collector tests, `nvidia-smi -q` text of H100 (8x,
NVSwitch), RTX 4090 (8x, idle and under load), A10 and TITAN V from gpud's tests, kernel logs with
real XID lines, and an H200 on R580 idle and under load that we captured ourselves on a lent machine.
The capture reader feeds the same rules as NVML, so every rule runs on real answers.

Which case pins what (issue 15, defect 9 and the "GPU checks" deliverable):
- MIG row remapping: `test_mig_a100_is_not_said_to_lack_row_remapping`,
  `test_xid_63_shows_a_pending_remap_under_mig`
- power-cap wording: `test_sw_power_cap_far_below_the_limit_is_not_at_the_limit`,
  `test_sw_power_cap_near_the_limit_is_at_it`, `test_r580_average_power_draw_and_the_cap_under_load`
- T.Limit margins: `test_tlimit_margins_become_absolute_limits`, `test_a_margin_is_never_judged_as_a_limit`
- XID events: `test_xid_lines_of_every_log_form`, `test_new_xids_are_judged_by_the_table`,
  `test_xids_are_alerted_once`
- PCIe replays: `test_pcie_replays_are_read`, `test_pcie_replay_growth_is_judged_as_a_rate`
- memory temperature: `test_hbm_temperature_against_the_boards_limit`
- fabric / recovery action: `test_nvswitch_fabric_completed`, `test_fabric_not_started_is_critical`,
  `test_recovery_action`
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from toolkit.health.collectors import gpu_nvidia, gpu_nvidia_state
from toolkit.health.collectors.gpu_nvidia_fields import EXTRA_FIELDS, GPU_FIELDS
from toolkit.health.collectors.gpu_nvidia_rules import checks_from_nvml
from toolkit.health.collectors.gpu_nvidia_smi import CaptureError, snapshot_from_capture
from toolkit.health.collectors.gpu_xid import XID_TABLE, parse_kernel_log, pci_key, read_kernel_xids
from toolkit.health.model import Status

CORPUS = Path(__file__).parent / "fixtures" / "nvidia"
CAPTURES = sorted(p.name for p in CORPUS.iterdir() if p.suffix in (".xml", ".txt"))
H100 = "gpud-h100-8x-535.161.08.txt"
H100_CAPPED = "gpud-h100-8x-535.183.01.txt"
RTX4090_LOAD = "gpud-rtx4090-8x-load-535.154.05.txt"
A100_MIG = "netdata-a100-sxm4-mig.xml"


def snap(name: str) -> dict:
    return snapshot_from_capture((CORPUS / name).read_text())


def log(name: str) -> str:
    return (CORPUS / name).read_text()


def by_name(result) -> dict:
    names = [c.name for c in result.checks]
    assert len(names) == len(set(names)), "check names must be unique"
    return {c.name: c for c in result.checks}


def gpu_at(raw: dict, bus: str) -> dict:
    [gpu] = [g for g in raw["gpus"] if g["pci_bus_id"].upper().endswith(bus.upper())]
    return gpu


# --------------------------------------------------------------------------- the reader on every capture


@pytest.mark.parametrize("name", CAPTURES)
def test_every_capture_reads_into_the_nvml_shape(name):
    raw = snap(name)
    text = (CORPUS / name).read_text()
    attached = re.search(r"(?:<attached_gpus>|Attached GPUs\s+:\s*)(\d+)", text)
    assert raw["available"] and raw["gpu_count"] == len(raw["gpus"]) == int(attached.group(1))
    assert raw["driver_version"] and raw["cuda_driver_version"]
    for gpu in raw["gpus"]:
        assert tuple(gpu) == (*GPU_FIELDS, *EXTRA_FIELDS)
        assert gpu["name"] and gpu["uuid"].startswith("GPU-") and gpu["pci_bus_id"]
        assert gpu["unsupported"] == sorted(gpu["errors"])
        assert all(gpu[f] is None for f in gpu["unsupported"])
        assert 0 < gpu["temperature_c"] < gpu["temperature_slowdown_c"] < gpu["temperature_shutdown_c"]
        assert gpu["memory_total_bytes"] > 2**30 and gpu["sm_clock_max_mhz"] > 1000
    result = checks_from_nvml(raw)
    json.dumps([c.to_json() for c in result.checks], allow_nan=False)
    for check in result.checks:  # a metric is a number or absent, never a sentinel
        number = check.prom_value if check.prom_value is not None else check.value
        if check.metric and check.value is not None:
            assert isinstance(number, int | float) and not isinstance(number, bool), check


# figures read off the captures by eye: (file, bus, model, °C, W, limit W, MiB total, util %)
FIGURES = [
    (A100_MIG, "00:04.0", "NVIDIA A100-SXM4-40GB", 36, 66.92, 400, 40960, None),
    ("netdata-tesla-p100.xml", "00:04.0", "Tesla P100-PCIE-16GB", 38, 26.16, 250, 16384, 0),
    ("netdata-rtx-2080-win.xml", "0A:00.0", "NVIDIA GeForce RTX 2080", 29, 14.5, 275, 8192, 2),
    ("netdata-rtx-3060.xml", "01:00.0", "NVIDIA GeForce RTX 3060 Laptop GPU", 45, 8.7, None, 6144, 0),
    ("netdata-rtx-4090-driver-535.xml", "84:00.0", "NVIDIA GeForce RTX 4090", 40, 26.84, 450, 24564, 0),
    (H100, "19:00.0", "NVIDIA H100 80GB HBM3", 29, 67.74, 700, 81559, 0),
    ("gpud-a10-535.129.03.txt", "07:00.0", "NVIDIA A10", 33, 43.89, 150, 23028, 0),
    (RTX4090_LOAD, "23:00.0", "NVIDIA GeForce RTX 4090", None, 445.38, 450, 24564, 97),
    ("gpud-titan-v-560.35.03.txt", "01:00.0", "NVIDIA TITAN V", 44, 29.02, 250, 12288, 0),
]


@pytest.mark.parametrize(("name", "bus", "model", "temp", "power", "limit", "mib", "util"), FIGURES)
def test_capture_figures_match_the_source(name, bus, model, temp, power, limit, mib, util):
    gpu = gpu_at(snap(name), bus)
    assert gpu["name"] == model
    assert temp is None or gpu["temperature_c"] == temp
    assert gpu["power_w"] == power and gpu["power_limit_w"] == limit
    assert gpu["memory_total_bytes"] == mib * 2**20
    assert gpu["utilization_gpu_percent"] == util


def test_the_corpus_spans_models_idle_load_and_mig():
    gpus = [g for name in CAPTURES for g in snap(name)["gpus"]]
    assert len({g["name"] for g in gpus}) >= 5
    assert any(g["utilization_gpu_percent"] == 0 for g in gpus)  # idle
    assert any((g["utilization_gpu_percent"] or 0) >= 90 for g in gpus)  # under load
    assert any(g["mig_mode_current"] for g in gpus)


def test_not_a_capture_is_one_clear_error():
    with pytest.raises(CaptureError, match="not an `nvidia-smi -q` capture"):
        snapshot_from_capture("Tue May 26 12:58:43 2026\nhello\n")
    with pytest.raises(CaptureError, match="entities"):
        snapshot_from_capture('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "x">]><nvidia_smi_log/>')
    with pytest.raises(CaptureError, match="not well-formed"):
        snapshot_from_capture("<nvidia_smi_log><gpu>")


# --------------------------------------------------------------------------- defect 9: MIG row remapping


def test_mig_a100_is_not_said_to_lack_row_remapping():
    """HEAD: "not supported (neither page retirement nor row remapping)" on an A100 in MIG mode."""
    raw = snap(A100_MIG)
    assert raw["gpus"][0]["mig_mode_current"] is True and raw["gpus"][0]["remapped_rows_pending"] is None
    checks = by_name(checks_from_nvml(raw))
    assert "gpu0.retired_pages" not in checks
    remap = checks["gpu0.row_remapping"]
    assert remap.status is Status.OK and remap.value is None
    assert "not readable while MIG is enabled" in remap.detail and "neither" not in remap.detail


def test_xid_63_shows_a_pending_remap_under_mig():
    """The A100 MIG capture, its GPU moved to bus 19:00 to receive the real XID 63 of the dmesg log (the
    two captures come from different machines; the bus id is the only figure changed)."""
    raw = snap(A100_MIG)
    raw["gpus"][0]["pci_bus_id"] = "00000000:19:00.0"
    events = [e.to_json() for e in parse_kernel_log(log("gpud-dmesg-iso-xid-48-63-94.log"))]
    raw["xid"] = {"source": "capture", "events": [e for e in events if e["code"] == 63], "error": None}
    remap = by_name(checks_from_nvml(raw))["gpu0.row_remapping"]
    assert (remap.status, remap.value) == (Status.WARNING, "pending")
    assert "XID 63" in remap.detail and "reset the GPU" in remap.detail


def test_a_pending_remap_read_from_the_board():
    """The A10 capture: 4 rows remapped for uncorrectable errors, one pending a reset."""
    remap = by_name(checks_from_nvml(snap("gpud-a10-535.129.03.txt")))["gpu0.row_remapping"]
    assert (remap.status, remap.value) == (Status.WARNING, "pending")
    assert "4 for uncorrectable" in remap.detail


def test_geforce_without_ecc_keeps_the_old_wording():
    checks = by_name(checks_from_nvml(snap("netdata-rtx-3060.xml")))
    assert "neither page retirement nor row remapping" in checks["gpu0.retired_pages"].detail


# --------------------------------------------------------------------------- defect 9: power-cap wording


def test_sw_power_cap_far_below_the_limit_is_not_at_the_limit():
    """HEAD: "SW power cap (at the power limit)" for an H100 drawing 118 of 700 W."""
    raw = snap(H100_CAPPED)
    gpu = gpu_at(raw, "75:00.0")
    assert "sw_power_cap" in gpu["clocks_event_reasons_decoded"] and gpu["power_w"] == 118.01
    index = gpu["index"]
    detail = by_name(checks_from_nvml(raw))[f"gpu{index}.clock_events"].detail
    assert "SW power cap flagged at 118 of 700 W, 17% of the limit: not at the power limit" in detail
    assert "(at the power limit)" not in detail


def test_sw_power_cap_near_the_limit_is_at_it():
    raw = snap(RTX4090_LOAD)
    gpu = gpu_at(raw, "23:00.0")
    check = by_name(checks_from_nvml(raw))[f"gpu{gpu['index']}.clock_events"]
    assert check.status is Status.OK
    assert "SW power cap: at the power limit (445 of 450 W, 99%)" in check.detail


def test_r580_average_power_draw_and_the_cap_under_load():
    """H200 on R580 (our own capture, idle and under a bf16 matmul load): nvidia-smi prints no plain
    `Power Draw` any more, only `Average` and `Instantaneous Power Draw`; under load the SW power cap is
    active at 690 of 700 W, which is the limit, idle it is not."""
    for form in ("txt", "xml"):
        idle = by_name(checks_from_nvml(snap(f"own-h200-idle-580.159.04.{form}")))
        load = by_name(checks_from_nvml(snap(f"own-h200-load-580.159.04.{form}")))
        assert 70 < idle["gpu0.power"].value < 90 and 680 < load["gpu0.power"].value <= 700
        assert idle["gpu0.clock_events"].value == "gpu_idle"
        assert "SW power cap: at the power limit" in load["gpu0.clock_events"].detail
        assert load["gpu0.utilization"].value == 99 and load["gpu0.power"].status is Status.OK


# --------------------------------------------------------------------------- T.Limit margins


def test_tlimit_margins_become_absolute_limits():
    """RTX 4090, r535: `GPU T.Limit Temp 43 C`, slowdown at -2, shutdown at -7 (margins) with 40 °C."""
    gpu = snap("netdata-rtx-4090-driver-535.xml")["gpus"][0]
    assert gpu["temperature_limits"] == "tlimit" and gpu["temperature_margin_c"] == 43
    assert (gpu["temperature_slowdown_c"], gpu["temperature_shutdown_c"]) == (85, 90)
    check = by_name(checks_from_nvml(snap("netdata-rtx-4090-driver-535.xml")))["gpu0.temperature"]
    assert check.status is Status.OK and "from the T.Limit margin" in check.detail
    assert "critical at 85 °C" in check.detail


def test_a_margin_is_never_judged_as_a_limit():
    """The capture's raw margins (-2 / -7 °C) in the limit fields, as a reader unaware of T.Limit gives
    them: 40 °C must not be "above the slowdown threshold"."""
    raw = snap("netdata-rtx-4090-driver-535.xml")
    raw["gpus"][0].update(
        temperature_slowdown_c=-2.0, temperature_shutdown_c=-7.0, temperature_limits="absolute"
    )
    check = by_name(checks_from_nvml(raw))["gpu0.temperature"]
    assert check.status is Status.OK and "default limit" in check.detail


# --------------------------------------------------------------------------- memory temperature


def test_hbm_temperature_against_the_boards_limit():
    a100 = by_name(checks_from_nvml(snap(A100_MIG)))["gpu0.temperature.memory"]
    assert (a100.status, a100.value, a100.metric) == (Status.OK, 44, "toolkit_gpu_memory_temperature_celsius")
    assert "critical at 95 °C (memory's max operating temperature)" in a100.detail
    h100 = by_name(checks_from_nvml(snap(H100)))["gpu0.temperature.memory"]
    assert h100.value == 39 and "default HBM limit" in h100.detail  # only a T.Limit margin there
    hot = snap(A100_MIG)
    hot["gpus"][0]["temperature_memory_c"] = 92.0
    assert by_name(checks_from_nvml(hot))["gpu0.temperature.memory"].status is Status.WARNING
    hot["gpus"][0]["temperature_memory_c"] = 95.0
    assert by_name(checks_from_nvml(hot))["gpu0.temperature.memory"].status is Status.CRITICAL
    assert "gpu0.temperature.memory" not in by_name(checks_from_nvml(snap("netdata-rtx-3060.xml")))


# --------------------------------------------------------------------------- PCIe replays


def test_pcie_replays_are_read():
    raw = snap(H100)
    assert [g["pcie_replay_count"] for g in raw["gpus"]][:2] == [67, 63]
    check = by_name(checks_from_nvml(raw))["gpu0.pcie.replay"]
    assert (check.status, check.value, check.metric) == (Status.OK, 67, "toolkit_gpu_pcie_replay_total")
    assert check.labels == {"gpu": "0", "name": "NVIDIA H100 80GB HBM3", "uuid": raw["gpus"][0]["uuid"]}


def test_pcie_replay_growth_is_judged_as_a_rate():
    raw = snap(H100_CAPPED)
    raw["boot_id"] = "boot-1"
    uuid = raw["gpus"][0]["uuid"]  # 120 replays in the capture
    now = 1_000_000.0
    fast = {"boot_id": "boot-1", "pcie_replay": {uuid: {"count": 100, "at": now - 60}}}
    check = by_name(checks_from_nvml(raw, previous=fast, now=now))["gpu0.pcie.replay"]
    assert check.status is Status.WARNING and "+20 in 1.0 min (20.0/min" in check.detail
    slow = {"boot_id": "boot-1", "pcie_replay": {uuid: {"count": 118, "at": now - 600}}}
    check = by_name(checks_from_nvml(raw, previous=slow, now=now))["gpu0.pcie.replay"]
    assert check.status is Status.OK and "+2 since the last run (10.0 min ago)" in check.detail
    other_boot = {"boot_id": "boot-0", "pcie_replay": {uuid: {"count": 0, "at": now - 60}}}
    check = by_name(checks_from_nvml(raw, previous=other_boot, now=now))["gpu0.pcie.replay"]
    assert check.status is Status.OK and "judged between two runs" in check.detail


# --------------------------------------------------------------------------- fabric and recovery action


def test_nvswitch_fabric_completed():
    checks = by_name(checks_from_nvml(snap(H100)))
    fabric = [checks[f"gpu{i}.fabric"] for i in range(8)]
    assert {(c.status, c.value, c.prom_value) for c in fabric} == {(Status.OK, "completed", 3)}
    assert "gpu0.fabric" not in by_name(checks_from_nvml(snap("gpud-a10-535.129.03.txt")))  # N/A: no check


@pytest.mark.parametrize(
    ("state", "status"), [("Not Started", Status.CRITICAL), ("In Progress", Status.WARNING)]
)
def test_fabric_not_started_is_critical(state, status):
    """The H100 capture with its first GPU's `State : Completed` line changed to the other states."""
    text = log(H100).replace("State                             : Completed", f"State : {state}", 1)
    check = by_name(checks_from_nvml(snapshot_from_capture(text)))["gpu0.fabric"]
    assert check.status is status


def test_recovery_action():
    text = log("gpud-a10-535.129.03.txt")
    assert by_name(checks_from_nvml(snapshot_from_capture(text)))["gpu0.recovery_action"].value == "none"
    reset = text.replace("Reset Required                    : No", "Reset Required : Yes")
    check = by_name(checks_from_nvml(snapshot_from_capture(reset)))["gpu0.recovery_action"]
    assert (check.status, check.value, check.prom_value) == (Status.CRITICAL, "gpu_reset", 1)


# --------------------------------------------------------------------------- XID events


def test_xid_lines_of_every_log_form():
    gsp = parse_kernel_log(log("gpud-dmesg-T-xid-119.log"))  # dmesg -T
    assert [(e.code, e.pci) for e in gsp] == [(119, "0000:9b:00")] * 5
    assert gsp[0].time == "2025-02-23T16:24:18" and "GSP" in gsp[0].detail
    ecc = parse_kernel_log(log("gpud-dmesg-iso-xid-48-63-94.log"))  # dmesg --time-format iso
    assert [e.code for e in ecc][:3] == [48, 63, 94] and ecc[0].time == "2024-11-15T12:02:03.470068+00:00"
    app = parse_kernel_log(log("gpud-dmesg-decode-iso-xid-13-43.log"))  # dmesg --decode
    assert {e.code for e in app} == {13, 43} and len(app) == 30
    assert parse_kernel_log(log("gpud-kmsg-nvswitch.log")) == []  # /dev/kmsg records, no XID among them
    assert len({e.key for e in ecc}) == len(ecc)  # each event is itself
    assert pci_key("00000000:9B:00.0") == pci_key("0000:9b:00") == "0000:9b:00"


def _with_xids(capture: str, logfile: str) -> dict:
    raw = snap(capture)
    raw["boot_id"] = "boot-1"
    events = [e.to_json() for e in parse_kernel_log(log(logfile))]
    raw["xid"] = {"source": "capture", "events": events, "error": None}
    return raw


def test_new_xids_are_judged_by_the_table():
    raw = _with_xids(H100, "gpud-dmesg-iso-xid-48-63-94.log")  # GPU0 of the H100 capture is at 19:00
    checks = by_name(checks_from_nvml(raw))
    xid = checks["gpu.xid"]
    assert xid.status is Status.CRITICAL and xid.value == len(raw["xid"]["events"])
    assert "XID 48 ×1 on GPU0 (0000:19:00): double-bit ECC error" in xid.detail
    assert "XID 94 ×" in xid.detail and "this boot" in xid.detail
    last = checks["gpu0.xid"]
    assert (last.value, last.metric) == (94, "toolkit_gpu_xid_last_code") and checks["gpu1.xid"].value == 0
    app = by_name(checks_from_nvml(_with_xids(H100, "gpud-dmesg-decode-iso-xid-13-43.log")))["gpu.xid"]
    assert app.status is Status.OK and "XID 13 ×28 on a GPU not enumerated (0000:38:00)" in app.detail
    gsp = by_name(checks_from_nvml(_with_xids(H100, "gpud-dmesg-T-xid-119.log")))["gpu.xid"]
    assert gsp.status is Status.CRITICAL and "GSP firmware RPC timeout" in gsp.detail
    assert all(isinstance(text, str) and action for text, _, action in XID_TABLE.values())


def test_xids_are_alerted_once():
    raw = _with_xids(H100, "gpud-dmesg-iso-xid-48-63-94.log")
    seen = gpu_nvidia_state.next_state(raw, "boot-1", 1.0)
    xid = by_name(checks_from_nvml(raw, previous=seen))["gpu.xid"]
    assert xid.status is Status.OK and xid.value == 0
    assert xid.detail.startswith("no XID event since the last run")
    rebooted = dict(seen, boot_id="boot-0")  # a state of another boot: every event of this one is new
    assert by_name(checks_from_nvml(raw, previous=rebooted))["gpu.xid"].status is Status.CRITICAL


def test_unreadable_kernel_log_is_said():
    raw = snap(H100)
    raw["xid"] = {"source": None, "events": [], "error": "/dev/kmsg: Permission denied"}
    xid = by_name(checks_from_nvml(raw))["gpu.xid"]
    assert (xid.status, xid.value) == (Status.OK, None) and "Permission denied" in xid.detail


def test_read_kernel_xids_for_real():
    """This machine's kernel log, through journalctl or /dev/kmsg: whatever it holds, a clean answer."""
    found = read_kernel_xids()
    assert set(found) == {"source", "events", "error"}
    assert (found["source"] is None) == bool(found["error"])
    for event in found["events"]:
        assert event["code"] >= 0 and re.fullmatch(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}", event["pci"])


# --------------------------------------------------------------------------- the state between runs


def test_state_round_trip_and_bad_files(tmp_path):
    raw = _with_xids(H100, "gpud-dmesg-iso-xid-48-63-94.log")
    state = gpu_nvidia_state.next_state(raw, "boot-1", 5.0)
    assert gpu_nvidia_state.save(tmp_path, state) is None
    assert gpu_nvidia_state.load(tmp_path) == state
    assert state["pcie_replay"][raw["gpus"][0]["uuid"]] == {"count": 67, "at": 5.0}
    (tmp_path / gpu_nvidia_state.STATE_FILE).write_text("{not json")
    assert gpu_nvidia_state.load(tmp_path) == {}
    assert gpu_nvidia_state.load(None) == {} and gpu_nvidia_state.save(None, state) is None
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert "GPU state not saved" in gpu_nvidia_state.save(blocked / "sub", state)


def test_collect_for_real_keeps_state_only_with_a_gpu(tmp_path):
    result = gpu_nvidia.collect(state_dir=str(tmp_path))
    written = (tmp_path / gpu_nvidia_state.STATE_FILE).exists()
    assert written == result.up
    if result.up:  # a GPU host: the run left its state, and a second run reads it
        state = gpu_nvidia_state.load(tmp_path)
        assert state["boot_id"] and set(state["pcie_replay"]) <= {c.labels.get("uuid") for c in result.checks}
        again = by_name(gpu_nvidia.collect(state_dir=str(tmp_path)))
        assert "judged between two runs" not in again.get("gpu0.pcie.replay", result.checks[0]).detail
