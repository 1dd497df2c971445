"""The memory estimate and `toolkit bench --plan`: every shipped recipe plans, the users' recipes fit the
cards they ran on, 4-bit weights match what bitsandbytes really allocates, and the estimate matches
the measured peak of real TRL + PEFT training runs on this CPU."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from toolkit.bench import flops, recipes
from toolkit.bench.estimate import estimate_training
from toolkit.bench.settings import ModelShape

from conftest import toolkit

GIB = 2**30
PROFILES = ("a40", "rtx-3090", "a10g", "h100-sxm")


@pytest.fixture(scope="module")
def plan() -> dict:
    proc = toolkit("bench", "--plan", "--gpu", ",".join(PROFILES), "--json", "-")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _row(plan: dict, recipe: str, profile: str) -> dict:
    return next(r for r in plan["rows"] if r["recipe"] == recipe and r["profile"] == profile)


def test_every_shipped_recipe_plans_on_its_own_profile():
    proc = toolkit("bench", "--plan")
    assert proc.returncode == 0, proc.stderr
    for name, recipe in recipes.shipped().items():
        line = next(ln for ln in proc.stdout.splitlines() if f" {name} " in ln)
        assert (recipe.profile or "cpu") in line
    assert "Traceback" not in proc.stderr


def test_plan_json_has_every_recipe_on_every_requested_profile(plan):
    assert plan["schema_version"] == 2 and plan["scale"] == "full"
    assert {(r["recipe"], r["profile"]) for r in plan["rows"]} == {
        (name, p) for name in recipes.shipped() for p in PROFILES
    }
    for row in plan["rows"]:
        parts = row["estimate"]["parts"]
        assert sum(p["bytes"] for p in parts) == pytest.approx(row["estimate_bytes"], abs=len(parts))
        assert all(p["formula"] for p in parts)
        need = row["estimate_bytes"] + row["reserve_bytes"]  # the CUDA context reserve (0 on the CPU)
        assert row["reserve_bytes"] == (0 if row["device"] == "cpu" else 512 * 2**20)
        assert row["margin_bytes"] == row["memory_bytes"] - need
        assert row["verdict"] in ("yes", "tight", "no")
        assert row["fits"] == (need <= row["memory_bytes"])
        assert row["trainer"] == "trl" and "trl" in row["trainers"]  # shipped recipes: as toolkit bench runs
    assert _row(plan, "kto-gemma2-9b", "a40")["memory_bytes"] == 48 * GIB  # the catalog's figure


def test_the_users_recipes_fit_the_cards_they_ran_on(plan):
    # Gemma 2 9B KTO on an A40: the users saw up to 44 GB with LLaMA-Factory, which materialises the
    # 4 x 2048 x 256k logits; TRL 1.16 tiles the LM head, so the estimate must stay below that. It
    # cannot be below 22 GiB: weights 9.24 B x 2 B = 17.2 GiB, the LoRA r16 training state 0.8 GiB,
    # 42 checkpointed layer inputs of 8192 tokens 2.3 GiB, and one eager-attention layer's scores
    # (4 x 16 heads x 2048^2 x 8 B = 2 GiB).
    gemma = _row(plan, "kto-gemma2-9b", "a40")
    assert gemma["verdict"] == "yes"
    assert 22 * GIB <= gemma["estimate_bytes"] <= 44 * GIB
    # ... and 24 GB cards cannot hold it: the weights alone are 17.2 GiB
    assert _row(plan, "kto-gemma2-9b", "rtx-3090")["verdict"] == "no"
    assert _row(plan, "kto-gemma2-9b", "a10g")["verdict"] == "no"
    # Llama 2 7B LoRA in bf16 on the users' RTX 3090; QLoRA of Zephyr and Llama 3 8B on an A10G
    for recipe, profile in (
        ("lora-llama2-7b", "rtx-3090"),
        ("qlora-zephyr-7b", "a10g"),
        ("qlora-llama3-8b", "a10g"),
    ):
        assert _row(plan, recipe, profile)["verdict"] == "yes", recipe
    llama2 = _row(plan, "lora-llama2-7b", "rtx-3090")
    assert llama2["estimate_bytes"] >= 2 * flops.total_params(recipes.shipped()["lora-llama2-7b"].model)
    assert all(r["verdict"] == "yes" for r in plan["rows"] if r["profile"] == "h100-sxm")


def test_a_requested_recipe_that_does_not_fit_exits_1():
    proc = toolkit("bench", "--plan", "--recipe", "kto-gemma2-9b", "--gpu", "rtx-3090")
    assert proc.returncode == 1, proc.stderr
    assert "does not fit: kto-gemma2-9b on rtx-3090" in proc.stderr
    assert toolkit("bench", "--plan", "--recipe", "kto-gemma2-9b", "--gpu", "a40").returncode == 0


def test_bad_profiles_and_paths_are_usage_errors(tmp_path):
    proc = toolkit("bench", "--plan", "--gpu", "a40,no-such-gpu")
    assert proc.returncode == 2
    assert "unknown profile 'no-such-gpu'" in proc.stderr and "known profiles:" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = toolkit("bench", "--plan", "--json", str(tmp_path))
    assert proc.returncode == 2 and "is a directory" in proc.stderr.lower()


def test_quantized_recipe_on_the_cpu_is_planned_as_the_cpu_backend_runs_it(tmp_path):
    out = tmp_path / "plan.json"
    proc = toolkit("bench", "--plan", "--recipe", "qlora-zephyr-7b", "--gpu", "cpu,a10g", "--json", str(out))
    assert proc.returncode in (0, 1), proc.stderr  # 1: the full-size recipe does not fit this machine's RAM
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["verdict"] in ("yes", "tight", "no") and rows[1]["verdict"] == "yes"
    assert isinstance(rows[0]["fits"], bool)
    assert "fp32 compute" in json.dumps(rows[0])
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]  # atomic write: no temp file left


def test_4bit_weights_shrink_the_16bit_ones_by_the_bitsandbytes_factor():
    recipe = recipes.shipped()["qlora-zephyr-7b"]
    four = estimate_training(recipe, "cuda").part("weights").bytes
    sixteen = estimate_training(replace(recipe, quantization_bit=None), "cuda").part("weights").bytes
    shape = recipe.model
    linear = flops.matmul_params(shape) - shape.hidden_size * shape.vocab_size
    other = flops.total_params(shape) - linear
    assert sixteen == 2 * flops.total_params(shape)
    # NF4 + double quantization: 0.5 B + 1/64 B (8-bit absmax) + 4/16384 B; the rest upcast to fp32
    assert (four - 4 * other) / linear == pytest.approx(0.5 + 1 / 64 + 4 / 16384)
    assert 0.28 < four / sixteen < 0.36
    no_double = estimate_training(replace(recipe, double_quantization=False), "cuda").part("weights").bytes
    assert (no_double - 4 * other) / linear == pytest.approx(0.5 + 4 / 64)


def test_4bit_weights_match_a_real_bitsandbytes_model(tmp_path):
    """Load a small Mistral-shaped model 4-bit with transformers + bitsandbytes on the CPU, prepare it
    for k-bit training as train.py does, and count the bytes it really holds."""
    bnb = pytest.importorskip("bitsandbytes")
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, MistralConfig, MistralForCausalLM

    shape = ModelShape(512, 1408, 2, 8, 2, 4096)
    config = MistralConfig(
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        vocab_size=4096,
    )
    MistralForCausalLM(config).to(torch.bfloat16).save_pretrained(tmp_path)
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    try:
        model = AutoModelForCausalLM.from_pretrained(
            tmp_path, quantization_config=quant, dtype=torch.bfloat16, device_map={"": "cpu"}
        )
    except (RuntimeError, ImportError, ValueError) as exc:  # a bitsandbytes build without its CPU backend
        pytest.skip(f"bitsandbytes {bnb.__version__} cannot quantize on this CPU: {exc}")
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    held = 0
    for param in model.parameters():
        held += param.numel() * param.element_size()
        state = getattr(param, "quant_state", None)
        if state is not None:
            held += state.absmax.numel() * state.absmax.element_size()
            if state.nested:
                held += state.state2.absmax.numel() * 4 + state.state2.code.numel() * 4
    recipe = replace(recipes.shipped()["qlora-zephyr-7b"], model=shape)
    assert estimate_training(recipe, "cuda").part("weights").bytes == pytest.approx(held, rel=0.02)


def test_kv_cache_estimate_matches_a_real_cache():
    """The KV cache a real Llama (grouped-query attention, bf16) holds after a prefill of 3 x 20 tokens."""
    import torch

    from toolkit.bench.estimate import estimate_inference
    from toolkit.bench.synthetic import build_llama, build_tokenizer

    shape = ModelShape(128, 344, 3, 8, 2, 512)
    model = build_llama(shape, build_tokenizer(512), torch.bfloat16, "cpu")
    with torch.no_grad():
        cache = model(input_ids=torch.randint(5, 500, (3, 20)), use_cache=True).past_key_values
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    est = estimate_inference(shape, batch=3, tokens=20, dtype="bfloat16")
    assert est.part("KV cache").bytes == held
    assert est.part("weights").bytes == 2 * sum(p.numel() for p in model.parameters())


# Real TRL + PEFT training through `toolkit bench --recipe` on the CPU, sized so that the load's own
# memory (0.5-1 GB) dominates the process's. The record carries the estimate (train.py calls the
# estimator) and the peak RSS over the RSS at the load's start. The CLI imports the training stack
# before the first load's baseline (importing peft alone adds ~90 MB of RSS). glibc's mmap threshold is
# set to 64 KiB here (MALLOC_MMAP_THRESHOLD_): with the dynamic threshold glibc keeps freed tensor memory
# in the heap and RSS reads like CUDA's *reserved* memory (measured: 0.63-0.84 of it); with it RSS follows
# live tensors like max_memory_allocated, which is what the estimate counts. The CLI does not set it
# itself: every large allocation becoming an mmap made decoding up to 50x slower (measured).
SIZE = ["train.model.hidden_size=512", "train.model.intermediate_size=1408", "train.model.vocab_size=8192"]
MEASURED = {
    "sft-no-checkpointing": ("sft-smollm2-cpu", SIZE),
    "dpo-checkpointing": ("dpo-lora", [*SIZE[:2], "train.model.vocab_size=16384"]),
}


@pytest.mark.parametrize("case", MEASURED, ids=str)
def test_estimate_is_within_15_percent_of_the_measured_peak(case, tmp_path):
    """Through the CLI, as a user runs it: the record's measured peak (RSS the load added) against its
    estimate."""
    from conftest import toolkit

    recipe, sets = MEASURED[case]
    sets = [*sets, "train.warmup_steps=1", "train.measured_steps=1", "matmul.size=256"]
    sets.append("memory_bandwidth.bytes=16777216")
    out = tmp_path / "run.json"
    proc = toolkit(
        *("bench", "--scale", "small", "--threads", "2", "--recipe", recipe, "--json", str(out)),
        *("--results-dir", str(tmp_path)),
        *(a for s in sets for a in ("--set", s)),
        env={"MALLOC_MMAP_THRESHOLD_": "65536"},
        timeout=600,
    )
    assert out.exists(), proc.stderr[-3000:]
    rec = json.loads(out.read_text())["results"][-1]
    assert rec["status"] != "error", rec.get("error")
    m = rec["metrics"]
    measured = m["peak_memory_bytes"] - m["baseline_memory_bytes"]
    estimate = m["memory_estimate_bytes"]
    assert measured > 400 * 2**20, "the load must dominate the process's own memory"
    parts = {p["name"]: p["bytes"] for p in rec["config"]["memory_estimate"]["parts"]}
    assert estimate == pytest.approx(measured, rel=0.15), (estimate, measured, parts)
    assert m["memory_measured_over_estimate_ratio"] == pytest.approx(measured / estimate, abs=1e-3)


# --- the plan per trainer (toolkit.bench.memory_plan, memory_head): what each trainer materialises ---


def _part(est, name):
    return next((p.bytes for p in est.parts if p.name == name), 0)


def _full_bf16(name="lora-llama2-7b", **changes):
    return replace(recipes.shipped()[name], finetuning_type="full", precision="bf16", **changes)


def test_llamafactory_full_bf16_keeps_fp32_master_weights_unless_pure_bf16():
    recipe = _full_bf16()
    n = flops.total_params(recipe.model)
    trl = estimate_training(recipe, "cuda", trainer="trl")
    lf = estimate_training(recipe, "cuda", trainer="llamafactory")
    state = ("weights", "16-bit weight copies", "gradients", "optimizer states")
    assert sum(_part(trl, p) for p in state) == pytest.approx(n * (2 + 2 + 4))
    assert sum(_part(lf, p) for p in state) == pytest.approx(n * (4 + 2 + 4 + 8))
    pure = estimate_training(replace(recipe, pure_bf16=True), "cuda", trainer="llamafactory")
    assert sum(_part(pure, p) for p in state) == pytest.approx(n * 8)


def test_qlora_layout_differs_by_trainer_peft_upcasts_the_embeddings_lf_does_not():
    recipe = recipes.shipped()["qlora-llama3-8b"]
    trl = estimate_training(recipe, "cuda", trainer="trl")
    lf = estimate_training(recipe, "cuda", trainer="llamafactory")
    embeddings = 2 * recipe.model.vocab_size * recipe.model.hidden_size  # untied: input + LM head
    assert _part(trl, "weights") - _part(lf, "weights") == pytest.approx(embeddings * 2, rel=0.01)
    assert "prepare_model_for_kbit_training" in trl.part("weights").formula


def test_llamafactory_kto_materialises_the_logits_and_liger_does_not():
    recipe = recipes.shipped()["kto-gemma2-9b"]
    lf = estimate_training(recipe, "cuda", trainer="llamafactory")
    peak = lf.part("peak transient")
    rows, vocab = recipe.batch_size * recipe.max_length, recipe.model.vocab_size
    assert peak.formula.startswith("LM head logits (materialised)")
    assert peak.bytes == rows * vocab * (20 + 2)  # KTO 20 B + Gemma 2's saved tanh output
    trl = estimate_training(recipe, "cuda", trainer="trl")
    assert "materialised" not in trl.part("peak transient").formula  # TRL tiles the head
    assert lf.total - trl.total > 0.8 * peak.bytes
    liger = estimate_training(replace(recipe, liger=True), "cuda", trainer="llamafactory")
    assert "materialised" not in liger.part("peak transient").formula


def test_zero3_shards_by_gpu_count_and_offload_moves_state_off_the_gpu():
    from toolkit.bench import memory_plan

    recipe = replace(_full_bf16(), source_format="llamafactory", deepspeed={"stage": 3})
    one = memory_plan.trainer_estimates(recipe, "cuda", 1)["llamafactory"]
    four = memory_plan.trainer_estimates(recipe, "cuda", 4)["llamafactory"]
    n = flops.total_params(recipe.model)
    assert _part(one, "optimizer states") == pytest.approx(n * 12)  # fp32 master + Adam in DeepSpeed
    assert _part(four, "optimizer states") == pytest.approx(n * 12 / 4)
    assert _part(four, "weights") == pytest.approx(n * 2 / 4)
    off = replace(recipe, deepspeed={"stage": 3, "offload_optimizer": True, "offload_param": True})
    offloaded = memory_plan.trainer_estimates(off, "cuda", 4)["llamafactory"]
    assert _part(offloaded, "optimizer states") == 0 and _part(offloaded, "weights") == 0
    assert _part(offloaded, "gathered layer") > 0


def test_a_separate_reference_model_adds_its_weights():
    from toolkit.bench import memory_plan

    recipe = replace(recipes.shipped()["dpo-lora"], source_format="llamafactory")
    plain = memory_plan.trainer_estimates(recipe, "cuda")["llamafactory"]
    with_ref = memory_plan.trainer_estimates(replace(recipe, ref_model="some/model"), "cuda")["llamafactory"]
    assert with_ref.total - plain.total == pytest.approx(_part(plain, "weights"))
