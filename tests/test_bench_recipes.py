"""Training recipes: the shipped ones, the LLaMA-Factory importer, synthetic architectures and `--model`.

Every recipe runs for real (TRL + PEFT on this CPU) at tiny scale; the users' LLaMA-Factory KTO file from
docs/REFERENCE.md runs end to end with only the model shrunk; 4-bit recipes run on bitsandbytes' CPU backend.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from conftest import REPO, load_schema, toolkit

FIXTURES = REPO / "tests" / "fixtures" / "llamafactory"
SHIPPED = [
    "dpo-lora",
    "kto-gemma2-9b",
    "kto-lora-cpu",
    "lora-llama2-7b",
    "qlora-llama3-8b",
    "qlora-zephyr-7b",
    "sft-smollm2-cpu",
]
# each shipped recipe's stage, and the closed form of that stage's FLOPs per counted token (toolkit/bench/
# flops.py; test_flops.py checks the arithmetic against the real models). The LoRA step is part of the
# KTO and DPO formulas, so only those two must not appear in another stage's formula.
STAGES = {
    "dpo-lora": "dpo",
    "kto-gemma2-9b": "kto",
    "kto-lora-cpu": "kto",
    "lora-llama2-7b": "sft",
    "sft-smollm2-cpu": "sft",
}
STAGE_FLOPS = {
    "sft": "4N + 6N_lora + 12*L*d_attn*T",
    "kto": "10N + 8N_lora + 24*L*d_attn*T",
    "dpo": "6N + 6N_lora + 16*L*d_attn*T",
}
# public parameter counts of the real models (model cards / config arithmetic)
KNOWN_PARAMS = {
    "gemma2-9b": 9.24e9,
    "llama2-7b": 6.74e9,
    "llama3-8b": 8.03e9,
    "mistral-7b": 7.24e9,
    "smollm2-135m": 0.135e9,
    "tinyllama-1.1b": 1.10e9,
}


def _bench_json(tmp_path: Path, *args: str, **kw):
    out = tmp_path / "run.json"
    proc = toolkit(
        "bench", "--threads", "1", "--results-dir", str(tmp_path / "results"), "--json", str(out), *args, **kw
    )
    doc = json.loads(out.read_text()) if out.exists() else None
    return proc, doc


def _by_name(doc: dict) -> dict:
    return {r["workload"]: r for r in doc["results"]}


def test_list_shows_every_recipe_and_architecture():
    proc = toolkit("bench", "--list")
    assert proc.returncode == 0, proc.stderr
    for name in [*SHIPPED, *KNOWN_PARAMS]:
        assert name in proc.stdout
    assert "9.24 B" in proc.stdout and "QLoRA r16, 4-bit nf4" in proc.stdout


def test_shipped_recipes_parse_with_the_users_settings():
    from toolkit.bench import recipes

    shipped = recipes.shipped()
    assert sorted(shipped) == SHIPPED
    kto = shipped["kto-gemma2-9b"]
    assert (kto.stage, kto.lora_rank, kto.lora_alpha, kto.pref_beta, kto.pref_loss) == (
        "kto",
        16,
        32,
        0.05,
        "kto_pair",
    )
    assert (kto.max_length, kto.batch_size, kto.gradient_accumulation_steps, kto.profile) == (
        2048,
        4,
        16,
        "a40",
    )
    assert [k for k, _ in kto.unhonoured] == ["template"]
    zephyr = shipped["qlora-zephyr-7b"]
    assert zephyr.quantization_bit == 4 and zephyr.quantization_type == "nf4" and zephyr.pad_token == "<pad>"
    llama3 = shipped["qlora-llama3-8b"]
    assert llama3.eos_token == "<|eot_id|>" and llama3.chat_format and llama3.pad_token != llama3.eos_token


@pytest.mark.parametrize("name", sorted(KNOWN_PARAMS))
def test_architecture_counts_match_the_built_model(name):
    """The shape arithmetic the FLOP and memory figures use equals the parameters of the model that
    transformers builds from the shipped config (on the meta device: no memory), and the real model's."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from toolkit.bench import architectures, flops

    arch = architectures.get(name)
    cfg = dict(arch.config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg))
    built = sum(p.numel() for p in model.parameters())
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert flops.matmul_params(arch.shape) == linear
    assert abs(flops.total_params(arch.shape) - built) / built < 1e-3
    assert abs(built - KNOWN_PARAMS[name]) / KNOWN_PARAMS[name] < 0.01


@pytest.mark.slow
def test_every_recipe_runs_at_tiny_scale_4bit_included(tmp_path):
    args = [a for name in SHIPPED for a in ("--recipe", name)]
    proc, doc = _bench_json(tmp_path, "--scale", "tiny", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _by_name(doc)
    assert list(results) == ["matmul", "memory_bandwidth", *(f"train:{n}" for n in SHIPPED)]
    for name in SHIPPED:
        rec = results[f"train:{name}"]
        # a busy machine (the test suite's own neighbours) makes a shortfall inconclusive, never a fail
        busy = bool((rec.get("contention") or {}).get("busy"))
        assert rec["status"] == "pass" or (busy and rec["status"] == "inconclusive"), (
            name,
            rec.get("error"),
            rec["expected"],
        )
        if name.startswith("qlora"):  # 4-bit on bitsandbytes' CPU backend (test_bench_qlora_cpu.py)
            assert rec["config"]["quantized_base"]["backend"] == "cpu"
            assert rec["metrics"]["tokens_per_second"] > 0 and rec["metrics"]["steps_completed"] == 4
            continue
        assert rec["metrics"]["steps_completed"] == 4
        mfu = rec["metrics"]["mfu_ratio"]  # over 1 only where a busy machine depressed the measured peak
        assert rec["metrics"]["tokens_per_second"] > 0 and mfu > 0 and (busy or mfu < 1)
        assert "synthetic (random) weights of the exact architecture" in rec["config"]["weights"]
        formula = rec["flops"]["formula"]
        stage = rec["config"]["stage"]
        assert stage == STAGES[name]
        # the record's formula is its stage's: the closed form per counted token, and no other stage's
        assert STAGE_FLOPS[stage] in formula, (name, formula)
        assert not [t for s, t in STAGE_FLOPS.items() if s not in (stage, "sft") and t in formula], formula
        if stage != "dpo":  # the LoRA and KTO formulas also say what their symbols mean
            assert "N = matmul weights incl. LM head" in formula and "T = mean tokens per sequence" in formula
    # the architecture's own features survive the shrink: Gemma 2's tied embeddings and head grouping
    gemma = results["train:kto-gemma2-9b"]
    assert gemma["config"]["model"]["tie_word_embeddings"] is True
    assert gemma["config"]["model"]["num_key_value_heads"] == 2  # 16 heads over 8 kv heads -> 4 over 2
    dpo = results["train:dpo-lora"]
    assert "reference forward" in dpo["flops"]["formula"]
    # DPO counts chosen and rejected: 2 pairs x 2 sequences of 64 tokens each
    assert dpo["metrics"]["tokens_per_step_mean"] == 256
    assert doc["verdict"] == "pass"
    jsonschema.validate(doc, load_schema())
    assert "needs CUDA" not in proc.stderr


@pytest.mark.slow
def test_chat_recipe_runs_unquantized_with_its_own_eos(tmp_path):
    proc, doc = _bench_json(
        tmp_path, "--scale", "tiny", "--recipe", "qlora-llama3-8b", "--set", "recipe.quantization_bit=none"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = _by_name(doc)["train:qlora-llama3-8b"]
    assert rec["status"] == "pass", rec.get("error")
    assert rec["config"]["quantization"] is None
    assert "--set recipe.quantization_bit=none" in rec["notes"]


@pytest.mark.slow
def test_reference_llamafactory_kto_file_end_to_end(tmp_path):
    """The users' exact LLaMA-Factory KTO configuration (docs/REFERENCE.md): every training key as written,
    only the model and the synthetic examples shrunk by overrides, and one measured step to fit in CI."""
    shrink = [
        "recipe.model.hidden_size=64",
        "recipe.model.intermediate_size=128",
        "recipe.model.num_hidden_layers=2",
        "recipe.model.num_attention_heads=4",
        "recipe.model.num_key_value_heads=2",
        "recipe.model.attention_head_dim=16",
        "recipe.model.vocab_size=1024",
        "train.warmup_steps=0",
        "train.measured_steps=1",
        # short synthetic examples (cutoff_len stays 2048): 64 sequences of 2048 tokens take minutes here
        "recipe.prompt_words=12",
        "recipe.completion_words=24",
        # the cpu profile's peak loads at their tiny size (full size is an 8192^3 matmul)
        "matmul.size=256",
        "memory_bandwidth.bytes=16777216",
    ]
    proc, doc = _bench_json(
        tmp_path,
        "--scale",
        "full",
        "--recipe",
        str(FIXTURES / "kto_gemma2_a40.yaml"),
        "--arch",
        "gemma2-9b",
        *(a for s in shrink for a in ("--set", s)),
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = _by_name(doc)["train:kto_gemma2_a40"]
    assert rec["status"] in ("pass", "warn"), rec.get("error")
    cfg = rec["config"]
    assert (cfg["stage"], cfg["lora_rank"], cfg["lora_alpha"], cfg["lora_dropout"]) == ("kto", 16, 32, 0.0)
    assert (cfg["pref_beta"], cfg["pref_loss"], cfg["max_length"]) == (0.05, "kto_pair", 2048)
    assert (cfg["per_device_train_batch_size"], cfg["gradient_accumulation_steps"]) == (4, 16)
    assert (cfg["learning_rate"], cfg["lr_scheduler_type"], cfg["optim"]) == (5e-05, "cosine", "adamw_torch")
    assert cfg["activation_checkpointing"] is True  # LLaMA-Factory's default
    assert sorted(n["key"] for n in cfg["not_honoured"]) == ["num_train_epochs", "template"]
    assert any("kto_pair (removed from TRL) is run as TRL's KTO loss" in n for n in rec["notes"])
    assert rec["metrics"]["steps_completed"] == 1
    # 4 x 16 sequences in the one optimizer step
    assert rec["metrics"]["tokens_per_step_mean"] > 64 * 30
    assert "not honoured: num_train_epochs" in proc.stdout + proc.stderr


def test_unknown_and_unsupported_llamafactory_keys_are_listed(tmp_path):
    """Keys the benchmark cannot honour are listed with their reason, in the output and the report."""
    proc, doc = _bench_json(
        tmp_path,
        "--scale",
        "tiny",
        "--recipe",
        str(FIXTURES / "sft_with_extras.yaml"),
        "--set",
        "train.measured_steps=1",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = _by_name(doc)["train:sft_with_extras"]
    reported = {n["key"]: n["why"] for n in rec["config"]["not_honoured"]}
    assert "flash_attn" in reported and "deepspeed" in reported
    line = proc.stderr.replace("\n", " ").split("not honoured: ", 1)[1].split(" (reasons")[0]
    assert {"deepspeed", "flash_attn", "use_unsloth", "dataset"} <= set(line.split(", "))
    from toolkit.bench import recipes

    recipe = recipes.load(str(FIXTURES / "sft_with_extras.yaml"))
    listed = dict(recipe.unhonoured)
    for key in ("dataset", "output_dir", "logging_steps", "save_steps", "num_train_epochs", "template"):
        assert key in listed
    # each with what it does in LLaMA-Factory and why the run does not reproduce it
    assert "attention kernel" in listed["flash_attn"] and "fa2" in listed["flash_attn"]
    assert "ZeRO" in listed["deepspeed"] and "Unsloth" in listed["use_unsloth"]
    assert listed["pref_beta"].startswith("a preference key in an SFT recipe")
    assert "do_train" not in listed  # honoured: the benchmark trains
    # honoured keys are not listed, and arrive in the recipe
    assert recipe.architecture == "llama3-8b"  # from model_name_or_path's Hub id
    assert recipe.lora_target == ("q_proj", "v_proj") and recipe.warmup_ratio == 0.1
    assert "cutoff_len" not in listed and "bf16" not in listed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stage: ppo\n", "stage 'ppo' is not benchmarked"),
        ("stage: kto\nfinetuning_type: freeze\n", "finetuning_type 'freeze' with stage kto"),
        ("stage: sft\nquantization_bit: 4\nquantization_method: gptq\n", "4-bit gptq is not benchmarked"),
        ("stage: dpo\npref_loss: orpo\n", "pref_loss 'orpo' is not mapped for DPO"),
        (
            "stage: sft\noptim: adamw_bogus\n",
            "optim 'adamw_bogus' is not one of LLaMA-Factory 0.9.5's values",
        ),
        ("stage: sft\nlora_target: c_attn\n", "lora_target c_attn is not a linear module"),
        ("stage: sft\nquantisation_bit: 4\n", "'quantisation_bit' (did you mean 'quantization_bit'?)"),
        ("stage: sft\ncutoff_len: [1\n", "not valid YAML"),
        ("- just\n- a list\n", "not a LLaMA-Factory training YAML"),
    ],
)
def test_bad_llamafactory_files_exit_2_with_one_line(tmp_path, text, message):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    proc = toolkit("bench", "--recipe", str(path), "--arch", "llama3-8b", "--scale", "tiny")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_recipe_without_a_model_is_refused(tmp_path):
    path = tmp_path / "nomodel.yaml"
    path.write_text("stage: sft\n")
    proc = toolkit("bench", "--recipe", str(path), "--scale", "tiny")
    assert proc.returncode == 2
    assert "does not name its model" in proc.stderr and "--arch NAME" in proc.stderr


def _tiny_model(folder: Path) -> None:
    from toolkit.bench.settings import ModelShape
    from toolkit.bench.synthetic import build_llama, build_tokenizer

    tok = build_tokenizer(512)
    shape = ModelShape(64, 176, 2, 4, 4, 512)
    import torch

    model = build_llama(shape, tok, torch.float32, "cpu")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


@pytest.mark.slow
def test_model_from_a_folder_and_from_the_local_hub_cache(tmp_path):
    folder = tmp_path / "my-model"
    _tiny_model(folder)
    proc, doc = _bench_json(
        tmp_path / "a", "--scale", "tiny", "--recipe", "sft-smollm2-cpu", "--model", str(folder)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = _by_name(doc)["train:sft-smollm2-cpu"]
    assert rec["status"] == "pass", rec.get("error")
    assert rec["config"]["weights"] == f"real: local folder {folder.resolve()}"
    assert rec["config"]["model"]["hidden_size"] == 64  # the model's own shape, not the recipe's

    # the same weights as a Hub id in a Hugging Face cache laid out as the hub library writes it
    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--tiny-llama" / "snapshots" / "0123abcd"
    snapshot.parent.mkdir(parents=True)
    folder.rename(snapshot)
    (cache / "models--acme--tiny-llama" / "refs").mkdir()
    (cache / "models--acme--tiny-llama" / "refs" / "main").write_text("0123abcd")
    env = {"HF_HUB_CACHE": str(cache)}
    proc, doc = _bench_json(
        tmp_path / "b", "--scale", "tiny", "--recipe", "dpo-lora", "--model", "acme/tiny-llama", env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = _by_name(doc)["train:dpo-lora"]
    assert rec["status"] == "pass", rec.get("error")
    assert rec["config"]["weights"] == f"real: local Hugging Face cache {cache} (acme/tiny-llama)"


def test_missing_model_names_where_it_looked(tmp_path):
    env = {"HF_HUB_CACHE": str(tmp_path / "hub")}
    proc = toolkit(
        "bench", "--recipe", "sft-smollm2-cpu", "--model", "acme/absent", "--scale", "tiny", env=env
    )
    assert proc.returncode == 2
    assert "acme/absent: not found" in proc.stderr
    assert str(tmp_path / "hub") in proc.stderr and "nothing is downloaded" in proc.stderr
    assert "Traceback" not in proc.stderr
