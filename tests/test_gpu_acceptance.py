"""The prepared GPU acceptance run (benchmarks/gpu_acceptance.py, docs/GPU_ACCEPTANCE.md) runs end to end
at tiny scale on the CPU: every part writes its JSON (or a skip with its reason), the summary lists them
all, and the time budget stops or skips parts without losing the ones that finished."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_acceptance.py"
PARTS = ("health", "matmul", "bandwidth", "recipes", "burnin", "overhead")
STATUSES = ("done", "failed", "timeout", "skipped")

sys.path.insert(0, str(REPO / "benchmarks"))
from acceptance.budget import Budget, Plan  # noqa: E402


def acceptance(*args: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1"},
    )


def part(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.json").read_text())


def positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def tiny_acceptance(tmp_path_factory):
    out = tmp_path_factory.mktemp("acceptance")
    # the budget bounds the run; the margin covers the last part's stop and the interpreter
    proc = acceptance("--tiny", "--out", str(out), "--budget", "240", timeout=240 + 90)
    return proc, out


def test_every_part_writes_its_json_and_the_summary_lists_them(tiny_acceptance):
    proc, out = tiny_acceptance
    summary = json.loads((out / "summary.json").read_text())
    assert [p["part"] for p in summary["parts"]] == list(PARTS), proc.stderr[-3000:]
    for entry in summary["parts"]:
        rec = part(out, entry["part"])
        assert rec["status"] in STATUSES, rec
        assert entry["status"] == rec["status"]
        if rec["status"] != "done":
            assert rec["reason"], rec  # a part that did not finish says why
    all_done = all(p["status"] == "done" for p in summary["parts"])
    assert proc.returncode == (0 if all_done else 3), proc.stderr[-3000:]
    assert summary["finished_at"] and summary["spent_seconds"] <= 240 + 30
    # the plain-text summary table, with every part on it
    for name in PARTS:
        assert f"\n{name} " in proc.stdout
    assert "targets:" in proc.stdout and "not judged at tiny scale" in proc.stdout


def test_matmul_and_bandwidth_are_measured_against_a_plain_loop(tiny_acceptance):
    _, out = tiny_acceptance
    for name in ("matmul", "bandwidth"):
        rec = part(out, name)
        assert rec["status"] == "done", rec
        f = rec["figures"]
        assert positive(f["toolkit"]) and positive(f["plain"]) and positive(f["ratio"]), f
        assert all(positive(r) for r in f["paired_ratios"])
        assert f["toolkit_load"]["status"]  # the toolkit's own record of its load is kept


def test_overhead_has_the_toolkit_and_the_bare_trl_figures(tiny_acceptance):
    _, out = tiny_acceptance
    rec = part(out, "overhead")
    assert rec["status"] == "done", rec
    f = rec["figures"]
    assert positive(f["toolkit_tokens_per_second"]) and positive(f["bare_tokens_per_second"]), f
    assert math.isfinite(f["overhead"])
    assert f["tokens_per_step"]["toolkit"] == pytest.approx(f["tokens_per_step"]["bare"])  # the same load
    assert (out / "raw" / "overhead" / "bare-spec.json").exists()


def test_recipes_and_health_keep_what_the_toolkit_wrote(tiny_acceptance):
    _, out = tiny_acceptance
    rec = part(out, "recipes")
    from toolkit.bench.recipes import shipped

    rows = {r["recipe"]: r for r in rec["figures"].get("recipes", [])}
    if rec["status"] == "done":
        assert set(rows) == set(shipped())
        assert (out / "raw" / "recipes.bench.json").exists()
        ran = [
            r for r in rows.values() if r["status"] in ("pass", "warn", "fail", "inconclusive", "unstable")
        ]
        assert ran and all("memory_estimate_bytes" in r and "peak_memory_bytes" in r for r in ran)
        # at tiny scale the estimates are too small to compare with RSS: said, not hidden
        assert all(r["plan_over_measured"] or r.get("plan_not_compared") for r in ran)
    health = part(out, "health")
    if health["status"] == "done":
        report = json.loads((out / "raw" / "health.json").read_text())
        assert health["figures"]["checks"] == len(report["checks"])


def test_a_part_past_the_budget_is_skipped_and_the_earlier_parts_are_kept(tmp_path):
    # health may take at most its minimum of 3 s here; then under 10 s are left, below the burn-in's minimum
    proc = acceptance(
        "--tiny", "--out", str(tmp_path), "--budget", "8", "--parts", "health,burnin", timeout=60
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    health, burnin = part(tmp_path, "health"), part(tmp_path, "burnin")
    assert health["status"] in ("done", "timeout") and health["allowance_seconds"] <= 8
    assert burnin["status"] == "skipped" and burnin["reason"].startswith("budget spent:"), burnin
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [(p["part"], p["status"]) for p in summary["parts"]] == [
        ("health", health["status"]),
        ("burnin", "skipped"),
    ]
    assert "budget spent" in proc.stdout


def test_budget_shares_and_skips():
    now = [0.0]
    budget = Budget(100, clock=lambda: now[0])
    a, b, c = Plan("a", 10, 5), Plan("b", 30, 20), Plan("c", 60, 50)
    assert budget.allowance(a, [b, c]) == (10.0, None)  # its share of what is left
    now[0] = 5.0  # a finished early: its time goes to the later parts
    assert budget.allowance(b, [c]) == pytest.approx((95 * 30 / 90, None))
    now[0] = 45.0  # b took 40 s: the 55 s left are c's, above its minimum
    assert budget.allowance(c, []) == (55.0, None)
    now[0] = 60.0  # had b taken 55 s, c could not get its minimum: skipped, with the reason
    allowed, why = budget.allowance(c, [])
    assert allowed is None
    assert why == "budget spent: 40 s of the 100 s budget left, this part needs at least 50 s"
    assert budget.allowance(Plan("d", 1, 5), [Plan("e", 100, 1)]) == (5.0, None)  # never below its minimum


def test_an_unknown_part_is_one_clear_error(tmp_path):
    proc = acceptance("--tiny", "--out", str(tmp_path), "--parts", "matmul,gpus", timeout=60)
    assert proc.returncode != 0
    assert "unknown part(s) gpus" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "summary.json").exists()
