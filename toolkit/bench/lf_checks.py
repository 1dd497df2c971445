"""What a LLaMA-Factory file is before it is read as a training run: not a training file (predict, export,
inference), a vision-language model, a checkpoint that is already quantized; and the compute dtype
LLaMA-Factory infers when the file sets neither bf16 nor fp16.
"""

from __future__ import annotations

import re

from toolkit.bench.recipe import as_bool
from toolkit.errors import UsageError

# Hub names of checkpoints stored quantized, as their publishers suffix them
PREQUANTIZED = re.compile(r"(?i)[-_.](gptq|awq|aqlm|bnb[-_]?4bit|bnb[-_]?8bit|exl2|hqq|eetq|gguf)(?=[-_.]|$)")
VISION = re.compile(r"(?i)(?:^|[-_/])(?:vl|vision|llava|mllm)(?:[-_]|$)")


def _true(data: dict, key: str) -> bool:
    try:
        return as_bool(data.get(key, False))
    except ValueError:
        return False


def refuse_non_training(data: dict, origin: str) -> list[str]:
    """Predict, evaluation, export and inference files are refused; a file without do_train that is a
    training file otherwise trains here with a note (llamafactory-cli train would only load the model)."""
    training = _true(data, "do_train")
    kind = None
    if data.get("export_dir"):
        kind = "an export file (export_dir: llamafactory-cli export merges or quantizes a model)"
    elif not training and (_true(data, "do_predict") or _true(data, "do_eval")):
        kind = "a prediction/evaluation file (do_predict or do_eval without do_train)"
    elif not training and "stage" not in data and ("infer_backend" in data or "template" in data):
        kind = "an inference file (no stage, no do_train: llamafactory-cli chat/api/webchat)"
    if kind:
        raise UsageError(
            f"{origin}: {kind}: not a training run",
            hint="the benchmark plans and runs training files (do_train: true, stage, finetuning_type)",
        )
    if not training:
        return [
            "do_train is not set: `llamafactory-cli train` would load the model and not train; "
            "the benchmark trains it as with do_train: true"
        ]
    return []


def refuse_unmodelled(data: dict, model_id: str, origin: str) -> None:
    """Trainers whose memory the benchmark cannot stand in for: KTransformers' CPU-offloaded experts, and
    vision-language models (images and videos)."""
    if _true(data, "use_kt"):
        raise UsageError(
            f"{origin}: use_kt: LLaMA-Factory trains through KTransformers, which keeps the MoE experts in "
            "CPU memory and runs them with its own CPU kernels",
            hint="the benchmark (and its memory plan) holds the whole model on the GPU; a file without "
            "use_kt plans the GPU-only layout",
        )
    dataset = str(data.get("dataset", ""))
    keys = [k for k in ("image_max_pixels", "video_max_pixels", "freeze_vision_tower") if k in data]
    if VISION.search(model_id) or keys or "mllm" in dataset:
        raise UsageError(
            f"{origin}: a vision-language recipe ({', '.join([model_id or dataset, *keys])})",
            hint="the benchmark trains text models on synthetic text; images and videos are not reproduced",
        )


def refuse_prequantized(model_id: str, config: dict, origin: str) -> int | None:
    """A checkpoint stored quantized: bitsandbytes 4/8-bit plans and runs as that quantization (returns
    the bits); GPTQ, AWQ, AQLM and the other kernels are refused with the reason."""
    quant = config.get("quantization_config") if isinstance(config, dict) else None
    method = str((quant or {}).get("quant_method", "")).lower() if isinstance(quant, dict) else ""
    match = PREQUANTIZED.search(model_id or "")
    named = match.group(1).lower().replace("_", "-") if match else ""
    if method == "bitsandbytes" or named.startswith("bnb"):
        eight = (quant or {}).get("load_in_8bit") or "8bit" in named
        return 8 if eight else 4
    if method or named:
        what = method or named
        raise UsageError(
            f"{origin}: {model_id} is a checkpoint stored {what.upper()}-quantized: LLaMA-Factory trains "
            f"LoRA on its {what.upper()} kernels (weights as stored, dequantized per layer)",
            hint="the benchmark quantizes only through bitsandbytes (quantization_bit 4/8, "
            "quantization_method bnb) and has no GPTQ/AWQ/AQLM layout to plan or run; use the unquantized "
            "model with quantization_bit: 4 for a comparable QLoRA",
        )
    return None


def inferred_precision(model_config: dict) -> tuple[str, str]:
    """The compute dtype LLaMA-Factory picks when the file sets neither bf16, fp16 nor pure_bf16
    (model/patcher.py, extras/misc.py infer_optim_dtype): bf16 when the device has it and the
    checkpoint is bf16 or says nothing, else fp16. The note says so."""
    dtype = str(model_config.get("torch_dtype") or model_config.get("dtype") or "").replace("torch.", "")
    if dtype in ("", "bfloat16"):
        return "bf16", (
            "bf16/fp16 not set: LLaMA-Factory infers the weights' dtype, bf16 on a GPU that has it "
            f"(the checkpoint says {dtype or 'nothing'}); fp16 on one that does not, fp32 on the CPU"
        )
    return "fp16", (
        f"bf16/fp16 not set: LLaMA-Factory infers fp16 weights (the checkpoint is {dtype}); fp32 on the CPU"
    )
