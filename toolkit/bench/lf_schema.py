"""LLaMA-Factory's own argument schema: the keys a training YAML may use and the values some of them take,
per released version (`toolkit/data/llamafactory/schema-<version>.json`, generated from the package's
source by scripts/llamafactory_schema.py). LLaMA-Factory hands the file to HfArgumentParser, which
refuses any key its argument classes do not declare; this module refuses the same keys before anything
runs, with the nearest real key as a hint, and tells files that are not v0 training files apart.
"""

from __future__ import annotations

import difflib
import json
from functools import cache

from toolkit.errors import UsageError
from toolkit.resources import data_text

LF_VERSION = "0.9.5"  # the newest released LLaMA-Factory the keys are checked against
# keys of LLaMA-Factory's "v1" trainer format (examples/v1/): a different file layout, not read here
V1_KEYS = {
    "model_class",
    "peft_config",
    "kernel_config",
    "dist_config",
    "quant_config",
    "train_dataset",
    "micro_batch_size",
    "batching_strategy",
    "sample_backend",
    "optim_config",
    "init_config",
}
# keys of an accelerate launcher config (examples/accelerate/): it says how to launch, not what to train
ACCELERATE_KEYS = {"compute_environment", "distributed_type", "num_processes", "machine_rank", "rdzv_backend"}
# keys of the Megatron-Core trainer (USE_MCA=1, mcore_adapter's own TrainingArguments)
MEGATRON_KEYS = {
    "tensor_model_parallel_size",
    "pipeline_model_parallel_size",
    "expert_model_parallel_size",
    "context_parallel_size",
    "use_distributed_optimizer",
    "sequence_parallel",
}


@cache
def schema(version: str = LF_VERSION) -> dict:
    return json.loads(data_text(f"llamafactory/schema-{version}.json"))


def keys(version: str = LF_VERSION) -> dict[str, dict]:
    return schema(version)["keys"]


def default(key: str, version: str = LF_VERSION):
    """LLaMA-Factory's default for `key` when the file does not set it (a literal; None otherwise)."""
    value = keys(version)[key]["default"]
    return None if isinstance(value, str) and value.startswith("expr:") else value


def choices(key: str, version: str = LF_VERSION) -> list[str] | None:
    """The values LLaMA-Factory (or transformers, for optim and lr_scheduler_type) accepts for `key`."""
    enums = schema(version)["enums"]
    if key in enums:
        return enums[key]
    return keys(version).get(key, {}).get("choices")


def _close(word: str, candidates) -> str:
    candidates = list(candidates)
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (one of: {', '.join(map(str, candidates))})" if 0 < len(candidates) <= 12 else ""


def refuse_other_formats(data: dict, origin: str) -> None:
    """Files that are not a v0 training file: refused with what they are."""
    found = set(data)
    v1_model = isinstance(data.get("model"), dict | str) and "model_name_or_path" not in data
    if found & V1_KEYS or v1_model:
        raise UsageError(
            f"{origin}: a LLaMA-Factory v1-format file ({', '.join(sorted(found & V1_KEYS)) or 'model'}): "
            "not read here",
            hint="the benchmark reads LLaMA-Factory's v0 training files (model_name_or_path, stage, "
            "finetuning_type, ...), as `llamafactory-cli train` takes them",
        )
    if found & ACCELERATE_KEYS:
        raise UsageError(
            f"{origin}: an accelerate launcher config ({', '.join(sorted(found & ACCELERATE_KEYS))}), "
            "not a LLaMA-Factory training file",
            hint="give the training YAML that `llamafactory-cli train` reads (--gpus N: one process per GPU)",
        )
    if found & MEGATRON_KEYS:
        raise UsageError(
            f"{origin}: a Megatron-Core training file ({', '.join(sorted(found & MEGATRON_KEYS))}): "
            "LLaMA-Factory runs it with USE_MCA=1 through mcore_adapter, which the benchmark does not model",
            hint="tensor/pipeline/expert parallelism is not benchmarked; give a single-GPU or --gpus N file",
        )


def refuse_unknown_keys(data: dict, origin: str, version: str = LF_VERSION) -> None:
    """Every key LLaMA-Factory `version` would refuse, each with the nearest key it knows (exit 2)."""
    known = keys(version)
    unknown = [k for k in data if k not in known]
    if not unknown:
        return
    named = "; ".join(f"{k!r}{_close(str(k), known)}" for k in unknown)
    raise UsageError(
        f"{origin}: not a key of LLaMA-Factory {version}: {named}",
        hint=f"LLaMA-Factory {version} refuses keys its argument classes do not declare "
        "(HfArgumentParser: 'Some keys are not used'); fix the spelling or remove the key",
    )


def refuse_bad_values(data: dict, origin: str, version: str = LF_VERSION) -> None:
    """Values outside the set LLaMA-Factory or transformers take for the key (exit 2, all at once)."""
    problems = []
    for key, value in data.items():
        allowed = choices(key, version)
        if allowed is None or value is None or isinstance(value, bool):
            continue
        text = str(value)
        if text in allowed:
            continue
        if key == "quantization_method" and text.lower() == "bitsandbytes":
            problems.append(
                f"quantization_method bitsandbytes: LLaMA-Factory {version} spells it 'bnb' (since 0.9.3); "
                "given 'bitsandbytes' it matches none of its methods and loads the model unquantized"
            )
            continue
        problems.append(
            f"{key} {text!r} is not one of LLaMA-Factory {version}'s values{_close(text, allowed)}"
        )
    if problems:
        raise UsageError(
            f"{origin}: {'; '.join(problems)}",
            hint="values as LLaMA-Factory spells them, e.g. quantization_method: bnb, optim: adamw_torch",
        )
