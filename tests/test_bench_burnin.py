"""`toolkit bench --burn-in`: a real burn-in on this CPU, interrupts, bad input, the error count and the
throttle summary.

This machine has no GPU and no NVML: the CLI runs check that the record says so and holds no GPU
readings. The NVML side is held to recorded-shape samples: clock-event bitmasks as NVML returns them.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time

import jsonschema
import pytest

from toolkit.bench import burnin, burnin_sampler
from toolkit.errors import UsageError
from toolkit.nvml import CLOCK_EVENT_REASONS

from conftest import REPO, load_schema, toolkit

BIT = {name: bit for bit, name in CLOCK_EVENT_REASONS.items()}


@pytest.fixture(scope="module")
def burn_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("burn-in")
    json_path = out / "run.json"
    t0 = time.monotonic()
    proc = toolkit(
        "bench",
        "--burn-in",
        "3s",
        "--threads",
        "1",
        "--json",
        str(json_path),
        "--results-dir",
        str(out / "results"),
        timeout=120,
    )
    doc = json.loads(json_path.read_text()) if json_path.exists() else None
    return proc, doc, out, time.monotonic() - t0


def test_cpu_burn_in_records_intervals_and_passes(burn_run):
    proc, doc, _, _ = burn_run
    assert proc.returncode == 0, proc.stderr
    jsonschema.validate(doc, load_schema())
    assert doc["verdict"] == "pass" and doc["complete"] is True
    assert doc["configuration"]["workloads"] == ["burn_in"]
    [rec] = doc["results"]
    assert rec["workload"] == "burn_in" and rec["status"] == "pass"
    m, b = rec["metrics"], rec["burn_in"]
    intervals = b["intervals"]
    assert len(intervals) >= 2  # 3 s in intervals of 1 s
    assert m["errors_total"] == 0 and m["errors_per_interval"] == [0] * len(intervals)
    assert m["iterations_total"] == sum(i["iterations"] for i in intervals) >= len(intervals)
    assert all(i["flops_per_second"] > 1e8 for i in intervals)
    assert m["flops_per_second_per_interval"] == [i["flops_per_second"] for i in intervals]
    assert 3 <= m["burn_in_seconds"] < 6
    # consecutive intervals cover the run without gaps
    assert intervals[0]["start_seconds"] == 0
    assert all(a["end_seconds"] == b["start_seconds"] for a, b in itertools.pairwise(intervals))
    # a run under two minutes: both windows are the whole run
    assert m["first_minute_flops_per_second"] == pytest.approx(m["last_minute_flops_per_second"])
    assert m["sustained_flops_ratio"] == pytest.approx(1.0)
    assert rec["expected"]["errors_total"]["status"] == "pass"
    assert rec["config"]["dtype"] == "float32" and rec["config"]["devices"] == ["cpu"]
    assert (
        rec["config"]["tolerance"]["relative"] == 0 and "bit for bit" in rec["config"]["tolerance"]["basis"]
    )
    assert "0 errors" in proc.stderr and "Traceback" not in proc.stderr


def test_without_nvml_the_record_says_so_and_invents_no_readings(burn_run):
    _, doc, _, _ = burn_run
    rec = doc["results"][0]
    sampler, throttle = rec["burn_in"]["sampler"], rec["burn_in"]["throttle"]
    assert "no NVML" in sampler["note"] and sampler["gpus"] == {}
    assert throttle["throttled"] is None
    assert throttle["summary"] == "throttling not sampled: no NVML readings"
    assert "throttled_samples_ratio" not in rec["expected"]
    for key in ("temperature_max_celsius", "power_mean_watts", "power_max_watts", "sm_clock_min_hertz"):
        assert key not in rec["metrics"]
    # what the CPU exposes comes from psutil and is named as a CPU reading
    assert sampler["source"] == "psutil" and "psutil" in sampler["note"]
    assert any("no NVML" in n for n in rec["notes"])
    assert all("gpus" not in i["devices"]["cpu"] for i in rec["burn_in"]["intervals"])


def test_saved_result_equals_json_and_no_temp_files(burn_run):
    _, doc, out, _ = burn_run
    [saved] = (out / "results").glob("bench-*.json")
    assert json.loads(saved.read_text()) == doc
    assert not list((out / "results").glob(".*.tmp"))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("1h", 3600), ("45", 45), ("1.5h", 5400), (" 2M ", 120), ("0.5s", 0.5)],
)
def test_durations(text, seconds):
    assert burnin.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10x", "0", "0s", "-5m", "m", "1h30m", "ten minutes", "1e3"])
def test_bad_durations_are_usage_errors(text):
    with pytest.raises(UsageError) as err:
        burnin.parse_duration(text)
    assert "90s, 10m, 1h" in err.value.hint


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--burn-in", "10x"], "--burn-in: '10x' is not a duration"),
        (["--burn-in", "5m", "--workloads", "matmul"], "--burn-in replaces the load list"),
    ],
)
def test_bad_burn_in_exits_2_with_one_line(tmp_path, args, message):
    proc = toolkit("bench", *args, "--results-dir", str(tmp_path / "results"), timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == f"toolkit: error: {message}" and lines[1].startswith("  hint: ")
    assert len(lines) == 2 and "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()  # nothing written


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_keeps_the_finished_intervals(tmp_path, sig):
    results = tmp_path / "results"
    results_dir = ("--results-dir", str(results))
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "bench", "--burn-in", "60s", "--threads", "1", *results_dir],
        cwd=REPO,
        env={**os.environ, "NO_COLOR": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as in a terminal: a shell without job control starts background commands with SIGINT
        # ignored, and Python then installs no KeyboardInterrupt handler
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    doc, saved = None, []
    try:
        while time.monotonic() < deadline:  # wait until an interval is on disk
            saved = list(results.glob("bench-*.json")) if results.exists() else []
            if saved:
                doc = json.loads(saved[0].read_text())
                if doc["results"] and len(doc["results"][0]["burn_in"]["intervals"]) >= 1:
                    break
            time.sleep(0.1)
        else:
            pytest.fail(f"no burn-in interval was saved: {doc}")
        saved_before = doc["results"][0]["burn_in"]["intervals"]
        # a killed run would keep this: the partial record, schema-valid, with its errors so far
        jsonschema.validate(doc, load_schema())
        assert doc["complete"] is False and doc["results"][0]["metrics"]["errors_total"] == 0
        sent = time.monotonic()
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert took < 5, f"took {took:.1f} s to stop"
    doc = json.loads(saved[0].read_text())
    jsonschema.validate(doc, load_schema())
    assert doc["verdict"] == "interrupted" and doc["complete"] is False
    [rec] = doc["results"]
    assert rec["status"] == "error" and rec["error"]["kind"] == "interrupted"
    assert "interval(s) kept" in rec["error"]["message"] and "0 errors" in rec["error"]["message"]
    intervals = rec["burn_in"]["intervals"]
    assert len(intervals) >= len(saved_before) and intervals[: len(saved_before)] == saved_before
    assert rec["metrics"]["iterations_total"] == sum(i["iterations"] for i in intervals)
    assert rec["metrics"]["burn_in_seconds"] < 30
    assert "Interrupted" in stderr and "Traceback" not in stderr
    assert not list(results.glob(".*.tmp"))


# --------------------------------------------------------------------------- the numerical check


def _result(dtype=None):
    import torch

    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(64, 64, generator=gen), torch.randn(64, 64, generator=gen)
    c = a @ b
    return c if dtype is None else c.to(dtype)


def _flip(t, index: int, bit: int):
    """A copy of `t` with one bit of one element flipped in its binary representation."""
    import torch

    out = t.clone()
    as_int = out.view(torch.int32 if t.element_size() == 4 else torch.int16).view(-1)
    as_int[index] ^= 1 << bit
    return out


def test_a_repeated_matmul_reproduces_its_result_exactly():
    import torch

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 256, generator=gen), torch.randn(256, 256, generator=gen)
    ref, c = torch.mm(a, b), torch.empty(256, 256)
    for _ in range(5):
        torch.mm(a, b, out=c)
        assert int(burnin.count_mismatches(c, ref)) == 0


def test_one_corrupted_element_is_counted():
    ref = _result()
    corrupt = _flip(ref, 1234, 0)  # the last bit of the significand: one unit in the last place
    assert corrupt.view(-1)[1234] != ref.view(-1)[1234]
    assert int(burnin.count_mismatches(corrupt, ref)) == 1
    assert int(burnin.count_mismatches(ref.clone(), ref)) == 0
    # a tolerance above one ulp lets the last bit pass but not a flipped exponent bit
    assert int(burnin.count_mismatches(corrupt, ref, rtol=1e-5)) == 0
    assert int(burnin.count_mismatches(_flip(ref, 7, 27), ref, rtol=1e-5)) == 1
    both = _flip(_flip(ref, 7, 27), 1234, 0)
    assert int(burnin.count_mismatches(both, ref)) == 2


def test_nan_always_counts_and_16_bit_results_are_checked():
    import torch

    ref = _result(torch.bfloat16)
    assert int(burnin.count_mismatches(_flip(ref, 5, 0), ref)) == 1
    nan = ref.clone()
    nan.view(-1)[9] = float("nan")
    assert int(burnin.count_mismatches(nan, ref)) == 1
    assert int(burnin.count_mismatches(nan, ref, rtol=0.5)) == 1
    assert int(burnin.count_mismatches(nan, nan)) == 1  # NaN is never equal, not even to itself


# --------------------------------------------------------------------------- throttling


def test_power_cap_in_4_of_10_samples():
    masks = [BIT["sw_power_cap"]] * 4 + [0] * 6
    s = burnin_sampler.summarize_clock_events(masks)
    assert s["summary"] == "throttled: SW power cap 40% of samples"
    assert s["throttled"] is True and s["hw_reasons"] == [] and s["samples"] == 10
    assert s["reasons"]["sw_power_cap"] == {"label": "SW power cap", "samples": 4, "fraction": 0.4}
    assert s["throttled_samples_ratio"] == 0.4


def test_hw_reasons_and_samples_that_could_not_be_read():
    cap, thermal, boost = BIT["sw_power_cap"], BIT["hw_thermal_slowdown"], BIT["sync_boost"]
    masks = [cap | boost, cap | thermal, thermal, boost, None, None]  # None: NVML did not answer
    s = burnin_sampler.summarize_clock_events(masks)
    assert s["samples"] == 4
    assert s["summary"] == (
        "throttled: HW thermal slowdown 50% of samples, SW power cap 50% of samples; "
        "also sync boost 50% (not throttling)"
    )
    assert s["hw_reasons"] == ["hw_thermal_slowdown"] and s["throttled_samples_ratio"] == 0.75


def test_idle_or_sync_boost_is_not_throttling_and_no_samples_is_unknown():
    s = burnin_sampler.summarize_clock_events([BIT["gpu_idle"], BIT["sync_boost"], 0])
    assert s["throttled"] is False and s["summary"].startswith("not throttled (3 samples)")
    empty = burnin_sampler.summarize_clock_events([None, None])
    assert empty["throttled"] is None and empty["summary"] == "clock-event reasons not sampled"


def test_status_fail_on_errors_warn_on_hw_throttle_pass_on_power_cap():
    cap = burnin_sampler.summarize_clock_events([BIT["sw_power_cap"]] * 2 + [0] * 3)
    hot = burnin_sampler.summarize_clock_events([BIT["sw_thermal_slowdown"], 0])
    expected, verdict = burnin.judge(0, {"cuda:0": cap})
    assert expected["errors_total"]["status"] == "pass"
    assert expected["throttled_samples_ratio"]["status"] == "pass"
    assert verdict == {"throttled": True, "hw_reasons": [], "summary": cap["summary"]}
    expected, verdict = burnin.judge(0, {"cuda:0": cap, "cuda:1": hot})
    assert expected["throttled_samples_ratio"]["status"] == "warn"
    assert verdict["hw_reasons"] == ["sw_thermal_slowdown"]
    assert verdict["summary"].startswith("cuda:0: throttled: SW power cap 40% of samples; cuda:1: ")
    expected, _ = burnin.judge(3, {})
    assert expected["errors_total"]["status"] == "fail" and "throttled_samples_ratio" not in expected


def test_gpu_samples_are_aggregated_as_read():
    # the sampler's NVML-shaped rows: watts, °C, MHz and the clock-event bitmask; None where unread
    rows = [
        {"temperature_celsius": 61, "power_watts": 650.5, "sm_clock_mhz": 1980, "clock_events": 0},
        {"temperature_celsius": 74, "power_watts": 699.0, "sm_clock_mhz": 1755, "clock_events": 4},
        {"temperature_celsius": None, "power_watts": None, "sm_clock_mhz": None, "clock_events": None},
    ]
    samples = [{"t": float(i), "gpus": {"cuda:0": r}} for i, r in enumerate(rows)]
    stats = burnin_sampler.gpu_stats(samples, "cuda:0")
    assert stats["samples"] == 3 and stats["temperature_max_celsius"] == 74
    assert stats["power_mean_watts"] == pytest.approx(674.75) and stats["power_max_watts"] == 699.0
    assert stats["sm_clock_min_mhz"] == 1755 and stats["clock_events"]["samples"] == 2
    assert stats["clock_events"]["summary"] == "throttled: SW power cap 50% of samples"
    assert burnin_sampler.gpu_stats(samples, "cuda:1")["temperature_max_celsius"] is None
