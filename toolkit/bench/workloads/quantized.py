"""Quantized base weights for training recipes (QLoRA): a 4-bit NF4/FP4 or 8-bit LLM.int8 base through
bitsandbytes, on CUDA or on the CPU.

bitsandbytes (0.45 and later) ships a CPU backend: `Linear4bit` quantizes, dequantizes and runs forward
and backward on the CPU, `Linear8bitLt` too. So a 4-bit recipe runs everywhere; only bitsandbytes
itself must be installed. On the CPU the compute dtype is fp32, as the rest of the CPU path (train.py
trains fp32 there whatever the recipe says); on a GPU it is bf16 for a bf16 recipe, fp16 otherwise, as
before. TRL's trainers cast the LoRA adapters of a quantized model to bf16, on the CPU too.

Throughput on the CPU: each forward and backward dequantizes every 4-bit weight block by block to the
compute dtype before its matmul, so the same model trains slower than in plain fp32 (1-4x in the
readings behind the floor); the floor checked is `floors.train_quantized` (bench.toml), not the fp32
LoRA one.
"""

from __future__ import annotations

import contextlib
import importlib.util

NEEDS_BNB = "needs bitsandbytes"


def unavailable() -> str | None:
    """Why a quantized recipe cannot run here (None: it can, on CUDA or the CPU)."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return f"{NEEDS_BNB}: it is not installed (pip install 'bitsandbytes>=0.45', CPU and CUDA alike)"
    return None


def compute_dtype(recipe, device: str) -> str:
    """The dtype the quantized layers dequantize to and multiply in."""
    if device == "cpu":
        return "float32"
    return "bfloat16" if recipe.precision == "bf16" else "float16"


def bnb_config(recipe, device: str):
    import torch
    from transformers import BitsAndBytesConfig

    if recipe.quantization_bit == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=recipe.quantization_type,
            bnb_4bit_use_double_quant=recipe.double_quantization,
            bnb_4bit_compute_dtype=getattr(torch, compute_dtype(recipe, device)),
        )
    return BitsAndBytesConfig(load_in_8bit=True)


@contextlib.contextmanager
def quiet_progress():
    """transformers' shard-writing and weight-loading bars stay off the run's output."""
    from transformers.utils import logging

    was = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            logging.enable_progress_bar()


class CannotQuantize(RuntimeError):
    """bitsandbytes cannot quantize on this device (a build without the CPU backend, an unsupported GPU)."""


def build(ctx, recipe, dtype, folder, cfg):
    """(model, description, notes): the weights in `folder` quantized while loading; without a folder,
    random weights of `cfg` written once to a temporary folder and loaded from there (bitsandbytes
    quantizes while loading)."""
    import tempfile

    from toolkit.bench import architectures

    bits, notes = recipe.quantization_bit, []
    if folder is not None:
        model, description = load(folder, recipe, ctx.device, dtype)
    else:
        with tempfile.TemporaryDirectory(prefix="toolkit-qlora-") as scratch:
            with quiet_progress():
                architectures.build_model(cfg, dtype, "cpu", seed=ctx.seed).save_pretrained(scratch)
            model, description = load(scratch, recipe, ctx.device, dtype)
        notes.append(
            f"synthetic weights written once to a temporary folder and loaded {bits}-bit by bitsandbytes"
        )
    if ctx.device == "cpu":
        notes.append(
            f"{bits}-bit base on bitsandbytes' CPU backend, {description['compute_dtype']} compute: every "
            "step dequantizes the weights (floor train_quantized, not train's)"
        )
    return model, description, notes


def load(folder, recipe, device: str, dtype):
    """(model, description): the weights in `folder` quantized while loading, on `device`; raises
    CannotQuantize with the reason when bitsandbytes cannot do it here."""
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM

    from toolkit.bench import architectures

    # the whole model on one device: the CPU, or this process's GPU (its rank's under --gpus N)
    target = "cpu" if device == "cpu" else torch.cuda.current_device()
    try:
        with quiet_progress():
            model = AutoModelForCausalLM.from_pretrained(
                folder,
                dtype=dtype,
                local_files_only=True,
                quantization_config=bnb_config(recipe, device),
                device_map={"": target},
                **architectures.attention_kwargs(architectures.read_config(Path(folder)).get("model_type")),
            )
    except (ImportError, ValueError, RuntimeError, NotImplementedError) as exc:
        if isinstance(exc, torch.OutOfMemoryError):  # the runner reports it as out_of_memory
            raise
        raise CannotQuantize(f"bitsandbytes cannot quantize on {device}: {exc}") from exc
    return model, describe(model, recipe, device)


def describe(model, recipe, device: str) -> dict:
    """What the base weights really are (counted on the loaded model, not taken from the recipe)."""
    import bitsandbytes as bnb

    kind = bnb.nn.Linear4bit if recipe.quantization_bit == 4 else bnb.nn.Linear8bitLt
    layers = [m for m in model.modules() if isinstance(m, kind)]
    storage = sorted({str(m.weight.dtype).removeprefix("torch.") for m in layers})
    return {
        "method": "bitsandbytes",
        "bits": recipe.quantization_bit,
        "type": recipe.quantization_type if recipe.quantization_bit == 4 else "llm.int8",
        "double_quantization": bool(recipe.double_quantization) if recipe.quantization_bit == 4 else False,
        "compute_dtype": compute_dtype(recipe, device),
        "backend": "cpu" if device == "cpu" else "cuda",
        "quantized_layers": len(layers),
        "layer_class": kind.__name__,
        "storage_dtype": storage[0] if len(storage) == 1 else storage,
        "bitsandbytes_version": bnb.__version__,
    }


def adapter_dtype(model) -> str | None:
    """The trainable parameters' dtype once the trainer holds the model (TRL's SFT, KTO and DPO trainers
    cast QLoRA adapters to bf16, on the CPU too)."""
    kinds = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.requires_grad})
    return kinds[0] if len(kinds) == 1 else ",".join(kinds) or None


def prepare(model, recipe):
    """PEFT's k-bit preparation: norms and embeddings upcast to fp32, input gradients for checkpointing."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=recipe.activation_checkpointing)
