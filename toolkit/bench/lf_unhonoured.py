"""What a LLaMA-Factory key that the benchmark does not map does in LLaMA-Factory, and why the benchmark
does not reproduce it: one specific reason per key (by the key, else by its argument class), and the
structured fields the memory plan reads (deepspeed, liger, unsloth, packing, ...).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from toolkit.bench.recipe import as_bool

_DATA = "the benchmark trains on synthetic data of the recipe's shape"
_EVAL = "no evaluation during a benchmark"
_STEPS = "a benchmark runs a fixed number of measured steps"
_SAVE = "a benchmark keeps no checkpoint"
_MEM = "; the memory plan models it, the TRL run does not"
REASONS = {
    "dataset": _DATA,
    "dataset_dir": _DATA,
    "media_dir": _DATA,
    "tokenized_path": _DATA,
    "streaming": _DATA,
    "buffer_size": _DATA,
    "mix_strategy": _DATA,
    "interleave_probs": _DATA,
    "train_on_prompt": "which tokens carry the loss changes no memory; synthetic data masks the prompt",
    "mask_history": "which tokens carry the loss changes no memory; synthetic data has one turn",
    "eval_dataset": _EVAL,
    "val_size": _EVAL,
    "eval_strategy": _EVAL,
    "eval_steps": _EVAL,
    "per_device_eval_batch_size": _EVAL,
    "do_eval": _EVAL,
    "compute_accuracy": _EVAL,
    "num_train_epochs": _STEPS,
    "max_steps": _STEPS,
    "max_samples": _STEPS,
    "output_dir": _SAVE,
    "overwrite_output_dir": _SAVE,
    "save_steps": _SAVE,
    "save_strategy": _SAVE,
    "save_only_model": _SAVE,
    "save_total_limit": _SAVE,
    "logging_steps": "the benchmark logs every step itself",
    "plot_loss": "the report carries the loss per step",
    "report_to": "nothing is reported to trackers",
    "run_name": "nothing is reported to trackers",
    "template": "synthetic text needs no chat template (chat recipes use their own tokens)",
    "overwrite_cache": "no dataset cache",
    "preprocessing_num_workers": "synthetic data needs no workers",
    "dataloader_num_workers": "data loading stays in the process for steady timings",
    "do_train": "training is what the benchmark does",
    "ddp_timeout": "multi-process runs use `--gpus N`",
    "resume_from_checkpoint": "a benchmark starts fresh",
    "trust_remote_code": "only shipped architectures or local Transformers models are built",
    "seed": "the benchmark's --seed sets weights and data",
    "deepspeed": "LLaMA-Factory hands the JSON to DeepSpeed (ZeRO stage 2/3 shards optimizer state, "
    "gradients and, at 3, the weights across GPUs; offload moves them to CPU memory); the TRL run is "
    "plain PyTorch (DDP with --gpus N)" + _MEM,
    "use_unsloth": "LLaMA-Factory swaps in Unsloth's patched model (fused kernels, its own LoRA layout); "
    "the TRL run uses stock Transformers + PEFT" + _MEM,
    "use_unsloth_gc": "Unsloth's gradient checkpointing offloads the checkpointed activations to CPU "
    "memory; the TRL run keeps PyTorch's checkpointing on the GPU" + _MEM,
    "enable_liger_kernel": "Liger's fused kernels (RMSNorm, SwiGLU, fused linear cross-entropy that never "
    "materialises the full logits) replace Transformers' modules; the TRL run uses the stock ones" + _MEM,
    "flash_attn": "LLaMA-Factory picks the attention kernel (sdpa, fa2, fa3); the TRL run uses "
    "Transformers' default for the device (sdpa on a GPU), so a fa2/fa3 speed-up is not measured",
    "packing": "LLaMA-Factory packs several examples into one cutoff_len row; synthetic rows are already "
    "full-length, so tokens per step match, but cross-example attention masking is not reproduced" + _MEM,
    "neat_packing": "packing without cross-attention between the packed examples (block-diagonal mask); "
    "synthetic rows are single examples" + _MEM,
    "additional_target": "extra modules (e.g. embed_tokens, lm_head) trained in full beside LoRA: their "
    "weights, gradients and Adam state; the TRL run trains the LoRA adapters only" + _MEM,
    "ref_model": "a separate reference model loaded beside the policy (its weights in memory); the TRL run "
    "uses the policy with the adapters disabled as its reference" + _MEM,
    "ref_model_adapters": "adapters of the separate reference model; not loaded by the TRL run",
    "ref_model_quantization_bit": "the separate reference model quantized; not loaded by the TRL run",
    "use_galore": "GaLore projects gradients to low rank inside the optimizer (smaller optimizer state); "
    "the TRL run uses the file's optim without the projection" + _MEM,
    "use_apollo": "APOLLO keeps a low-rank approximation of Adam's state (smaller optimizer state); "
    "not in the TRL run" + _MEM,
    "use_badam": "BAdam updates one block of layers at a time (optimizer state of one block only); the TRL "
    "run updates all trainable parameters each step" + _MEM,
    "use_adam_mini": "Adam-mini keeps one second moment per block (about half of Adam's state); the TRL run "
    "uses the file's optim" + _MEM,
    "use_muon": "Muon's orthogonalised momentum for 2-D weights (one state instead of Adam's two); the TRL "
    "run uses the file's optim" + _MEM,
    "fp8": "FP8 matmuls through Transformer Engine/torchao (activations and, with FSDP, gathers in fp8); "
    "the TRL run computes in the recipe's bf16/fp16" + _MEM,
    "fp8_backend": "FP8 kernels' backend; the TRL run has no fp8 path",
    "fp8_enable_fsdp_float8_all_gather": "FP8 all-gather under FSDP; the TRL run has no FSDP",
    "upcast_lmhead_output": "LLaMA-Factory casts the LM head's logits to fp32 (a full fp32 copy of "
    "batch x sequence x vocabulary); the TRL run keeps them in the compute dtype" + _MEM,
    "upcast_layernorm": "LLaMA-Factory keeps the norm weights in fp32 (tiny); not in the TRL run" + _MEM,
    "pure_bf16": "LLaMA-Factory holds the trainable weights and optimizer in bf16 (no fp32 master copy); "
    "the TRL run trains the adapters in fp32" + _MEM,
    "loraplus_lr_ratio": "LoRA+ gives the B matrices a larger learning rate; speed and memory unchanged, "
    "not reproduced",
    "use_rslora": "rank-stabilised LoRA scaling; speed and memory unchanged, not reproduced",
    "use_dora": "DoRA adds a magnitude vector and a weight-norm per adapted layer (slower, more activation "
    "memory); the TRL run trains plain LoRA",
    "pissa_init": "PiSSA initialises the adapters from an SVD of the weights; speed and memory of training "
    "unchanged, not reproduced",
    "rope_scaling": "RoPE scaling changes positions, not the work per token; not applied",
    "shift_attn": "LongLoRA's shifted sparse attention; not in the TRL run",
    "use_llama_pro": "LLaMA Pro trains expanded blocks only; not in the TRL run",
    "freeze_vision_tower": "a vision tower: the benchmark trains text only",
    "image_max_pixels": "images: the benchmark trains text only",
    "video_max_pixels": "videos: the benchmark trains text only",
    "enable_thinking": "a chat-template switch; synthetic text has no template",
    "ray_run_name": "LLaMA-Factory's Ray launcher; the benchmark runs in this process (or --gpus N)",
    "torch_compile": "torch.compile is not applied by the TRL run; its speed-up is not measured",
    "gradient_checkpointing_kwargs": "the TRL run uses non-reentrant checkpointing itself",
    "include_num_input_tokens_seen": "the benchmark counts tokens itself",
}
_BY_CLASS = {
    "GeneratingArguments": "a generation setting (predict, chat, evaluation): a training benchmark does not "
    "generate",
    "ProfilerArguments": "LLaMA-Factory's profiler; the benchmark times steps itself",
    "RayArguments": "LLaMA-Factory's Ray launcher; the benchmark runs in this process (or --gpus N)",
    "GaloreArguments": "a GaLore setting (use_galore is not modelled by the TRL run)",
    "ApolloArguments": "an APOLLO setting (use_apollo is not modelled by the TRL run)",
    "BAdamArgument": "a BAdam setting (use_badam is not modelled by the TRL run)",
    "SwanLabArguments": "nothing is reported to trackers",
    "OFTArguments": "an OFT setting: the benchmark trains LoRA or full",
    "FreezeArguments": "a freeze-tuning setting: the benchmark trains LoRA or full",
    "VllmArguments": "an inference-engine setting: a training benchmark does not serve",
    "SGLangArguments": "an inference-engine setting: a training benchmark does not serve",
    "ExportArguments": "an export setting: a training benchmark writes no model",
    "KTransformersArguments": "KTransformers' CPU/GPU hybrid MoE kernels: not in the TRL run",
}


def reason(key: str, info: dict | None) -> str:
    """Why the benchmark does not reproduce `key` (its LLaMA-Factory argument class gives the fallback)."""
    if key in REASONS:
        return REASONS[key]
    cls = (info or {}).get("class", "")
    if cls in _BY_CLASS:
        return _BY_CLASS[cls]
    group = (info or {}).get("group", "")
    return (
        f"a {cls or group} setting of LLaMA-Factory ({group}) that the TRL run does not map; "
        "it does not change what the benchmark measures"
    )


def _flag(data: dict, key: str) -> bool:
    try:
        return as_bool(data.get(key, False))
    except ValueError:
        return False


def deepspeed(value, notes: list[str]) -> dict | None:
    """{"stage", "offload_optimizer", "offload_param", "config"} of the file's DeepSpeed config: read from
    the JSON when it exists here, else from LLaMA-Factory's file names (ds_z3_offload_config.json)."""
    if not value:
        return None
    config = value if isinstance(value, dict) else None
    path = Path(str(value)).expanduser() if not isinstance(value, dict) else None
    if path is not None and path.is_file():
        try:
            config = json.loads(path.read_text(encoding="utf-8")[:1_000_000])
        except (OSError, ValueError):
            config = None
    if isinstance(config, dict):
        zero = config.get("zero_optimization") or {}
        stage = zero.get("stage", 0)
        return {
            "stage": int(stage) if str(stage).isdigit() else 0,
            "offload_optimizer": str((zero.get("offload_optimizer") or {}).get("device", "none")) == "cpu",
            "offload_param": str((zero.get("offload_param") or {}).get("device", "none")) == "cpu",
            "config": str(path) if path else "inline",
        }
    name = Path(str(value)).name
    match = re.search(r"z(\d)", name)
    notes.append(f"deepspeed {value}: not found here; ZeRO stage and offload read from its name")
    return {
        "stage": int(match.group(1)) if match else 0,
        "offload_optimizer": "offload" in name,
        "offload_param": "offload" in name and bool(match and match.group(1) == "3"),
        "config": str(value),
    }


def features(data: dict, notes: list[str]) -> dict:
    """The Recipe fields the memory plan reads, from the file's keys (absent keys: LLaMA-Factory's
    defaults)."""
    optimizer = next(
        (name for name in ("galore", "apollo", "badam", "adam_mini", "muon") if _flag(data, f"use_{name}")),
        None,
    )
    ref_model = data.get("ref_model")
    return {
        "deepspeed": deepspeed(data.get("deepspeed"), notes),
        "liger": _flag(data, "enable_liger_kernel"),
        "unsloth": _flag(data, "use_unsloth"),
        "unsloth_gc": _flag(data, "use_unsloth_gc"),
        "packing": _flag(data, "packing") or _flag(data, "neat_packing"),
        "pure_bf16": _flag(data, "pure_bf16"),
        "ref_model": str(ref_model) if ref_model else None,
        "upcast_lmhead_output": _flag(data, "upcast_lmhead_output"),
        "upcast_layernorm": _flag(data, "upcast_layernorm"),
        "flash_attn": str(data.get("flash_attn", "auto")),
        "optimizer_variant": optimizer,
        "fp8": _flag(data, "fp8"),
    }
