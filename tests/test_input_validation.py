"""Bad input is refused where it enters (issue 14): files the user names are read with a size cap and
must be UTF-8, settings and recipe values are checked for type and range before anything runs, and
nothing is coerced in silence. Every case runs the real `toolkit` command."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from conftest import BMC_ONLY, REPO, toolkit, toolkit_peak_mib

RECIPE = REPO / "toolkit" / "data" / "recipes" / "sft-smollm2-cpu.yaml"
MAX_RSS_MB = 400


def assert_clean_error(proc, code: int, *words: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "toolkit: error:" in proc.stderr, proc.stderr[-2000:]
    assert "  hint:" in proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--config", "/dev/zero"),
        ("--bmc", "ipmi://ADMIN@127.0.0.1", "--bmc-password-file", "/dev/zero", *BMC_ONLY),
    ],
    ids=["config", "bmc-password-file"],
)
def test_an_endless_file_is_refused_in_bounded_time_and_memory(args, tmp_path):
    start = time.monotonic()
    proc, peak = toolkit_peak_mib("health", *args, tmp=tmp_path, timeout=60)
    took = time.monotonic() - start
    assert_clean_error(proc, 3, "/dev/zero", "larger than")
    assert took < 30  # generous: it stops reading at the cap, not when memory runs out
    assert peak < MAX_RSS_MB


def test_an_endless_recipe_is_refused(tmp_path):
    proc, peak = toolkit_peak_mib(
        "bench", "--recipe", "/dev/zero", "--plan", "--gpu", "cpu", tmp=tmp_path, timeout=120
    )
    assert_clean_error(proc, 2, "/dev/zero", "larger than")
    assert peak < MAX_RSS_MB


def test_a_fifo_nobody_writes_to_does_not_hang(tmp_path):
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    start = time.monotonic()
    proc = toolkit("health", "--config", str(fifo), timeout=60)
    assert_clean_error(proc, 3, str(fifo), "wrote nothing")
    assert time.monotonic() - start < 10 + 20


def test_non_utf8_files_name_the_file_and_the_byte(tmp_path):
    cfg = tmp_path / "health.yml"
    cfg.write_bytes(b"expect_gpus: 1\n\xff\xfe\n")
    cfg.chmod(0o600)
    assert_clean_error(toolkit("health", "--config", str(cfg)), 3, str(cfg), "not UTF-8", "byte 15")
    password = tmp_path / "pw"
    password.write_bytes(b"pw\xff\n")
    proc = toolkit(
        "health", "--bmc", "ipmi://ADMIN@127.0.0.1", "--bmc-password-file", str(password), *BMC_ONLY
    )
    assert_clean_error(proc, 3, str(password), "not UTF-8")
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(b"stage: sft\n\xff\n")
    proc = toolkit("bench", "--recipe", str(recipe), "--plan", "--gpu", "cpu", timeout=120)
    assert_clean_error(proc, 2, str(recipe), "not UTF-8", "byte 11")


@pytest.mark.parametrize(
    "text, words",
    [
        ('expect_gpus: "abc"\n', ("expect_gpus", "whole number")),
        ("expect_gpus: true\n", ("expect_gpus", "whole number")),
        ("bmc:\n  timout: 3\n", ("bmc.timout", "did you mean bmc.timeout")),
        ("system:\n  data_dirs: /\n", ("system.data_dirs", "list of strings")),
        ("thresholds:\n  temperature_critical_c: hot\n", ("thresholds.temperature_critical_c", "number")),
        ("keep_days: soon\n", ("keep_days",)),
    ],
)
def test_health_settings_are_checked_by_key_and_type(tmp_path, text, words):
    cfg = tmp_path / "health.yml"
    cfg.write_text(text)
    cfg.chmod(0o600)
    proc = toolkit("health", "--config", str(cfg), "--skip", "gpu", "--skip", "docker", "--skip", "system")
    assert_clean_error(proc, 3, str(cfg), *words)


def test_a_bmc_password_of_the_wrong_type_is_not_echoed(tmp_path):
    cfg = tmp_path / "health.yml"
    cfg.write_text("bmc:\n  url: ipmi://ADMIN@127.0.0.1\n  password: [s3cr3t-value]\n")
    cfg.chmod(0o600)
    proc = toolkit("health", "--config", str(cfg), *BMC_ONLY)
    assert_clean_error(proc, 3, "bmc.password")
    assert "s3cr3t-value" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("port", ["0", "70000"])
def test_a_bmc_port_out_of_range_is_a_usage_error_not_623(port):
    proc = toolkit(
        "health", "--bmc", f"ipmi://ADMIN@127.0.0.1:{port}", *BMC_ONLY, env={"TOOLKIT_BMC_PASSWORD": "abcd"}
    )
    assert_clean_error(proc, 3, "bad port", "1 to 65535")
    assert "623" not in proc.stdout


def recipe_with(tmp_path: Path, line: str, name: str = "r.yaml") -> Path:
    key = line.partition(":")[0]
    kept = [x for x in RECIPE.read_text().splitlines() if not x.startswith(f"{key}:")]
    path = tmp_path / name
    path.write_text("\n".join([*kept, line]) + "\n")
    return path


@pytest.mark.parametrize(
    "line, words",
    [
        ("lora_dropout: 5", ("lora_dropout", "[0, 1)")),
        ("learning_rate: .nan", ("learning_rate", "finite")),
        ("learning_rate: 0", ("learning_rate", "(0, inf)")),
        ("per_device_train_batch_size: 4.5", ("per_device_train_batch_size", "whole number")),
        ("per_device_train_batch_size: true", ("per_device_train_batch_size", "whole number")),
        ("quantization_bit: 7", ("quantization",)),
        ("quantization_bit: 4.5", ("quantization_bit", "whole number")),
        ('cutoff_len: "abc"', ("cutoff_len", "whole number")),
        ("bf16: maybe", ("bf16", "true or false")),
    ],
)
def test_recipe_values_are_refused_before_any_load_runs(tmp_path, line, words):
    recipe = recipe_with(tmp_path, line)
    results = tmp_path / "results"
    proc = toolkit(
        "bench", "--recipe", str(recipe), "--gpu", "cpu", "--scale", "tiny", "--results-dir", str(results),
        "--threads", "1", timeout=300,
    )  # fmt: skip
    assert_clean_error(proc, 2, str(recipe), *words)
    assert not results.exists() or not any(results.iterdir())  # nothing measured, nothing written


def test_a_recipe_name_with_markup_or_path_characters_is_refused(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.read_text().replace("name: sft-smollm2-cpu", 'name: "a[/]b"'))
    proc = toolkit("bench", "--recipe", str(recipe), "--plan", "--gpu", "cpu", timeout=120)
    assert_clean_error(proc, 2, "a[/]b", "letters, digits")


def test_set_is_applied_before_the_recipe_is_checked(tmp_path):
    recipe = recipe_with(tmp_path, "per_device_train_batch_size: 0")
    proc = toolkit("bench", "--recipe", str(recipe), "--plan", "--gpu", "cpu", timeout=120)
    assert_clean_error(proc, 2, "batch_size must be at least 1")
    rescued = toolkit(
        "bench", "--recipe", str(recipe), "--plan", "--gpu", "cpu", "--set", "recipe.batch_size=2",
        timeout=120,
    )  # fmt: skip
    assert rescued.returncode == 0, rescued.stderr[-2000:]
    wrong = toolkit(
        "bench", "--recipe", str(RECIPE), "--plan", "--gpu", "cpu", "--set", "recipe.quantization_bit=7",
        timeout=120,
    )  # fmt: skip
    assert_clean_error(wrong, 2, "quantization_bit", "4 or 8")


@pytest.mark.parametrize("value", ["", " ", " , "])
def test_an_empty_workload_list_is_an_error_not_everything(tmp_path, value):
    results = tmp_path / "results"
    proc = toolkit(
        "bench", "--workloads", value, "--gpu", "cpu", "--scale", "tiny", "--results-dir", str(results),
        timeout=120,
    )  # fmt: skip
    assert_clean_error(proc, 2, "--workloads", "names no load")
    assert not results.exists()


@pytest.mark.parametrize(
    "setting",
    [
        "kto_lora.activation_checkpointing=maybe",
        "matmul.repeats=4.5",
        "matmul.repeats=true",
        "vectors.noise=nan",
    ],
)
def test_set_on_a_load_setting_is_strict(tmp_path, setting):
    # before: `maybe` was read as false and `nan` taken as a float; 4.5 and `true` were already refused
    results = tmp_path / "results"
    proc = toolkit(
        "bench", "--scale", "tiny", "--workloads", "matmul", "--results-dir", str(results), "--set", setting
    )
    assert proc.returncode == 2, proc.stderr
    assert f"--set {setting.split('=')[0]}:" in proc.stderr and "Traceback" not in proc.stderr
    assert not results.exists()  # refused before any load ran
