"""The CLI contract: fast start-up, usage errors with exit 2 (3, Nagios UNKNOWN, for `toolkit health`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO, toolkit

HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "ansible", "ansible_runner")

PROBE = """
import sys
from toolkit.cli import main
try:
    code = main({argv!r})
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


def probe(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["bench", "--help"],
        ["gpus"],
        ["gpus", "--json"],
        ["health", "--help"],
        ["health", "--json"],
        ["bench", "--list"],
        ["bench", "--plan"],
    ],
)
def test_light_commands_import_no_heavy_package(argv):
    proc = probe(argv)
    # health's status is the machine's (a busy machine's load per CPU warns or is critical): the point here
    # is what it imports; 3 (UNKNOWN: it could not run) is still a failure
    assert proc.returncode in ((0, 1, 2) if argv[0] == "health" else (0,)), proc.stderr
    assert "HEAVY=\n" in proc.stderr, proc.stderr


def test_help_lists_commands_and_exit_codes():
    proc = toolkit("--help")
    assert proc.returncode == 0
    for name in ("bench", "gpus", "provision", "health"):
        assert name in proc.stdout
    assert "2 usage" in proc.stdout


def test_health_usage_errors_use_the_nagios_unknown_code():
    proc = toolkit("health", "--no-such-option")
    assert proc.returncode == 3  # monitoring systems read 2 as CRITICAL: a usage error is UNKNOWN
    assert "unrecognized arguments" in proc.stderr and "Traceback" not in proc.stderr


def test_no_command_prints_help_and_exits_2():
    proc = toolkit()
    assert proc.returncode == 2
    assert "bench" in proc.stdout


def test_unknown_command_is_a_usage_error():
    proc = toolkit("frobnicate")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr


def test_gpus_table_marks_this_machine_as_cpu():
    proc = toolkit("gpus", env={"TOOLKIT_FORCE_CPU": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "NVIDIA A40" in proc.stdout and "rx-7900-xtx" in proc.stdout
    assert "This machine: no GPU" in proc.stdout
    # unverified figures are flagged, unknown ones are not invented
    a10g = next(line for line in proc.stdout.splitlines() if "a10g" in line)
    assert "unknown" in a10g and "?" in a10g


def test_gpus_json_round_trips_the_catalog():
    proc = toolkit("gpus", "--json")
    assert proc.returncode == 0
    doc = json.loads(proc.stdout)
    a40 = next(c for c in doc["classes"] if c["class"] == "a40")
    assert a40["figures"]["bf16_tensor_flops"] == {
        "value": 149.7e12,
        "source": "NVIDIA A40 datasheet (299.4 with sparsity)",
        "verified": True,
    }
    assert "NVIDIA A40" in a40["device_names"]
    assert doc["cpu"]["peaks"] == "measured"
    assert doc["detected"]["vendor"] in ("cpu", "nvidia", "amd")


def test_unknown_profile_lists_the_known_ones():
    proc = toolkit("bench", "--gpu", "a4000")
    assert proc.returncode == 2
    assert "unknown profile 'a4000'" in proc.stderr
    assert "a40" in proc.stderr and "h100-sxm" in proc.stderr and "cpu" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_profile_mismatch_names_both_and_exits_2():
    proc = toolkit("bench", "--gpu", "a40", env={"TOOLKIT_FORCE_CPU": "1"})
    assert proc.returncode == 2
    assert "requested a40 (NVIDIA A40) but found no GPU" in proc.stderr
    assert "--allow-mismatch" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workloads", "matmul,warp"], "unknown workload(s): warp"),
        (["--kto-loss", "sigmoid"], "unsupported KTO loss 'sigmoid'"),
        (["--set", "kto_lora.nope=1"], "unknown setting 'kto_lora.nope'"),
        (["--set", "kto_lora.batch_size=four"], "'four' is not a valid int"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--scale", "huge"], "invalid choice"),
        (["--set", "kto_lora.measured_steps=0"], "kto_lora.measured_steps must be at least 1, not 0"),
        (["--set", "kto_lora.batch_size=1"], "kto_lora.batch_size must be at least 2"),
        (["--set", "kto_lora.pref_loss=hinge"], "unsupported KTO loss 'hinge'"),
        (["--set", "kto_lora.model=5"], "set its fields one by one"),
        (["--set", "inference.new_tokens=1"], "inference.new_tokens must be at least 2"),
        (["--json", "/"], "is a directory"),
        (["--results-dir", "/proc/toolkit-results"], "cannot write results to /proc/toolkit-results"),
    ],
)
def test_bench_usage_errors(args, message, tmp_path):
    if "--results-dir" not in args:
        args = [*args, "--results-dir", str(tmp_path)]
    proc = toolkit("bench", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir()), "a usage error must not leave a result behind"


def test_debug_shows_the_traceback():
    proc = toolkit("--debug", "bench", "--gpu", "a4000")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "UsageError" in proc.stderr


@pytest.mark.parametrize("columns", ["40", "80", "200"])
def test_gpus_never_cuts_the_class_id_users_type(columns):
    """The ids are what `--gpu` takes: whole at any terminal width (the other columns wrap instead)."""
    from toolkit.catalog import load_catalog

    proc = toolkit("gpus", env={"COLUMNS": columns})
    assert proc.returncode == 0, proc.stderr
    first_cells = {line.split("│")[1].strip() for line in proc.stdout.splitlines() if line.startswith("│")}
    assert set(load_catalog().classes) | {"cpu"} <= first_cells
    assert all(len(line) <= int(columns) for line in proc.stdout.splitlines())
