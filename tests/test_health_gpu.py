"""GPU health rules on recorded NVML / amdsmi snapshots, and the real NVML / amdsmi path of this machine.

No NVML or amdsmi fake: the readers run for real (without a driver here, with one on a GPU host), and
the rules are pure functions of the snapshots in tests/fixtures/health/.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from toolkit.health import prom, run
from toolkit.health.collectors import gpu_amd, gpu_nvidia
from toolkit.health.collectors.gpu_amd import checks_from_amdsmi, read_amdsmi
from toolkit.health.collectors.gpu_nvidia import GPU_FIELDS, read_nvml
from toolkit.health.collectors.gpu_nvidia_fields import EXTRA_FIELDS
from toolkit.health.collectors.gpu_nvidia_rules import checks_from_nvml
from toolkit.health.model import Status
from toolkit.nvml import decode_clock_events

FIXTURES = Path(__file__).parent / "fixtures" / "health"


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def checks(result) -> dict:
    names = [c.name for c in result.checks]
    assert len(names) == len(set(names)), "check names must be unique"
    return {c.name: c for c in result.checks}


def assert_no_sentinels(result):
    """A metric sample is a real, non-negative number or absent: never -1, never a text value alone."""
    for c in result.checks:
        if c.metric is None:
            continue
        number = c.prom_value if c.prom_value is not None else c.value
        if c.value is None:
            assert c.prom_value is None, c
            continue
        assert isinstance(number, int | float) and not isinstance(number, bool), c
        assert 0 <= number < 2**32 or c.metric.endswith("_hertz") or c.metric.endswith("_bytes"), c


# --------------------------------------------------------------------------- fixtures keep the reader's shape


@pytest.mark.parametrize("name", ["nvidia_a40_healthy", "nvidia_a40_failing", "nvidia_gtx1080ti_old_driver"])
def test_nvidia_fixtures_have_the_reader_shape(name):
    raw = load(name)
    assert raw["available"] is True and raw["gpu_count"] == len(raw["gpus"])
    for gpu in raw["gpus"]:
        assert tuple(gpu) == GPU_FIELDS
        assert gpu["unsupported"] == sorted(gpu["errors"])
        for field in gpu["unsupported"]:
            if field in gpu:
                assert gpu[field] is None, field
        if gpu["clocks_event_reasons"] is not None:
            assert gpu["clocks_event_reasons_decoded"] == decode_clock_events(gpu["clocks_event_reasons"])


def test_a40_fixture_figures_match_the_board():
    for gpu in load("nvidia_a40_healthy")["gpus"]:
        assert gpu["power_limit_w"] == 300.0
        assert gpu["memory_total_bytes"] == 46068 * 2**20  # 48 GB with ECC on, as NVML reports it
        assert (gpu["pcie_link_gen_max"], gpu["pcie_link_width_max"]) == (4, 16)


def test_amd_fixture_has_the_reader_shape():
    raw = load("amd_rx7900xtx")
    for gpu in raw["gpus"]:
        assert tuple(gpu) == gpu_amd.GPU_FIELDS
        assert gpu["memory_total_bytes"] == 24560 * 2**20


def test_clock_event_decoding():
    assert decode_clock_events(0) == []
    assert decode_clock_events(0x48) == ["hw_slowdown", "hw_thermal_slowdown"]
    assert decode_clock_events(0x205) == ["gpu_idle", "sw_power_cap", "unknown_0x200"]


# --------------------------------------------------------------------------- healthy node


def test_healthy_a40_node_is_all_ok():
    result = checks_from_nvml(load("nvidia_a40_healthy"), expect_gpus=2)
    assert result.up
    bad = [(c.name, c.status, c.detail) for c in result.checks if c.status is not Status.OK]
    assert bad == []
    assert result.status is Status.OK
    assert result.info["driver_version"] == "550.127.05"
    assert result.info["cuda_driver_version"] == "12.4"
    assert_no_sentinels(result)


def test_healthy_a40_values_units_and_labels():
    c = checks(checks_from_nvml(load("nvidia_a40_healthy"), expect_gpus=2))
    assert c["gpu.count"].value == 2
    assert c["gpu.driver"].value == "550.127.05" and "CUDA 12.4" in c["gpu.driver"].detail
    assert c["gpu.driver"].labels == {"driver_version": "550.127.05", "cuda_version": "12.4"}

    t = c["gpu0.temperature"]
    assert (t.value, t.unit, t.metric) == (71, "°C", "toolkit_gpu_temperature_celsius")
    assert t.labels == {"gpu": "0", "name": "NVIDIA A40", "uuid": "GPU-3f2a8c1e-6b7d-4e59-a1c3-8d9e0f1a2b3c"}
    assert "warning at 90 °C, critical at 95 °C (slowdown threshold)" in t.detail

    assert c["gpu0.power"].value == pytest.approx(287.431)
    assert c["gpu0.power"].metric == "toolkit_gpu_power_watts" and "of 300 W limit" in c["gpu0.power"].detail
    assert (c["gpu0.power.limit"].value, c["gpu0.power.limit"].metric) == (
        300.0,
        "toolkit_gpu_power_limit_watts",
    )
    assert c["gpu0.memory"].metric == "toolkit_gpu_memory_used_bytes"
    assert c["gpu0.memory.total"].value == 48305799168
    assert c["gpu0.memory.total"].metric == "toolkit_gpu_memory_total_bytes"

    u = c["gpu0.utilization"]
    assert (u.value, u.unit, u.prom_value, u.metric) == (98, "%", 0.98, "toolkit_gpu_utilization_ratio")
    clk = c["gpu0.clocks"]
    assert (clk.value, clk.prom_value, clk.metric) == (1740, 1.74e9, "toolkit_gpu_sm_clock_hertz")
    assert c["gpu0.clocks.memory"].prom_value == 7.25e9
    assert c["gpu0.clocks.memory"].metric == "toolkit_gpu_memory_clock_hertz"

    # at the power cap and idle are normal clock events
    assert c["gpu0.clock_events"].status is Status.OK and "SW power cap" in c["gpu0.clock_events"].detail
    cap = c["gpu0.clock_events.sw_power_cap"]
    assert (cap.value, cap.metric, cap.labels["reason"]) == (
        1,
        "toolkit_gpu_clock_event_active",
        "sw_power_cap",
    )
    assert c["gpu0.clock_events.hw_slowdown"].value == 0
    assert c["gpu1.clock_events"].value == "gpu_idle"

    assert c["gpu1.ecc"].value == "enabled" and "3 corrected" in c["gpu1.ecc"].detail
    series = c["gpu1.ecc.aggregate_corrected"]
    assert (series.value, series.metric) == (3, "toolkit_gpu_ecc_errors_total")
    assert (series.labels["type"], series.labels["scope"]) == ("corrected", "aggregate")

    # Ampere: row remapping, not page retirement
    assert "gpu0.row_remapping" in c and "gpu0.retired_pages" not in c
    assert c["gpu0.row_remapping.pending"].value == 0

    assert c["gpu0.pcie"].value == "gen4 x16"
    assert c["gpu0.pcie.width"].metric == "toolkit_gpu_pcie_link_width"
    assert c["gpu0.pcie.generation_max"].metric == "toolkit_gpu_pcie_link_generation_max"
    idle = c["gpu1.pcie"]
    assert idle.status is Status.OK and "gen1 of gen4 at idle" in idle.detail
    assert c["gpu1.pcie.generation"].value == 1

    p = c["gpu0.persistence"]
    assert (p.value, p.prom_value, p.metric) == ("on", 1, "toolkit_gpu_persistence_mode")
    fan = c["gpu0.fan"]
    assert fan.value is None and fan.prom_value is None and "not supported" in fan.detail


# --------------------------------------------------------------------------- failing node


def test_failing_node_names_every_fault():
    result = checks_from_nvml(load("nvidia_a40_failing"), expect_gpus=2)
    c = checks(result)
    assert result.status is Status.CRITICAL

    assert c["gpu0.temperature"].status is Status.CRITICAL
    assert "at or above the slowdown threshold" in c["gpu0.temperature"].detail

    events = c["gpu0.clock_events"]
    assert events.status is Status.CRITICAL
    assert "HW slowdown" in events.detail and "HW thermal slowdown" in events.detail
    assert c["gpu0.clock_events.hw_thermal_slowdown"].value == 1

    ecc = c["gpu1.ecc"]
    assert (
        ecc.status is Status.CRITICAL and "2 uncorrectable ECC error(s) since the driver loaded" in ecc.detail
    )
    assert c["gpu1.ecc.volatile_uncorrected"].value == 2

    pcie = c["gpu1.pcie"]
    assert pcie.status is Status.WARNING and "link degraded x8 of x16" in pcie.detail
    assert c["gpu1.pcie.width"].value == 8

    remap = c["gpu1.row_remapping"]
    assert remap.status is Status.WARNING and "reset the GPU to remap" in remap.detail
    assert c["gpu1.row_remapping.pending"].value == 1

    for i in (0, 1):
        p = c[f"gpu{i}.persistence"]
        assert p.status is Status.WARNING and "nvidia-persistenced" in p.detail
        assert (p.value, p.prom_value) == ("off", 0)

    # what is fine on the failing node stays OK
    for name in ("gpu0.ecc", "gpu0.pcie", "gpu0.row_remapping", "gpu1.temperature", "gpu1.clock_events"):
        assert c[name].status is Status.OK, name
    # the series behind a verdict are not alerted twice
    assert c["gpu1.ecc.volatile_uncorrected"].status is Status.OK
    assert_no_sentinels(result)


# --------------------------------------------------------------------------- one rule at a time


def a40(i: int = 0, **fields) -> dict:
    raw = copy.deepcopy(load("nvidia_a40_healthy"))
    raw["gpus"][i].update(fields)
    return raw


def verdict(raw: dict, name: str, **kwargs):
    return checks(checks_from_nvml(raw, **kwargs))[name]


@pytest.mark.parametrize(
    ("temp", "status"), [(89, Status.OK), (90, Status.WARNING), (94, Status.WARNING), (95, Status.CRITICAL)]
)
def test_temperature_against_the_slowdown_threshold(temp, status):
    check = verdict(a40(temperature_c=temp), "gpu0.temperature")
    assert check.status is status
    if status is Status.WARNING:
        assert "near the slowdown threshold" in check.detail


@pytest.mark.parametrize(("temp", "status"), [(82, Status.OK), (83, Status.WARNING), (90, Status.CRITICAL)])
def test_temperature_defaults_without_a_threshold(temp, status):
    raw = a40(temperature_c=temp, temperature_slowdown_c=None, temperature_shutdown_c=None)
    check = verdict(raw, "gpu0.temperature")
    assert check.status is status
    assert "(default limit)" in check.detail


def test_temperature_thresholds_from_configuration():
    thresholds = {"temperature_warning_c": 65, "temperature_critical_c": 70}
    check = verdict(a40(), "gpu0.temperature", thresholds=thresholds)
    assert check.status is Status.CRITICAL and "configured limit" in check.detail
    assert verdict(a40(temperature_c=66), "gpu0.temperature", thresholds=thresholds).status is Status.WARNING
    assert verdict(a40(temperature_c=64), "gpu0.temperature", thresholds=thresholds).status is Status.OK


@pytest.mark.parametrize(
    ("mask", "status", "words"),
    [
        (0x08, Status.CRITICAL, "HW slowdown"),
        (0x80, Status.CRITICAL, "HW power brake slowdown"),
        (0x40, Status.CRITICAL, "HW thermal slowdown"),
        (0x20, Status.WARNING, "SW thermal slowdown"),
        (0x24, Status.WARNING, "SW thermal slowdown"),
        (0x04, Status.OK, "SW power cap"),
        (0x10, Status.OK, "sync boost"),
        (0x02, Status.OK, "application clocks"),
        (0x00, Status.OK, "full clocks"),
    ],
)
def test_clock_event_reasons(mask, status, words):
    raw = a40(clocks_event_reasons=mask, clocks_event_reasons_decoded=decode_clock_events(mask))
    check = verdict(raw, "gpu0.clock_events")
    assert check.status is status
    assert words in check.detail


def test_ecc_lifetime_uncorrected_is_a_warning():
    check = verdict(a40(ecc_uncorrected_aggregate=1), "gpu0.ecc")
    assert check.status is Status.WARNING and "lifetime" in check.detail


def test_ecc_corrected_only_is_ok_with_the_count():
    check = verdict(a40(ecc_corrected_volatile=5, ecc_corrected_aggregate=41), "gpu0.ecc")
    assert check.status is Status.OK and "41 corrected" in check.detail


def test_ecc_disabled():
    raw = a40(
        ecc_mode_current=False,
        ecc_mode_pending=True,
        ecc_corrected_volatile=None,
        ecc_corrected_aggregate=None,
        ecc_uncorrected_volatile=None,
        ecc_uncorrected_aggregate=None,
    )
    c = checks(checks_from_nvml(raw))
    assert c["gpu0.ecc"].status is Status.OK
    assert c["gpu0.ecc"].value == "disabled"
    assert "ECC disabled" in c["gpu0.ecc"].detail and "enable pending a reboot" in c["gpu0.ecc"].detail
    assert c["gpu0.ecc.volatile_uncorrected"].value is None


def test_row_remapping_failure_is_critical():
    check = verdict(a40(remapped_rows_uncorrectable=512, remapped_rows_failure=True), "gpu0.row_remapping")
    assert check.status is Status.CRITICAL and "remapping failed" in check.detail


def v100_like(**fields) -> dict:
    """Before Ampere: page retirement instead of row remapping."""
    return a40(
        remapped_rows_correctable=None,
        remapped_rows_uncorrectable=None,
        remapped_rows_pending=None,
        remapped_rows_failure=None,
        **fields,
    )


def test_retired_pages_before_ampere():
    c = checks(checks_from_nvml(v100_like(retired_pages_single_bit=2, retired_pages_double_bit=1,
                                          retired_pages_pending=False)))  # fmt: skip
    assert "gpu0.row_remapping" not in c
    assert c["gpu0.retired_pages"].status is Status.OK and c["gpu0.retired_pages"].value == 3
    series = c["gpu0.retired_pages.double_bit_ecc"]
    assert (series.value, series.metric) == (1, "toolkit_gpu_retired_pages_total")

    pending = verdict(
        v100_like(retired_pages_single_bit=0, retired_pages_double_bit=1, retired_pages_pending=True),
        "gpu0.retired_pages",
    )
    assert pending.status is Status.WARNING and "reset the GPU to retire" in pending.detail

    many = verdict(
        v100_like(retired_pages_single_bit=58, retired_pages_double_bit=2, retired_pages_pending=False),
        "gpu0.retired_pages",
    )
    assert many.status is Status.WARNING and "replacement" in many.detail


def test_pcie_generation_below_max_under_load_is_a_warning():
    check = verdict(a40(pcie_link_gen_current=3), "gpu0.pcie")
    assert check.status is Status.WARNING
    assert "gen3 of gen4 while the GPU is busy (98%)" in check.detail


def test_pcie_lower_generation_at_idle_is_power_saving():
    check = verdict(a40(1), "gpu1.pcie")
    assert check.status is Status.OK and "normal power saving" in check.detail
    # a sliver of utilisation while NVML still reports the idle clock event is idle too
    check = verdict(a40(1, utilization_gpu_percent=2), "gpu1.pcie")
    assert check.status is Status.OK


def test_pcie_width_degraded_even_at_idle():
    check = verdict(a40(1, pcie_link_width_current=8), "gpu1.pcie")
    assert check.status is Status.WARNING and "x8 of x16" in check.detail


def test_pcie_slot_slower_than_the_gpu_is_said_not_alarmed():
    check = verdict(a40(pcie_link_gen_current=3, pcie_link_gen_max=3), "gpu0.pcie")
    assert check.status is Status.OK
    assert "the slot limits the link to gen3; the GPU supports gen4" in check.detail


def test_persistence_off_is_only_a_warning_on_linux():
    raw = a40(persistence_mode=False)
    assert verdict(raw, "gpu0.persistence").status is Status.WARNING
    raw["os"] = "Windows"
    assert verdict(raw, "gpu0.persistence").status is Status.OK


def test_fewer_gpus_than_expected_is_critical():
    check = verdict(load("nvidia_a40_healthy"), "gpu.count", expect_gpus=4)
    assert check.status is Status.CRITICAL and check.detail == "expected 4, found 2"
    assert verdict(load("nvidia_a40_healthy"), "gpu.count").status is Status.OK


def test_a_lost_gpu_is_critical_and_the_others_are_still_judged():
    raw = load("nvidia_a40_healthy")
    lost = dict.fromkeys(GPU_FIELDS)
    lost.update(index=1, unsupported=["handle"], errors={"handle": "GpuIsLost"})
    raw["gpus"][1] = lost
    c = checks(checks_from_nvml(raw, expect_gpus=2))
    assert c["gpu1.device"].status is Status.CRITICAL and "GpuIsLost" in c["gpu1.device"].detail
    assert "gpu1.temperature" not in c
    assert c["gpu0.temperature"].status is Status.OK


# --------------------------------------------------------------------------- unsupported fields


def test_old_driver_unsupported_fields_are_none_not_numbers():
    result = checks_from_nvml(load("nvidia_gtx1080ti_old_driver"))
    c = checks(result)
    assert c["gpu0.temperature"].value == 47
    assert c["gpu0.ecc"].status is Status.OK and c["gpu0.ecc"].value is None
    assert "not supported" in c["gpu0.ecc"].detail
    for series in ("volatile_corrected", "aggregate_uncorrected"):
        assert c[f"gpu0.ecc.{series}"].value is None
    assert c["gpu0.retired_pages"].value is None and "not supported" in c["gpu0.retired_pages"].detail
    assert "gpu0.row_remapping" not in c
    assert "gen1 of gen3 at idle" in c["gpu0.pcie"].detail
    assert c["gpu0.fan"].prom_value == 0.23
    assert c["gpu0.persistence"].status is Status.WARNING
    assert result.status is Status.WARNING
    assert_no_sentinels(result)


def test_a_gpu_that_answers_nothing_but_its_name():
    """Every measurement None (a vGPU guest, a GPU half off the bus): no crash, no numeric value."""
    raw = load("nvidia_gtx1080ti_old_driver")
    gpu = raw["gpus"][0]
    for field in GPU_FIELDS:
        if field not in ("index", "name", "uuid", "pci_bus_id", "unsupported", "errors"):
            gpu[field] = None
    result = checks_from_nvml(raw)
    per_gpu = [c for c in result.checks if c.name.startswith("gpu0.")]
    assert per_gpu
    for check in per_gpu:
        assert check.value is None and check.prom_value is None, check
        assert check.status is Status.OK, check
    assert "not supported" in checks(result)["gpu0.temperature"].detail
    assert_no_sentinels(result)


# --------------------------------------------------------------------------- no driver


def test_no_driver_is_ok_when_no_gpu_is_expected():
    raw = {"available": False, "source": "nvml", "error": "LibraryNotFound: NVML Shared Library Not Found"}
    result = checks_from_nvml(raw)
    assert not result.up
    [check] = result.checks
    assert (check.name, check.status) == ("gpu.nvidia", Status.OK)
    assert check.detail.startswith("no NVIDIA driver (LibraryNotFound")


def test_no_driver_is_critical_when_gpus_are_expected():
    raw = {"available": False, "source": "nvml", "error": "DriverNotLoaded: Driver Not Loaded"}
    result = checks_from_nvml(raw, expect_gpus=2)
    assert not result.up
    [check] = result.checks
    assert check.status is Status.CRITICAL
    assert "expected 2 GPU(s), but no NVIDIA driver (DriverNotLoaded" in check.detail


# --------------------------------------------------------------------------- the real NVML of this machine


def test_read_nvml_for_real():
    raw = read_nvml()
    json.dumps(raw)  # a snapshot can always be recorded as a fixture
    result = checks_from_nvml(raw)
    if not raw["available"]:
        assert isinstance(raw["error"], str) and raw["error"]
        assert [c.name for c in result.checks] == ["gpu.nvidia"]
        assert result.status is Status.OK and not result.up
        assert checks_from_nvml(raw, expect_gpus=1).status is Status.CRITICAL
    else:  # a GPU host: the live snapshot has the recorded fixtures' shape
        assert raw["driver_version"] and raw["gpu_count"] == len(raw["gpus"])
        for gpu in raw["gpus"]:
            assert tuple(gpu) == (*GPU_FIELDS, *EXTRA_FIELDS)
            assert gpu["unsupported"] == sorted(gpu["errors"])
        assert checks(result)["gpu.count"].value == raw["gpu_count"]
        assert_no_sentinels(result)


def test_read_nvml_without_a_driver():
    raw = read_nvml()
    if raw["available"]:
        pytest.skip("this machine has an NVIDIA driver")
    assert raw == {"available": False, "source": "nvml", "error": raw["error"]}
    assert "LibraryNotFound" in raw["error"] or "DriverNotLoaded" in raw["error"]


def test_collect_for_real():
    """The GPU section as `toolkit health` reads it here: NVML for real, then amdsmi, through the run."""
    raw = read_nvml()
    report = run.collect(run.Options(skip={"bmc", "docker", "system", "qdrant"}))
    [section] = report.collectors
    samples = prom.render(report, 0.0).splitlines()
    values = dict(line.rsplit(" ", 1) for line in samples if line and not line.startswith("#"))
    assert section.name == "gpu"
    if raw["available"]:  # an NVIDIA host
        assert section.up and section.info["driver_version"] == raw["driver_version"]
        assert checks(section)["gpu.count"].value == raw["gpu_count"]
        assert float(values['toolkit_up{collector="gpu"}']) == 1  # "1" or "1.0", as the renderer writes it
        return
    if read_amdsmi()["available"]:  # an AMD host
        assert section.up and section.info["vendor"] == "amd"
        return
    # no driver here: the NVIDIA result says why, names NVML's error, and exports no measurement
    assert not section.up and report.status is Status.OK
    assert re.fullmatch(r"no NVIDIA driver \((LibraryNotFound|DriverNotLoaded): .+\)", section.detail)
    [check] = section.checks
    assert (check.name, check.status, check.value, check.metric) == ("gpu.nvidia", Status.OK, None, None)
    assert check.detail == section.detail
    assert float(values['toolkit_up{collector="gpu"}']) == 0  # "0" or "0.0", as the renderer writes it
    assert float(values['toolkit_check_status{check="gpu.nvidia",collector="gpu"}']) == 0
    assert not [line for line in samples if line.startswith("toolkit_gpu_")]
    expected = gpu_nvidia.collect(expect_gpus=2)
    assert not expected.up and expected.status is Status.CRITICAL
    assert expected.checks[0].detail == f"expected 2 GPU(s), but {section.detail}"


# --------------------------------------------------------------------------- AMD


def test_amd_7900xtx_is_all_ok():
    result = checks_from_amdsmi(load("amd_rx7900xtx"), expect_gpus=1)
    c = checks(result)
    assert result.up and result.status is Status.OK
    t = c["amd0.temperature"]
    assert (t.value, t.metric) == (52, "toolkit_gpu_temperature_celsius")
    assert t.labels == {
        "sensor": "hotspot",
        "gpu": "0",
        "name": "Radeon RX 7900 XTX",
        "uuid": "5bff744c-0000-1000-80c5-3a9e7d1f2b46",
        "vendor": "amd",
    }
    assert "warning at 105 °C, critical at 110 °C (hotspot critical limit)" in t.detail
    assert c["amd0.temperature_edge"].value == 44 and c["amd0.temperature_edge"].labels["sensor"] == "edge"
    assert c["amd0.temperature_vram"].value == 58
    assert c["amd0.power"].value == 47.0 and "average socket power" in c["amd0.power"].detail
    assert c["amd0.power.limit"].metric == "toolkit_gpu_power_limit_watts"
    assert c["amd0.memory.total"].value == 24560 * 2**20
    assert c["amd0.memory"].metric == "toolkit_gpu_memory_used_bytes"
    u = c["amd0.utilization"]
    assert (u.value, u.prom_value, u.metric) == (3, 0.03, "toolkit_gpu_utilization_ratio")
    assert "memory controller" not in u.detail  # UMC activity is N/A on Navi
    assert c["amd.driver"].value == "6.10.5" and c["amd.count"].value == 1
    assert all(ch.labels.get("vendor") == "amd" for ch in result.checks if ch.metric)
    assert_no_sentinels(result)


@pytest.mark.parametrize(
    ("hotspot", "status"), [(104, Status.OK), (105, Status.WARNING), (110, Status.CRITICAL)]
)
def test_amd_hotspot_against_its_critical_limit(hotspot, status):
    raw = load("amd_rx7900xtx")
    raw["gpus"][0]["temperature_hotspot_c"] = hotspot
    assert checks(checks_from_amdsmi(raw))["amd0.temperature"].status is status


def test_amd_edge_only_with_defaults_and_none_fields():
    raw = load("amd_rx7900xtx")
    gpu = raw["gpus"][0]
    gpu.update(
        temperature_hotspot_c=None,
        temperature_edge_critical_c=None,
        temperature_edge_c=96,
        temperature_vram_c=None,
        power_w=None,
        power_source=None,
        utilization_gfx_percent=None,
    )
    result = checks_from_amdsmi(raw)
    c = checks(result)
    assert c["amd0.temperature"].labels["sensor"] == "edge"
    assert c["amd0.temperature"].status is Status.WARNING and "default limit" in c["amd0.temperature"].detail
    assert "amd0.temperature_edge" not in c and "amd0.temperature_vram" not in c
    assert c["amd0.power"].value is None and "not supported" in c["amd0.power"].detail
    assert c["amd0.utilization"].prom_value is None
    assert_no_sentinels(result)


def test_amd_fewer_gpus_than_expected():
    check = checks(checks_from_amdsmi(load("amd_rx7900xtx"), expect_gpus=2))["amd.count"]
    assert check.status is Status.CRITICAL and check.detail == "expected 2, found 1"


def test_amdsmi_markers_and_units():
    assert gpu_amd.number("N/A") is None
    assert gpu_amd.number(0xFFFF) is None and gpu_amd.number(0xFFFFFFFF) is None
    assert gpu_amd.number(2**64 - 1) is None and gpu_amd.number(True) is None
    assert gpu_amd.number(42) == 42
    assert gpu_amd.watts(327) == 327.0
    assert gpu_amd.watts(300_000_000) == 300.0  # ROCm 7 reports power_limit in µW
    assert gpu_amd.celsius(52) == 52 and gpu_amd.celsius(67500) == 67.5


def test_read_amdsmi_for_real():
    raw = read_amdsmi()
    json.dumps(raw)
    if raw["available"]:
        for gpu in raw["gpus"]:
            assert tuple(gpu) == gpu_amd.GPU_FIELDS
        return
    assert raw["error"]
    assert checks_from_amdsmi(raw).status is Status.OK
    no_gpu = checks_from_amdsmi(raw, expect_gpus=1)
    assert not no_gpu.up
    [check] = no_gpu.checks
    assert (check.name, check.status) == ("gpu.amd", Status.CRITICAL)


def test_nvml_that_cannot_count_gpus_is_unknown():
    raw = load("nvidia_a40_healthy")
    raw.update(gpu_count=None, gpus=[], errors={"gpu_count": "Unknown"})
    check = checks(checks_from_nvml(raw, expect_gpus=2))["gpu.count"]
    assert check.status is Status.UNKNOWN and "Unknown" in check.detail


def test_a_gpu_lost_in_the_middle_of_a_read():
    raw = a40(1, temperature_c=None, power_w=None)
    raw["gpus"][1]["errors"].update(temperature_c="GpuIsLost", power_w="GpuIsLost")
    c = checks(checks_from_nvml(raw))
    assert c["gpu1.device"].status is Status.CRITICAL and "GpuIsLost" in c["gpu1.device"].detail
    assert c["gpu1.temperature"].value is None
    assert "gpu0.device" not in c
