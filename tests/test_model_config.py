"""Architectures from config.json: every shipped architecture's parameter count equals the model that
transformers builds from it (MoE experts and DeepSeek's latent attention included), MoE totals and
active counts match what the model makers publish, and a local config.json (a folder, or the Hugging
Face cache's models--org--name/snapshots/*/config.json) plans with `--plan --model` and by Hub id."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from toolkit.bench import architectures, model_config

SHIPPED = sorted(architectures.shipped())


@pytest.mark.parametrize("name", SHIPPED)
def test_counts_equal_the_model_transformers_builds(name):
    """Trimmed to 4 layers (DeepSeek: 3 dense + 1 sparse; MoE: every expert built) on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(architectures.get(name).config)
    cfg["num_hidden_layers"] = min(cfg["num_hidden_layers"], 4)
    counts = model_config.param_counts(cfg)
    kind = cfg.pop("model_type")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(kind, **cfg))
    built = sum(p.numel() for p in model.parameters())
    assert abs(counts.total - built) / built < 2e-5  # Qwen2's q/k/v biases are not counted


@pytest.mark.parametrize(
    ("name", "total_b", "active_b"),
    [("mixtral-8x7b", 46.7, 12.9), ("qwen3-30b-a3b", 30.5, 3.3), ("deepseek-v3", 671.0, 37.0)],
)
def test_moe_total_and_active_match_the_published_sizes(name, total_b, active_b):
    counts = model_config.param_counts(architectures.get(name).config)
    assert counts.is_moe
    assert counts.total / 1e9 == pytest.approx(total_b, rel=0.02)
    assert counts.active / 1e9 == pytest.approx(active_b, rel=0.05)


def test_hub_ids_map_to_shipped_shapes():
    for hub_id, name in [
        ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b"),
        ("meta-llama/Llama-3.2-1B", "llama3.2-1b"),
        ("deepseek-ai/DeepSeek-V2-Lite", "deepseek-v2-lite"),
        ("Qwen/Qwen3-30B-A3B", "qwen3-30b-a3b"),
    ]:
        assert architectures.for_hub_id(hub_id).name == name


def _cache_with(tmp_path, hub_id: str, config: dict):
    folder = tmp_path / "hub" / ("models--" + hub_id.replace("/", "--")) / "snapshots" / "0123abcd"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_a_hub_id_in_the_local_cache_is_read_from_its_config(tmp_path, monkeypatch):
    config = dict(architectures.get("qwen3-4b").config)
    _cache_with(tmp_path, "someorg/my-finetune", config)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    arch = architectures.for_hub_id("someorg/my-finetune")
    assert arch is not None and arch.config["hidden_size"] == config["hidden_size"]
    assert architectures.for_hub_id("someorg/absent") is None


def _plan(args, env=None):
    proc = subprocess.run(
        [sys.executable, "-m", "toolkit", "bench", "--plan", *args, "--json", "-"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    return proc, (json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None)


def test_plan_model_dir_reads_a_bare_config_json_and_counts_experts(tmp_path):
    folder = tmp_path / "mixtral"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(architectures.get("mixtral-8x7b").config), encoding="utf-8"
    )
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(
        "stage: sft\nfinetuning_type: lora\nlora_target: all\ncutoff_len: 1024\n"
        "per_device_train_batch_size: 1\nquantization_bit: 4\nbf16: true\n",
        encoding="utf-8",
    )
    proc, doc = _plan(["--recipe", str(recipe), "--model", str(folder), "--gpu", "h100-sxm"])
    assert doc is not None, proc.stderr[-2000:]
    row = doc["rows"][0]
    assert row["parameters"]["experts"] == 8 and row["parameters"]["experts_per_token"] == 2
    assert row["parameters"]["total"] > 3 * row["parameters"]["active"]
    assert set(row["trainers"]) >= {"llamafactory", "trl"}


@pytest.mark.parametrize(("name", "expected"), [("gemma2-9b", "eager"), ("llama3-8b", None)])
def test_gemma2_trains_with_the_soft_capped_eager_attention(name, expected, tmp_path):
    """transformers 5.17 and earlier hand Gemma 2 SDPA, which drops its attention soft-capping (an H200
    run measured 4 GiB less than the eager plan that way); toolkit's runs load it eager, as LLaMA-Factory
    does, both when building random weights and when loading a saved folder."""
    import torch
    from transformers import AutoModelForCausalLM

    arch = architectures.get(name)
    cfg = dict(arch.config, num_hidden_layers=1, hidden_size=64, intermediate_size=128, vocab_size=256)
    cfg.update(num_attention_heads=2, num_key_value_heads=1, head_dim=32)
    built = architectures.build_model(cfg, torch.float32, "cpu")
    built.save_pretrained(tmp_path)
    kind = architectures.read_config(tmp_path)["model_type"]
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, **architectures.attention_kwargs(kind))
    for model in (built, loaded):
        if expected:
            assert model.config._attn_implementation == expected
        else:
            assert model.config._attn_implementation != "eager"  # transformers' own choice (SDPA)
