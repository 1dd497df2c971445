"""Issue 18: the verdict counts what was asked, and the bench table survives any terminal.

- A load the user named (`--workloads`, `--recipe`) that was skipped, or any load that ran and could not be
  judged (inconclusive, unstable), makes the verdict `incomplete`, exit 4, with the reason printed; a skip
  in the default set stays a pass.
- The table fits the width it gets (40, 80, 200 columns; 80 in a pipe unless COLUMNS says otherwise):
  notes numbered below it, the status and ratio columns never dropped, ids never cut; the first line of a
  run is printed before torch is imported.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pytest
from rich.console import Console

from toolkit import glossary
from toolkit.bench import report
from toolkit.bench.document import RunDocument
from toolkit.bench.runner import requested_loads

RECIPE = "train:qlora-llama3-8b-cpu"  # a long id: never cut


def _doc() -> dict:
    """A finished run with every kind of row: a pass with spread, an inconclusive check with the busy
    machine's evidence, an unstable one, a skipped recipe with its reason, a crash."""
    busy = {"busy": True, "evidence": "3 other processes used 1.7 cores during this load"}
    return {
        "gpu_class": {"name": "cpu", "mismatch": None},
        "host": "node-with-a-long-name",
        "configuration": {"scale": "small"},
        "verdict": "incomplete",
        "contention": {**busy, "other_cpu_cores": 1.7, "loadavg_1m": 2.5, "steal_fraction": 0.0},
        "results": [
            {
                "workload": "matmul",
                "status": "pass",
                "metrics": {"flops_per_second": 1.2e10, "peak_memory_bytes": 3e8},
                "expected": {
                    "flops_per_second": {"min": 1e10, "ratio": 1.2, "status": "pass", "basis": "floor"}
                },
                "spread": {
                    "flops_per_second": {"n": 5, "median": 1.2e10, "min": 1.1e10, "max": 1.3e10, "cv": 0.031}
                },
                "notes": [],
            },
            {
                "workload": "memory_bandwidth",
                "status": "inconclusive",
                "metrics": {"bandwidth_bytes_per_second": 4e9},
                "expected": {
                    "bandwidth_bytes_per_second": {
                        "min": 8e9,
                        "ratio": 0.5,
                        "status": "inconclusive",
                        "basis": "measured peak",
                    }
                },
                "contention": {**busy, "other_cpu_cores": 1.7, "loadavg_1m": 2.5, "steal_fraction": 0.0},
                "notes": [],
            },
            {
                "workload": "inference",
                "status": "unstable",
                "metrics": {"decode_tokens_per_second_batch8": 90.0},
                "expected": {
                    "decode_tokens_per_second_batch8": {
                        "min": 100.0,
                        "ratio": 0.9,
                        "status": "unstable",
                        "basis": "floor",
                    }
                },
                "spread": {
                    "decode_tokens_per_second_batch8": {
                        "n": 5,
                        "median": 90.0,
                        "min": 40.0,
                        "max": 140.0,
                        "cv": 0.4,
                    }
                },
                "notes": ["decode_tokens_per_second_batch8 unstable: samples spread 40% (CV, limit 10%)"],
            },
            {
                "workload": RECIPE,
                "status": "skipped",
                "metrics": {},
                "expected": {},
                "notes": ["scaled down for this run: 2 layers"],
                "error": {
                    "kind": "needs_cuda",
                    "message": "needs CUDA (bitsandbytes): 4-bit recipes run on a GPU",
                },
            },
            {
                "workload": "kto_lora",
                "status": "error",
                "metrics": {},
                "expected": {},
                "notes": [],
                "error": {"kind": "crashed", "message": "crashed: RuntimeError: [boom] in the library"},
            },
        ],
    }


def _render(width: int) -> str:
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    report.render(_doc(), console)
    return console.export_text()


@pytest.mark.parametrize("width", [40, 80, 200])
def test_the_table_fits_its_width_with_status_ratio_notes_and_whole_ids(width):
    """Before: every column was no-wrap and the notes went into the `measured` cell: at 80 columns the
    `expected ≥`, `ratio` and `status` columns were cropped away (`inconcl…`), at 40 nothing but the load."""
    text = _render(width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width, text
    # every load's id whole on one line, and every status and ratio
    for load in ("matmul", "memory_bandwidth", "inference", RECIPE, "kto_lora"):
        assert any(load in line for line in lines), (load, text)
    for word in ("pass", "inconclusive", "unstable", "skipped", "error", "1.20", "0.50", "0.90"):
        assert re.search(rf"(^|\s){re.escape(word)}(\s|$)", text), (word, text)
    # the spread next to its figure
    assert "cv 3.1%" in text and "cv 40.0%" in text
    # notes below the table, numbered, each referenced from a cell
    flat = " ".join(text.split())  # notes wrap at the width
    numbers = [int(n) for n in re.findall(r"^ *\[(\d+)\] ", text, flags=re.M)]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 6, text
    for n in numbers:
        assert flat.count(f"[{n}]") >= 2, (n, text)  # the note and its reference
    for reason in (
        "needs CUDA (bitsandbytes): 4-bit recipes run on a GPU",
        "crashed: RuntimeError: [boom] in the library",
        "3 other processes used 1.7 cores during this load",
        "samples spread 40% (CV, limit 10%)",
    ):
        assert reason in flat, (reason, text)
    # the verdict names each load that is not a pass with its reason's number
    verdict = flat[flat.index("Verdict: incomplete") :]
    for load in (
        "memory_bandwidth inconclusive [",
        "inference unstable [",
        f"{RECIPE} skipped [",
        "kto_lora error [",
    ):
        assert load in verdict, (load, verdict)


def test_a_row_of_the_table_keeps_status_and_ratio_at_80_columns():
    """The columns that drop first are `expected ≥` (its figure is in the note), never ratio or status."""
    text = _render(80)
    row = next(line for line in text.splitlines() if "memory_bandwidth" in line)
    assert "0.50" in row and "inconclusive" in row, text


# -- real runs ------------------------------------------------------------------------------------


def _bench(tmp_path, *args: str, columns: str | None = None, env: dict | None = None):
    full_env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    full_env.update({"NO_COLOR": "1", **(env or {})})
    if columns:
        full_env["COLUMNS"] = columns
    argv = [sys.executable, "-m", "toolkit", "bench", "--results-dir", str(tmp_path), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=300)


def test_a_requested_load_that_was_skipped_makes_the_run_incomplete_exit_4_in_a_pipe_of_80_columns(tmp_path):
    """Before: `--workloads allreduce` in one process was skipped, yet `Verdict: pass`, exit 0; and the
    piped table was forced to 140 columns."""
    proc = _bench(tmp_path, "--workloads", "allreduce")
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, proc.stdout
    flat = " ".join(proc.stdout.split())
    assert "Verdict: incomplete (allreduce skipped [1])" in flat, proc.stdout
    assert "[1] allreduce: skipped: all-reduce needs several processes; run it with --gpus N (N >= 2)" in flat
    saved = json.loads(next(tmp_path.glob("bench-*.json")).read_text())
    assert saved["verdict"] == "incomplete" and saved["complete"] is True


def test_columns_says_the_width_of_a_pipe_and_json_stays_clean(tmp_path):
    """COLUMNS wins over the pipe's 80; `--json -` keeps stdout the document alone, with the verdict."""
    proc = _bench(tmp_path, "--workloads", "allreduce", "--json", "-", columns="200")
    assert proc.returncode == 4, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["verdict"] == "incomplete"
    lines = proc.stderr.splitlines()
    assert any("│ allreduce" in line for line in lines) and any("see [1]" in line for line in lines)
    # the note is one line of more than 80 columns: the width is COLUMNS', not the pipe's
    note = next(line for line in lines if "[1] allreduce: skipped:" in line)
    assert "(N >= 2)" in note and max(len(line) for line in lines) <= 200, proc.stderr


def test_the_first_line_comes_before_torch_is_imported(tmp_path):
    """Before: the first line on stderr (`toolkit bench: profile …`) came after torch and the trainers
    were imported, 5-12 s of nothing. PYTHONPROFILEIMPORTTIME writes a line to stderr as each module is
    imported: the run's first line must come before torch's."""
    proc = _bench(tmp_path, "--workloads", "allreduce", env={"PYTHONPROFILEIMPORTTIME": "1"})
    lines = proc.stderr.splitlines()
    ours = [i for i, line in enumerate(lines) if not line.startswith("import time:")]
    torch = next(i for i, line in enumerate(lines) if re.search(r"\|\s+torch$", line))
    assert lines[ours[0]] == "toolkit bench: loading torch …", lines[ours[0]]
    assert ours[0] < torch


# -- the rule ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "requested", "verdict", "code"),
    [
        (["pass", "skipped"], [], "pass", 0),  # a default-set skip (cannot run here) stays a pass
        (["pass", "skipped"], ["skipped"], "incomplete", 4),  # ... a named one does not
        (["pass", "inconclusive"], [], "incomplete", 4),  # a load that ran and was not judged
        (["warn", "unstable"], [], "incomplete", 4),
        (["fail", "skipped"], ["skipped"], "fail", 1),  # a failure is never hidden behind incomplete
        (["error", "inconclusive"], [], "error", 1),
        (["pass", "warn"], ["pass"], "warn", 0),
    ],
)
def test_the_verdict_counts_what_was_asked(statuses, requested, verdict, code):
    got = glossary.verdict_of(statuses, False, requested)
    assert got == verdict and glossary.verdict_exit_code(got) == code


def test_requested_loads_are_the_named_ones_not_the_default_set_or_the_peaks():
    planned = ["matmul", "memory_bandwidth", "allreduce", "train:sft-smollm2-cpu"]
    assert requested_loads(None, planned) == [
        "train:sft-smollm2-cpu"
    ]  # --recipe alone: the peaks are not asked
    assert requested_loads("allreduce", planned) == ["allreduce", "train:sft-smollm2-cpu"]
    assert requested_loads(None, ["matmul", "vectors"]) == []  # the default set
    assert requested_loads(None, ["burn_in"]) == ["burn_in"]


def test_the_document_finishes_incomplete_only_for_a_named_skip(tmp_path):
    for requested, verdict in (((), "pass"), (("allreduce",), "incomplete")):
        doc = RunDocument.start(
            host="h",
            started_at="2026-12-03T00:00:00Z",
            path=tmp_path / f"{verdict}.json",
            gpu_class={"name": "cpu"},
            environment={},
            configuration={"workloads": ["matmul", "allreduce"]},
        )
        doc.add_result({"workload": "matmul", "status": "pass", "metrics": {}, "expected": {}, "notes": []})
        doc.add_result(
            {"workload": "allreduce", "status": "skipped", "metrics": {}, "expected": {}, "notes": []}
        )
        assert doc.finish(requested=requested) == verdict
        assert json.loads((tmp_path / f"{verdict}.json").read_text())["verdict"] == verdict


def test_a_fleet_node_that_is_incomplete_is_its_own_state_and_never_hides_a_failed_one():
    from toolkit.fleet.bench import worst_code

    assert glossary.host_state_of_verdict("incomplete") == "incomplete"
    assert worst_code([0, 4]) == 4 and worst_code([4, 1]) == 1 and worst_code([4, 3]) == 3
