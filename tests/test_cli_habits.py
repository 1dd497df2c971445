"""The command-line habits people expect (issue 20): -v/-q and --version on every command, did-you-mean for
commands, options, choices, GPU classes, recipes and loads, a hint for a bare KEY=VALUE, shell completion
generated from the parser; and the front page: a README under 150 lines linking every docs/ page, shipped
recipes that say how to run and plan them, one reference of every setting and environment variable."""

from __future__ import annotations

import re
import subprocess

import pytest

from conftest import REPO, toolkit

COMMANDS = ("bench", "gpus", "provision", "health", "report", "completion")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_version_and_verbosity_flags(command):
    version = toolkit(command, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("toolkit "), version.stdout
    for flag in ("-q", "-v", "-vv", "--quiet", "--verbose"):
        proc = toolkit(command, flag, "--help")
        assert proc.returncode == 0 and "unrecognized" not in proc.stderr, (flag, proc.stderr)
    # before the command name too
    assert toolkit("-q", command, "--help").returncode == 0


def test_quiet_bench_prints_results_only_and_verbose_stamps_progress(tmp_path):
    args = ("bench", "--scale", "tiny", "--workloads", "matmul", "--results-dir", str(tmp_path))
    normal = toolkit(*args)
    quiet = toolkit(*args, "-q")
    verbose = toolkit("-v", *args)
    for proc in (normal, quiet, verbose):
        assert proc.returncode in (0, 1), proc.stderr  # a busy machine may fail a check; output is the point
        assert "Verdict:" in proc.stdout
    assert "matmul: FLOP/s" in normal.stderr and "Saved " in normal.stderr
    assert "this measurement is the FLOP/s peak" in normal.stdout  # a note under the table
    assert quiet.stderr.strip() == "", quiet.stderr  # no progress, no notes, nothing saved twice
    assert "this measurement is the FLOP/s peak" not in quiet.stdout
    assert len(list(tmp_path.glob("bench-*.json"))) == 3  # -q still saves the result
    stamped = [line for line in verbose.stderr.splitlines() if re.match(r"\[\+\d+\.\d+s\] ", line)]
    assert any("matmul: FLOP/s" in line for line in stamped), verbose.stderr
    assert any(line.split("] ", 1)[1].startswith("Saved ") for line in stamped), verbose.stderr


def test_quiet_health_prints_only_what_is_not_ok(tmp_path):
    settings = tmp_path / "health.yml"  # a busy test machine must not make the load warn here
    settings.write_text("system: {load_warning_per_cpu: 1000, load_critical_per_cpu: 2000}\n")
    settings.chmod(0o600)
    args = ("health", "--config", str(settings), "--skip", "bmc", "--skip", "docker", "--skip", "gpu")
    normal, quiet = toolkit(*args), toolkit(*args, "-q")
    assert normal.returncode == quiet.returncode == 0, normal.stdout + normal.stderr
    assert "system.memory" in normal.stdout
    lines = quiet.stdout.strip().splitlines()
    assert len(lines) == 1 and ": OK — " in lines[0], quiet.stdout


def test_bare_key_value_points_at_set():
    proc = toolkit("bench", "matmul.repeats=3")
    assert proc.returncode == 2
    assert "unrecognized arguments: matmul.repeats=3" in proc.stderr
    assert "hint: did you mean --set matmul.repeats=3?" in proc.stderr


def test_mistyped_command_gets_did_you_mean():
    proc = toolkit("benhc")
    assert proc.returncode == 2
    assert "hint: did you mean 'bench'?" in proc.stderr and "Traceback" not in proc.stderr


def test_mistyped_option_gets_did_you_mean_and_is_never_abbreviated():
    proc = toolkit("bench", "--workload", "x")  # argparse would have taken it as --workloads
    assert proc.returncode == 2
    assert "unrecognized arguments: --workload x" in proc.stderr
    assert "hint: did you mean --workloads?" in proc.stderr
    health = toolkit("health", "--bmc-timout", "3")
    assert health.returncode == 3  # Nagios UNKNOWN, as every health usage error
    assert "hint: did you mean --bmc-timeout?" in health.stderr


def test_mistyped_choice_gpu_class_recipe_and_load_get_did_you_mean():
    scale = toolkit("bench", "--scale", "tny")
    assert scale.returncode == 2 and "hint: did you mean 'tiny'?" in scale.stderr
    gpu = toolkit("bench", "--plan", "--gpu", "a4O")
    assert gpu.returncode == 2 and "did you mean 'a40'?" in gpu.stderr, gpu.stderr
    recipe = toolkit("bench", "--plan", "--recipe", "kto-gema2-9b")
    assert recipe.returncode == 2 and "did you mean 'kto-gemma2-9b'?" in recipe.stderr, recipe.stderr
    load = toolkit("bench", "--workloads", "matmull", "--scale", "tiny")
    assert load.returncode == 2 and "did you mean matmul?" in load.stderr, load.stderr


def _complete(script: str, *words: str) -> list[str]:
    """The candidates bash offers after `words` (the last one is the word being completed)."""
    line = " ".join(f"'{w}'" for w in words)
    call = f'COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _toolkit; printf "%s\\n" "${{COMPREPLY[@]}}"'
    program = f"{script}\n{call}"
    proc = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_bash_completion_is_generated_from_the_parser():
    proc = toolkit("completion", "bash")
    assert proc.returncode == 0, proc.stderr
    registered = subprocess.run(
        ["bash", "-c", proc.stdout + "\ncomplete -p toolkit"], capture_output=True, text=True, timeout=60
    )
    assert registered.returncode == 0, registered.stderr
    assert "-F _toolkit" in registered.stdout and registered.stdout.rstrip().endswith("toolkit")
    assert _complete(proc.stdout, "toolkit", "be") == ["bench"]
    assert "--workloads" in _complete(proc.stdout, "toolkit", "bench", "--work")
    assert _complete(proc.stdout, "toolkit", "bench", "--scale", "t") == ["tiny"]
    assert "a40" in _complete(proc.stdout, "toolkit", "bench", "--gpu", "a4")
    assert "kto-gemma2-9b" in _complete(proc.stdout, "toolkit", "bench", "--recipe", "kto")
    assert "--skip" in _complete(proc.stdout, "toolkit", "health", "--sk")
    zsh = toolkit("completion", "zsh")
    assert (
        zsh.returncode == 0
        and "bashcompinit" in zsh.stdout
        and "complete -o default -F _toolkit" in zsh.stdout
    )


def test_readme_is_a_front_page_linking_every_docs_page():
    readme = (REPO / "README.md").read_text()
    lines = readme.splitlines()
    assert len(lines) < 150, len(lines)
    assert "the users'" not in readme
    commands = [line for line in lines if line.startswith("./scripts/install.sh")]
    assert commands[0].startswith("./scripts/install.sh && .venv/bin/toolkit bench")
    ci = (REPO / ".ci" / "run").read_text()
    assert commands[1].split("#")[0].strip() in ci  # the README's test command is what CI runs
    linked = set(re.findall(r"\]\((docs/[^)#]+)", readme))
    pages = {f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")}
    assert pages <= linked, f"not linked from the README: {sorted(pages - linked)}"
    missing = [link for link in linked if not (REPO / link).exists()]
    assert not missing, f"the README links to pages that do not exist: {missing}"


def test_every_shipped_recipe_starts_with_its_run_and_plan_commands():
    recipes = sorted((REPO / "toolkit" / "data" / "recipes").glob("*.yaml"))
    assert recipes
    for path in recipes:
        head = []
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            head.append(line)
        name = path.stem
        assert f"toolkit bench --recipe {name}" in head[0], (path.name, head[:2])
        assert "--plan" in head[1] and f"--recipe {name}" in head[1], (path.name, head[:2])


def test_settings_reference_names_every_environment_variable_and_settings_key():
    from toolkit.health.collectors.qdrant_settings import KEYS as QDRANT_KEYS
    from toolkit.health.collectors.serving_settings import KEYS as SERVING_KEYS
    from toolkit.health.config import SCHEMA

    reference = (REPO / "docs" / "SETTINGS.md").read_text()
    source = "\n".join(p.read_text() for p in (REPO / "toolkit").rglob("*.py"))
    variables = set(re.findall(r"environ(?:\.get)?[\[(]\"([A-Z_]+)\"", source))
    variables |= set(re.findall(r"\"(TOOLKIT_[A-Z_]+)\"", source)) - {"TOOLKIT_KEYS"}
    internal = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "PATH", "XDG_STATE_HOME", "XDG_CACHE_HOME"}
    internal |= {v for v in variables if v.startswith("ANSIBLE_")}  # passed through to ansible-runner
    missing = sorted(v for v in variables - internal if f"`{v}`" not in reference)
    assert not missing, f"environment variables missing from docs/SETTINGS.md: {missing}"
    keys = []
    for key, sub in SCHEMA.items():
        keys += [f"{key}.{k}" for k in sub] if isinstance(sub, dict) else [key]
    keys += [f"qdrant.{k}" for k in QDRANT_KEYS]
    keys += [f"serving.{k}" for k in SERVING_KEYS]
    missing = sorted(k for k in keys if f"`{k}`" not in reference)
    assert not missing, f"settings keys missing from docs/SETTINGS.md: {missing}"
    from toolkit.fleet.targets import VARIABLES

    missing = sorted(v for v in VARIABLES if f"`{v}`" not in reference)
    assert not missing, f"inventory variables missing from docs/SETTINGS.md: {missing}"
