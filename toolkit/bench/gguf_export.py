"""The adapter path's first half: merge a trained LoRA adapter into its base, then convert the merged model
to GGUF (f16, q8_0) with llama.cpp's own converter, the way the users do it by hand.

    merged = merge_adapter(adapter, base, out / "merged")      # transformers + PEFT merge_and_unload
    files = convert(merged, llama_cpp, out, ["f16", "q8_0"])   # convert_hf_to_gguf.py --outtype ...

The converter is llama.cpp's `convert_hf_to_gguf.py` from a llama.cpp tree (its `gguf-py` beside it) —
`--llama-cpp DIR`, or the tree scripts/build_llama_server.sh caches. It reads a SentencePiece tokenizer
(`tokenizer.model`, byte fallback) as a Llama vocabulary; a BPE tokenizer it does not recognise is refused
by it, and that refusal is passed on with its own words. Every file is written under a temporary name and
renamed when complete: a stopped run leaves no half-written GGUF.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from toolkit.errors import ToolkitError, UsageError

OUTTYPES = ("f16", "q8_0", "bf16", "f32")
# files a tokenizer may need, copied from the base (or the adapter, which may carry its own) to the merge
TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "generation_config.json",
)
CONVERT_TIMEOUT_S = 3600


class ExportError(ToolkitError):
    """The merge or the conversion failed (exit 1: the check ran and did not pass)."""

    exit_code = 1


def adapter_base(adapter: Path, base: str | None) -> Path:
    """The base model folder: the one named, else the adapter's `base_model_name_or_path` when it is a local
    folder (nothing is downloaded)."""
    config = adapter / "adapter_config.json"
    if not config.is_file():
        raise UsageError(
            f"{adapter} is not a PEFT adapter folder (no adapter_config.json)",
            hint="--adapter takes the folder that save_pretrained() wrote",
        )
    if base is None:
        try:
            base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
        except (OSError, ValueError) as err:
            raise UsageError(f"cannot read {config}: {err}") from None
    if not base or not (Path(base) / "config.json").is_file():
        raise UsageError(
            f"the adapter's base model is not a local folder: {base or '(not named)'}",
            hint="name the base model's folder with --model DIR (nothing is downloaded)",
        )
    return Path(base)


def find_converter(llama_cpp: str | None) -> Path:
    """convert_hf_to_gguf.py in the tree named, else in the tree scripts/build_llama_server.sh caches."""
    candidates = []
    if llama_cpp:
        candidates.append(Path(llama_cpp))
    else:
        cache = Path(os.environ.get("TOOLKIT_TEST_CACHE", "/var/cache/toolkit-tests"))
        candidates += sorted(cache.glob("llama-server-*"), reverse=True)
    for tree in candidates:
        if (tree / "convert_hf_to_gguf.py").is_file():
            return tree / "convert_hf_to_gguf.py"
    raise UsageError(
        "llama.cpp's converter (convert_hf_to_gguf.py) was not found"
        + (f" in {llama_cpp}" if llama_cpp else ""),
        hint="name a llama.cpp source tree with --llama-cpp DIR, or run scripts/build_llama_server.sh",
    )


def merge_adapter(adapter: Path, base: Path, out: Path) -> Path:
    """Merge the adapter into its base (float32 on the CPU) and save it with the tokenizer files."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    for name in TOKENIZER_FILES:
        for source in (adapter / name, base / name):
            if source.is_file():
                shutil.copy2(source, tmp / name)
                break
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def convert(
    merged: Path, converter: Path, out: Path, outtypes: list[str], timeout: float = CONVERT_TIMEOUT_S
):
    """{outtype: GGUF path}, one converter run each; the converter's last lines are the error's words."""
    files = {}
    out.mkdir(parents=True, exist_ok=True)
    for outtype in outtypes:
        target = out / f"{merged.name}-{outtype}.gguf"
        tmp = target.with_name(target.name + ".partial")
        argv = [sys.executable, str(converter), str(merged), "--outtype", outtype, "--outfile", str(tmp)]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            tmp.unlink(missing_ok=True)
            raise ExportError(f"the {outtype} conversion did not finish within {timeout:g} s") from None
        if done.returncode != 0 or not tmp.is_file():
            tmp.unlink(missing_ok=True)
            said = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise ExportError(
                f"llama.cpp's converter failed for {outtype} (exit {done.returncode}): {said}",
                hint="it needs a tokenizer it recognises: a SentencePiece tokenizer.model with byte fallback "
                "converts; for a BPE tokenizer it must know the pre-tokenizer",
            )
        tmp.replace(target)
        files[outtype] = target
    return files
