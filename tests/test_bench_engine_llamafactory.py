"""`toolkit bench --recipe FILE --engine llamafactory`: the file trained by LLaMA-Factory itself (0.9.5, in
the .venv-llamafactory that `scripts/install.sh --test` creates), on the CPU at tiny scale, with a locally
built model, next to the same file trained by toolkit's TRL path."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from toolkit.bench.engine_llamafactory import venv_dir

from conftest import toolkit

REPO = Path(__file__).parent.parent
RECIPES = REPO / "toolkit" / "data" / "recipes"
needs_lf = pytest.mark.skipif(
    not any(venv_dir().glob("lib/python3*/site-packages/llamafactory/__init__.py")),
    reason=f"LLaMA-Factory is not installed in {venv_dir()} (scripts/install.sh --test installs it)",
)


def bench(tmp_path: Path, *args: str, env: dict | None = None) -> tuple[int, dict | None, str]:
    out = tmp_path / f"run-{len(list(tmp_path.iterdir()))}.json"
    proc = toolkit(
        "bench", *args, "--json", str(out), "--results-dir", str(tmp_path / "r"), env=env, timeout=900
    )
    doc = json.loads(out.read_text()) if out.exists() else None
    return proc.returncode, doc, proc.stdout + proc.stderr


def train_result(doc: dict) -> dict:
    [result] = [r for r in doc["results"] if r["workload"].startswith("train:")]
    return result


@needs_lf
@pytest.mark.parametrize("recipe", ["sft-smollm2-cpu", "kto-lora-cpu"])
def test_llamafactory_trains_the_file_with_the_same_metrics_as_trl(tmp_path, recipe):
    path = str(RECIPES / f"{recipe}.yaml")
    code, lf_doc, out = bench(tmp_path, "--recipe", path, "--engine", "llamafactory")
    assert code == 0 and lf_doc is not None, out
    lf = train_result(lf_doc)
    assert lf_doc["configuration"]["engine"] == "llamafactory" and lf["config"]["engine"] == "llamafactory"
    assert lf["status"] == "pass", lf["notes"]
    args = lf["config"]["llamafactory_args"]
    assert args["stage"] == lf["config"]["stage"] and args["finetuning_type"] == "lora"
    assert args["max_steps"] == lf["config"]["warmup_steps"] + lf["config"]["measured_steps"]
    m = lf["metrics"]
    assert m["steps_completed"] == args["max_steps"]
    assert m["tokens_per_second"] > 0 and m["mfu_ratio"] > 0  # over 1 where a busy machine depressed the peak
    assert m["step_time_seconds_p50"] <= m["step_time_seconds_p90"]
    assert m["peak_memory_bytes"] > m.get("baseline_memory_bytes", 0) > 0
    losses = m["loss_per_step"]  # the measured steps' (as the TRL path records them)
    assert len(losses) == lf["config"]["measured_steps"] and all(0 < x < 100 for x in losses)

    code, trl_doc, out = bench(tmp_path, "--recipe", path)
    assert code == 0 and trl_doc is not None, out
    trl = train_result(trl_doc)
    assert trl["config"].get("engine", "trl") == "trl" and trl["status"] == "pass"
    # the same load: same model shape, the same tokens in each step, the same record layout
    assert lf["config"]["model"] == trl["config"]["model"]
    assert m["tokens_per_step_mean"] == trl["metrics"]["tokens_per_step_mean"]
    assert set(trl["metrics"]) - set(m) <= {"loss_first", "loss_last"} | {
        k for k in trl["metrics"] if "reward" in k
    }


def test_without_llamafactory_it_says_how_to_install_it(tmp_path):
    env = {"TOOLKIT_LF_VENV": str(tmp_path / "nowhere")}
    code, doc, out = bench(tmp_path, "--recipe", "sft-smollm2-cpu", "--engine", "llamafactory", env=env)
    assert code == 2 and doc is None
    assert (
        "--engine llamafactory" in out and "does not exist" in out and "install.sh --with-llamafactory" in out
    )
    assert "Traceback" not in out


def test_engine_without_a_recipe_is_a_usage_error(tmp_path):
    code, doc, out = bench(tmp_path, "--engine", "llamafactory", "--workloads", "matmul")
    assert code == 2 and doc is None and "--engine llamafactory runs the --recipe files" in out
    assert "Traceback" not in out


@needs_lf
def test_what_llamafactory_refuses_is_an_error_with_its_own_last_lines(tmp_path):
    """A value only LLaMA-Factory knows to be wrong (a chat template it lacks): the load is an error that
    quotes LLaMA-Factory's own message; the run still ends with its document and the other loads."""
    text = (RECIPES / "sft-smollm2-cpu.yaml").read_text()
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace("stage: sft\n", "stage: sft\ntemplate: no_such_template\n", 1))
    code, doc, out = bench(tmp_path, "--recipe", str(broken), "--engine", "llamafactory")
    assert doc is not None and code != 0, out
    result = train_result(doc)
    assert result["status"] == "error" and result["metrics"]["steps_completed"] == 0
    assert "LLaMA-Factory failed (exit 1)" in json.dumps(result)
    assert "Template no_such_template does not exist" in json.dumps(result)
    assert "Traceback" not in out


@needs_lf
def test_the_committed_key_schema_is_the_installed_llamafactorys():
    """toolkit/data/llamafactory/schema-0.9.5.json (generated from the release's source) holds exactly the
    keys the real LLaMA-Factory 0.9.5 parses a training file with."""
    probe = (
        "import json, warnings; warnings.simplefilter('ignore')\n"
        "from dataclasses import fields\n"
        "from llamafactory.hparams import parser\n"
        "print(json.dumps(sorted({f.name for c in parser._TRAIN_ARGS for f in fields(c) if f.init})))\n"
    )
    python = venv_dir() / "bin" / "python"
    proc = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    real = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    schema = json.loads((REPO / "toolkit" / "data" / "llamafactory" / "schema-0.9.5.json").read_text())
    assert len(real) > 300 and set(schema["keys"]) == real
