"""`toolkit bench --gpus N` for real on this CPU: N ranks under torchrun with gloo, one document.

The same launcher, process group, DDP training and all-reduce code paths as on a multi-GPU node;
only the backend (gloo, not NCCL) and the device (CPU processes sharing the cores) differ.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from conftest import REPO, load_schema, toolkit

LOADS = ["matmul", "memory_bandwidth", "kto_lora", "allreduce"]  # the cpu profile measures its peaks first
RUN = ("bench", "--gpus", "2", "--scale", "tiny", "--workloads", "kto_lora,allreduce", "--threads", "1")


pytestmark = pytest.mark.slow  # real torchrun runs: tens of seconds each on two cores


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp-run")
    (out / "tmp").mkdir()
    json_path = out / "run.json"
    proc = toolkit(
        *RUN,
        *("--json", str(json_path), "--results-dir", str(out / "results")),
        env={"TMPDIR": str(out / "tmp")},  # where the launcher keeps the ranks' hand-over files
        timeout=300,
    )
    doc = json.loads(json_path.read_text()) if json_path.exists() else None
    return proc, doc, out


def test_two_ranks_run_every_load_into_one_document(ddp_run):
    proc, doc, out = ddp_run
    assert doc is not None, proc.stderr
    jsonschema.validate(doc, load_schema())
    assert [r["workload"] for r in doc["results"]] == LOADS
    assert doc["distributed"]["world_size"] == 2 and doc["distributed"]["backend"] == "gloo"
    assert "functional test" in doc["distributed"]["devices"]
    assert doc["configuration"]["gpus"] == 2 and doc["complete"] is True
    for result in doc["results"]:
        assert [r["rank"] for r in result["ranks"]] == [0, 1]
        assert result["aggregation"]["world_size"] == 2
    # all-reduce on the CPU has no expectation to meet: a warning, never a failure
    assert doc["verdict"] == "warn" and proc.returncode == 0, proc.stderr
    # only rank 0 saved, once; the launcher printed the table; the ranks' noise stayed in their logs
    saved = list((out / "results").iterdir())
    assert len(saved) == 1 and json.loads(saved[0].read_text()) == doc
    assert "2 ranks (gloo)" in proc.stdout and "Verdict: warn" in proc.stdout
    assert "Traceback" not in proc.stderr and "[rank" not in proc.stderr and "Warning" not in proc.stderr
    assert [p.name for p in (out / "tmp").iterdir() if p.name.startswith("toolkit-bench-ranks-")] == []
    assert not list(out.rglob("*.tmp"))


def test_training_ran_in_both_ranks_and_tokens_are_counted_once(ddp_run):
    _, doc, _ = ddp_run
    kto = doc["results"][2]
    cfg, m = kto["config"], kto["metrics"]
    assert kto["status"] in ("pass", "warn")
    for rank in kto["ranks"]:
        assert rank["metrics"]["steps_completed"] == cfg["warmup_steps"] + cfg["measured_steps"]
        assert len(rank["metrics"]["loss_per_step"]) == cfg["measured_steps"]
        # the Trainer gathers num_input_tokens_seen over the ranks: each rank's count is both batches
        per_batch = cfg["per_device_train_batch_size"] * kto["flops"]["mean_tokens_per_sequence"]
        assert abs(rank["metrics"]["tokens_per_step_mean"] / (2 * per_batch) - 1) < 0.1
    # hence the aggregate is that count over the slowest rank's time, not the sum of the ranks
    assert m["tokens_per_second"] == min(m["tokens_per_second_per_rank"]) > 0
    assert "gathered" in kto["aggregation"]["rules"]["tokens_per_second"]
    assert m["step_time_seconds_p50"] == max(m["step_time_seconds_p50_per_rank"])
    slowest = m["step_time_seconds_p50_per_rank"].index(m["step_time_seconds_p50"])
    assert kto["aggregation"]["slowest_rank"] == slowest
    assert len(m["peak_memory_bytes_per_rank"]) == 2
    assert m["peak_memory_bytes"] == max(m["peak_memory_bytes_per_rank"]) > 50 * 2**20
    assert "sum of the 2 ranks' minimums" in kto["expected"]["tokens_per_second"]["basis"]


def test_rank_local_throughput_is_summed(ddp_run):
    _, doc, _ = ddp_run
    matmul = doc["results"][0]
    per_rank = [r["metrics"]["flops_per_second"] for r in matmul["ranks"]]
    assert matmul["metrics"]["flops_per_second"] == pytest.approx(sum(per_rank))
    assert matmul["metrics"]["flops_per_second_per_rank"] == per_rank and min(per_rank) > 1e8


def test_allreduce_reports_bus_bandwidth_and_correct_sums(ddp_run):
    from toolkit.bench.settings import load_settings

    _, doc, _ = ddp_run
    ar = doc["results"][3]
    m = ar["metrics"]
    assert "error" not in ar and m["mismatched_elements_total"] == 0
    assert m["sizes_bytes"] == list(load_settings().scales["tiny"].allreduce.sizes_bytes)
    assert ar["config"]["backend"] == "gloo" and ar["config"]["world_size"] == 2
    for alg, bus, t, size in zip(
        m["algorithm_bandwidth_bytes_per_second_per_size"],
        m["bus_bandwidth_bytes_per_second_per_size"],
        m["op_time_seconds_per_size"],
        m["sizes_bytes"],
        strict=True,
    ):
        assert alg == pytest.approx(size / t) and bus == pytest.approx(alg * 2 * (2 - 1) / 2)
    assert m["bus_bandwidth_bytes_per_second"] == m["bus_bandwidth_bytes_per_second_per_size"][-1] > 0
    # both ranks report the slowest rank's time
    assert ar["ranks"][0]["metrics"]["op_time_seconds"] == ar["ranks"][1]["metrics"]["op_time_seconds"]
    exp = ar["expected"]["bus_bandwidth_bytes_per_second"]
    assert exp["min"] is None and exp["status"] == "warn" and exp["basis"].startswith("no expectation: ")
    assert ar["status"] == "warn"


def test_every_metric_of_the_ranks_and_their_aggregate_is_declared(ddp_run):
    from toolkit.bench.metrics import is_declared

    _, doc, _ = ddp_run
    keys = {k for r in doc["results"] for k in r["metrics"]}
    keys |= {k for r in doc["results"] for rank in r["ranks"] for k in rank["metrics"]}
    assert any(k.endswith("_per_rank") for k in keys)
    assert sorted(k for k in keys if not is_declared(k)) == []


TORCHRUN_FAILURE = """
Root Cause (first observed failure):
[0]:
  time      : 2026-01-01_00:00:00
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 4242)
"""


def test_the_launcher_closes_a_run_whose_rank_was_killed(tmp_path):
    """Rank 0's saved document and torchrun's summary only, as a SIGKILL leaves them: the load that was
    running gets an error naming the rank, the run is closed as failed with the loads that did not run."""
    from toolkit.bench.distributed.launcher import _complete_failed
    from toolkit.bench.document import RunDocument

    saved = tmp_path / "bench.json"
    doc = RunDocument.start(
        host="h",
        started_at="2026-01-01T00:00:00Z",
        path=saved,
        gpu_class={"name": "cpu"},
        environment={},
        configuration={"workloads": LOADS},
    )
    doc.add_result({"workload": "matmul", "status": "pass"})
    doc.progress("memory_bandwidth", 1, 5)
    (tmp_path / "torchrun.log").write_text(TORCHRUN_FAILURE)
    _complete_failed(RunDocument.read(saved), tmp_path, 2, interrupted=False)
    data = json.loads(saved.read_text())
    assert [r["workload"] for r in data["results"]] == LOADS[:2]
    failed = data["results"][1]
    assert failed["status"] == "error" and failed["error"]["kind"] == "crashed"
    assert failed["error"]["message"] == (
        "rank 1 was killed by SIGKILL (the kernel's out-of-memory killer sends SIGKILL too); "
        "the other ranks were stopped"
    )
    assert [(r["rank"], r["state"]) for r in failed["ranks"]] == [(0, "gone"), (1, "gone")]
    assert data["verdict"] == "error" and data["complete"] is False and data["finished_at"]
    assert data["not_run"] == LOADS[2:] and "in_progress" not in data


def test_bus_bandwidth_is_nccl_tests_definition():
    from toolkit.bench.workloads.allreduce import bus_bandwidth

    assert bus_bandwidth(100.0, 2) == 100.0
    assert bus_bandwidth(100.0, 4) == 150.0
    assert bus_bandwidth(100.0, 8) == 175.0


def test_allreduce_in_one_process_is_skipped_with_the_reason(tmp_path):
    proc = toolkit(
        *("bench", "--scale", "tiny", "--workloads", "allreduce", "--json", "-"),
        *("--results-dir", str(tmp_path)),
        timeout=120,
    )
    # the user named the load and it could not run: the run is incomplete (exit 4), not a pass
    assert proc.returncode == 4, proc.stderr
    doc = json.loads(proc.stdout)
    jsonschema.validate(doc, load_schema())
    (ar,) = doc["results"]  # needs no measured peaks: it runs alone
    assert ar["status"] == "skipped" and "--gpus N" in ar["notes"][0]
    assert doc["verdict"] == "incomplete" and "distributed" not in doc
    assert "skipped allreduce: skipped: all-reduce needs several processes" in proc.stderr


@pytest.mark.parametrize("n", ["1", "0", "-2"])
def test_fewer_than_two_processes_is_a_usage_error(tmp_path, n):
    proc = toolkit("bench", "--gpus", n, "--results-dir", str(tmp_path / "results"), timeout=60)
    assert proc.returncode == 2
    assert f"--gpus {n}: a distributed run needs at least 2 processes" in proc.stderr
    assert "hint:" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()


def test_more_processes_than_visible_gpus_is_refused():
    from toolkit.bench.distributed import check_gpus
    from toolkit.errors import UsageError

    with pytest.raises(UsageError, match=r"--gpus 4: only 2 GPU\(s\) visible"):
        check_gpus(4, 2)
    check_gpus(2, 2)
    check_gpus(8, None)  # no GPU: N CPU processes, the functional test path


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _rank_pid(launcher: int, rank: int) -> int | None:
    for torchrun in _children(launcher):
        for pid in _children(torchrun):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ:
                return pid
    return None


def _start_long_run(results: Path, tmp: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "toolkit", *RUN, "--set", "kto_lora.measured_steps=400"]
    return subprocess.Popen(
        [*command, "--results-dir", str(results)],
        cwd=REPO,
        env={**os.environ, "NO_COLOR": "1", "TMPDIR": str(tmp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as in a terminal: a shell without job control starts background commands with SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_training(proc: subprocess.Popen, results: Path) -> Path:
    """Until rank 0's saved document shows the training load past its first step."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        saved = list(results.glob("bench-*.json")) if results.exists() else []
        if saved:
            running = json.loads(saved[0].read_text()).get("in_progress") or {}
            if running.get("workload") == "kto_lora" and running.get("completed", 0) >= 2:
                return saved[0]
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"the training load never reported a step: {proc.communicate()[1][-2000:]}")


def test_a_rank_that_dies_ends_the_run_naming_it(tmp_path):
    results = tmp_path / "results"
    proc = _start_long_run(results, tmp_path)
    saved = _wait_for_training(proc, results)
    victim = _rank_pid(proc.pid, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)  # as the kernel's out-of-memory killer would
    killed_at = time.monotonic()
    _, stderr = proc.communicate(timeout=120)
    assert time.monotonic() - killed_at < 60, "the run did not end in bounded time"
    assert proc.returncode == 1, stderr
    doc = json.loads(saved.read_text())
    jsonschema.validate(doc, load_schema())
    assert [r["workload"] for r in doc["results"]] == LOADS[:3]
    assert [r["status"] for r in doc["results"][:2]] == ["pass", "pass"]
    kto = doc["results"][2]
    assert kto["status"] == "error" and kto["error"]["kind"] == "crashed"
    assert kto["error"]["message"].startswith("rank 1 was killed by SIGKILL")
    by_rank = {r["rank"]: r for r in kto["ranks"]}
    assert by_rank[1]["state"] == "gone"
    assert doc["verdict"] == "error" and doc["complete"] is False and doc["not_run"] == ["allreduce"]
    assert "rank 1 was killed by SIGKILL" in stderr and "logs are kept" in stderr
    assert "Traceback" not in stderr
    (kept,) = tmp_path.glob("toolkit-bench-ranks-*")
    assert (kept / "rank-0.log").exists() and (kept / "torchrun.log").exists()


def test_ctrl_c_reaches_every_rank_and_keeps_the_finished_loads(tmp_path):
    results = tmp_path / "results"
    proc = _start_long_run(results, tmp_path)
    saved = _wait_for_training(proc, results)
    proc.send_signal(signal.SIGINT)  # to the launcher only: it forwards through torchrun
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    doc = json.loads(saved.read_text())
    jsonschema.validate(doc, load_schema())
    assert doc["verdict"] == "interrupted" and doc["complete"] is False
    assert [r["status"] for r in doc["results"][:2]] == ["pass", "pass"]
    kto = doc["results"][2]
    assert kto["error"]["kind"] == "interrupted" and "reached" in kto["error"]["message"]
    # every rank recorded how far it got
    assert [r["state"] for r in kto["ranks"]] == ["interrupted", "interrupted"]
    assert all(r["metrics"]["steps_completed"] >= 2 for r in kto["ranks"])
    assert doc["not_run"] == ["allreduce"]
    assert "Interrupted" in stderr and "Traceback" not in stderr
    assert not list(tmp_path.glob("toolkit-bench-ranks-*"))
