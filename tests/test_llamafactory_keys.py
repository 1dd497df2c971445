"""A LLaMA-Factory file read as LLaMA-Factory reads it: its keys and values checked against LLaMA-Factory's
own argument schema (generated from the released package, toolkit/data/llamafactory/), its defaults where a
key is absent, every valid key the benchmark does not map listed with a specific reason.

The schema is LLaMA-Factory 0.9.5's dataclasses (and transformers 5.6.0's TrainingArguments, the newest
transformers it allows) read by scripts/llamafactory_schema.py; the files below use LLaMA-Factory's keys.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from toolkit.bench import lf_checks, lf_schema, recipes
from toolkit.errors import UsageError

from conftest import REPO, toolkit

LLAMA3 = "model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct\nstage: sft\ndo_train: true\n"


def _load(tmp_path, text: str, arch: str | None = None, name: str = "r.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return recipes.load(str(path), arch)


def _refused(tmp_path, text: str, arch: str | None = None) -> str:
    with pytest.raises(UsageError) as err:
        _load(tmp_path, text, arch)
    return f"{err.value} {getattr(err.value, 'hint', '')}"


def test_schema_is_llamafactory_0_9_5_with_its_sources():
    schema = lf_schema.schema()
    assert schema["llamafactory_version"] == "0.9.5" and schema["transformers_version"] == "5.6.0"
    assert len(schema["keys"]) == 346  # the 5 argument classes of _TRAIN_ARGS, init fields only
    groups = {info["group"] for info in schema["keys"].values()}
    assert groups == {
        "ModelArguments",
        "DataArguments",
        "TrainingArguments",
        "FinetuningArguments",
        "GeneratingArguments",
    }
    files = [s["file"] for s in schema["sources"]]
    assert any(f.endswith("llamafactory/hparams/finetuning_args.py") for f in files)
    assert all(len(s["sha256"]) == 64 for s in schema["sources"])
    # the values LLaMA-Factory 0.9.5 spells: bnb, not bitsandbytes (0.9.2 and older)
    assert "bnb" in schema["enums"]["quantization_method"]
    assert "bitsandbytes" not in schema["enums"]["quantization_method"]
    assert "adamw_torch" in schema["enums"]["optim"] and "paged_adamw_8bit" in schema["enums"]["optim"]
    assert lf_schema.choices("stage") == ["pt", "sft", "rm", "ppo", "dpo", "kto"]
    assert lf_schema.default("per_device_train_batch_size") == 8


def test_schema_file_is_what_the_generator_writes():
    """The committed JSON is the generator's output format (regenerate: scripts/llamafactory_schema.py)."""
    path = REPO / "toolkit" / "data" / "llamafactory" / "schema-0.9.5.json"
    data = json.loads(path.read_text())
    assert data["generator"] == "scripts/llamafactory_schema.py"
    assert data["archives"] == ["llamafactory-0.9.5.tar.gz", "transformers-5.6.0-py3-none-any.whl"]
    assert hashlib.sha256(path.read_bytes()).hexdigest()  # readable, not an LFS pointer
    assert list(data["keys"]) == sorted(data["keys"])


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("quantisation_bit: 4", "'quantisation_bit' (did you mean 'quantization_bit'?)"),
        ("lora_rnak: 64", "'lora_rnak' (did you mean 'lora_rank'?)"),
        ("cutof_len: 8192", "'cutof_len' (did you mean 'cutoff_len'?)"),
        ("optim: adamw_bogus", "optim 'adamw_bogus' is not one of LLaMA-Factory 0.9.5's values"),
        ("lr_scheduler_type: cosin", "lr_scheduler_type 'cosin'"),
        ("flash_attn: fa4", "flash_attn 'fa4'"),
    ],
)
def test_a_key_or_value_llamafactory_refuses_is_exit_2_before_anything_runs(tmp_path, line, named):
    path = tmp_path / "typo.yaml"
    path.write_text(LLAMA3 + line + "\n")
    results = tmp_path / "results"
    proc = toolkit("bench", "--recipe", str(path), "--scale", "tiny", "--results-dir", str(results))
    assert proc.returncode == 2, proc.stderr
    assert named in proc.stderr and "Traceback" not in proc.stderr
    assert not results.exists()  # nothing ran, nothing written


def test_quantization_method_as_llamafactory_0_9_5_spells_it(tmp_path):
    why = _refused(tmp_path, LLAMA3 + "quantization_bit: 4\nquantization_method: bitsandbytes\n")
    assert "spells it 'bnb'" in why and "unquantized" in why
    recipe = _load(tmp_path, LLAMA3 + "quantization_bit: 4\nquantization_method: bnb\n")
    assert recipe.quantized and recipe.quantization_method == "bnb"
    # absent: LLaMA-Factory's default, bnb
    assert _load(tmp_path, LLAMA3 + "quantization_bit: 4\n").quantization_method == "bnb"
    assert "4-bit hqq is not benchmarked" in _refused(
        tmp_path, LLAMA3 + "quantization_bit: 4\nquantization_method: hqq\n"
    )


def test_shipped_qlora_recipes_use_bnb():
    for name in ("qlora-llama3-8b", "qlora-zephyr-7b"):
        recipe = recipes.shipped()[name]
        assert recipe.quantized and recipe.quantization_method == "bnb"
        text = (REPO / "toolkit" / "data" / "recipes" / f"{name}.yaml").read_text()
        assert "quantization_method: bnb" in text and "bitsandbytes\n" not in text


def test_unmapped_keys_are_listed_with_specific_reasons_and_structured_fields(tmp_path):
    recipe = _load(
        tmp_path,
        LLAMA3 + "deepspeed: examples/deepspeed/ds_z3_offload_config.json\nuse_unsloth_gc: true\n"
        "enable_liger_kernel: true\nneat_packing: true\nadditional_target: embed_tokens\n"
        "upcast_lmhead_output: true\nflash_attn: fa2\nuse_dora: true\nnum_beams: 2\n",
    )
    listed = dict(recipe.unhonoured)
    assert "ZeRO" in listed["deepspeed"] and "offload" in listed["deepspeed"]
    assert "CPU memory" in listed["use_unsloth_gc"]
    assert "fused linear cross-entropy" in listed["enable_liger_kernel"]
    assert "block-diagonal" in listed["neat_packing"]
    assert "embed_tokens" in listed["additional_target"]
    assert "fp32 copy" in listed["upcast_lmhead_output"]
    assert "generation setting" in listed["num_beams"]  # by its argument class, GeneratingArguments
    assert len(set(listed.values())) == len(listed)  # no catch-all reason shared by different keys
    # what the memory plan reads
    assert recipe.deepspeed == {
        "stage": 3,
        "offload_optimizer": True,
        "offload_param": True,
        "config": "examples/deepspeed/ds_z3_offload_config.json",
    }
    assert recipe.unsloth_gc and recipe.liger and recipe.packing and recipe.upcast_lmhead_output
    assert recipe.flash_attn == "fa2" and recipe.lf_version == "0.9.5"


def test_deepspeed_config_read_from_the_file_when_it_exists(tmp_path):
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}))
    recipe = _load(tmp_path, LLAMA3 + f"deepspeed: {config}\n")
    assert recipe.deepspeed["stage"] == 2 and recipe.deepspeed["offload_optimizer"]
    assert not recipe.deepspeed["offload_param"]


@pytest.mark.parametrize(
    ("key", "variant"),
    [
        ("use_galore", "galore"),
        ("use_apollo", "apollo"),
        ("use_badam", "badam"),
        ("use_adam_mini", "adam_mini"),
    ],
)
def test_memory_saving_optimizers_are_named(tmp_path, key, variant):
    recipe = _load(tmp_path, LLAMA3 + f"finetuning_type: full\n{key}: true\n")
    assert recipe.optimizer_variant == variant
    assert "optimizer" in dict(recipe.unhonoured)[key].lower() or "state" in dict(recipe.unhonoured)[key]


def test_llamafactory_defaults_when_a_key_is_absent(tmp_path):
    recipe = _load(tmp_path, LLAMA3)
    assert recipe.batch_size == 8  # transformers' per_device_train_batch_size, which LF keeps
    assert recipe.lr_scheduler_type == "linear" and recipe.lora_rank == 8 and recipe.lora_alpha == 16
    assert recipe.max_length == 2048 and recipe.learning_rate == 5e-5
    # neither bf16 nor fp16: LF infers the dtype from the checkpoint and the device (bf16 here)
    assert recipe.precision == "bf16"
    assert any("LLaMA-Factory infers" in n for n in recipe.notes)
    assert lf_checks.inferred_precision({"torch_dtype": "float32"})[0] == "fp16"
    assert lf_checks.inferred_precision({"torch_dtype": "bfloat16"})[0] == "bf16"
    assert _load(tmp_path, LLAMA3 + "fp16: true\n").precision == "fp16"


def test_kto_at_batch_1_is_planned_as_lf_trains_it_and_run_at_batch_2(tmp_path):
    text = LLAMA3.replace("stage: sft", "stage: kto") + "per_device_train_batch_size: 1\n"
    recipe = recipes.override(_load(tmp_path, text), [])  # validation passes
    assert recipe.batch_size == 1
    assert any("builds each example's KL pair" in n for n in recipe.notes)
    run = recipes.sized(recipe, None, 512, 8, (1, 1))
    assert run.batch_size == 2 and any("KTOTrainer" in n for n in run.notes)


def test_pref_loss_is_ignored_for_kto_as_llamafactory_ignores_it(tmp_path):
    recipe = _load(tmp_path, LLAMA3.replace("stage: sft", "stage: kto") + "pref_loss: sigmoid\n")
    assert recipe.pref_loss == "kto"
    assert any("ignores pref_loss" in n for n in recipe.notes)
    assert "pref_loss" not in dict(recipe.unhonoured)


def test_set_is_applied_before_validation(tmp_path):
    path = tmp_path / "bad_ratio.yaml"
    path.write_text(LLAMA3 + "warmup_ratio: 1.5\n")
    refused = toolkit("bench", "--recipe", str(path), "--plan", "--gpu", "a40")
    assert refused.returncode == 2 and "warmup_ratio" in refused.stderr
    rescued = toolkit(
        "bench", "--recipe", str(path), "--plan", "--gpu", "a40", "--set", "recipe.warmup_ratio=0.1"
    )
    assert rescued.returncode in (0, 1), rescued.stderr  # planned (1: does not fit)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("TechxGenus/Meta-Llama-3-8B-Instruct-GPTQ", "GPTQ-quantized"),
        ("TechxGenus/Meta-Llama-3-8B-Instruct-AWQ", "AWQ-quantized"),
        ("ISTA-DASLab/Meta-Llama-3-8B-Instruct-AQLM-2Bit-1x16", "AQLM-quantized"),
    ],
)
def test_prequantized_checkpoints_are_refused_with_the_reason(tmp_path, model, expected):
    why = _refused(tmp_path, LLAMA3.replace("meta-llama/Meta-Llama-3-8B-Instruct", model), arch="llama3-8b")
    assert expected in why and "bitsandbytes" in why


def test_prequantized_from_config_and_bnb_checkpoints():
    with pytest.raises(UsageError, match="GPTQ-quantized"):
        lf_checks.refuse_prequantized("my/model", {"quantization_config": {"quant_method": "gptq"}}, "f")
    assert lf_checks.refuse_prequantized("unsloth/llama-3-8b-Instruct-bnb-4bit", {}, "f") == 4
    bnb8 = {"quantization_config": {"quant_method": "bitsandbytes", "load_in_8bit": True}}
    assert lf_checks.refuse_prequantized("my/model", bnb8, "f") == 8
    assert lf_checks.refuse_prequantized("meta-llama/Meta-Llama-3-8B-Instruct", {}, "f") is None


def test_bnb_checkpoint_plans_as_4_bit(tmp_path):
    text = LLAMA3.replace("meta-llama/Meta-Llama-3-8B-Instruct", "unsloth/llama-3-8b-Instruct-bnb-4bit")
    recipe = _load(tmp_path, text, arch="llama3-8b")
    assert recipe.quantization_bit == 4 and recipe.quantization_method == "bnb"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("model_name_or_path: x/y\ndo_predict: true\nstage: sft\n", "a prediction/evaluation file"),
        ("model_name_or_path: x/y\nexport_dir: out\n", "an export file"),
        ("model_name_or_path: x/y\ntemplate: qwen3\ninfer_backend: huggingface\n", "an inference file"),
        ("model:\n  model: Qwen/Qwen3-0.6B\npeft_config:\n  name: lora\n", "v1-format"),
        ("compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\n", "accelerate launcher config"),
    ],
)
def test_non_training_and_other_formats_are_refused_clearly(tmp_path, text, said):
    assert said in _refused(tmp_path, text)


def test_no_do_train_is_said(tmp_path):
    recipe = _load(tmp_path, "model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct\nstage: sft\n")
    assert any("do_train is not set" in n for n in recipe.notes)


def test_arch_replacing_the_named_model_is_said(tmp_path):
    recipe = _load(tmp_path, LLAMA3, arch="gemma2-9b")
    assert recipe.arch_overridden and recipe.architecture == "gemma2-9b"
    assert any("replaces the file's model meta-llama/Meta-Llama-3-8B-Instruct" in n for n in recipe.notes)
    same = _load(tmp_path, LLAMA3, arch="llama3-8b")
    assert not same.arch_overridden
    shipped = recipes.load("kto-gemma2-9b", "llama3-8b")
    assert shipped.arch_overridden and any("replaces the recipe's model" in n for n in shipped.notes)
