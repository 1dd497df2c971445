"""Real llama.cpp peers for the serving tests: the native `llama-server` that scripts/build_llama_server.sh
builds from the llama-cpp-python sdist and caches, started on 127.0.0.1 with a free port, and a tiny Llama
built here — SentencePiece tokenizer trained on this repository's own docs, weights briefly trained on
them, a LoRA adapter trained to answer with one sentence — so that nothing is downloaded.

    binary = llama_server_binary()          # None when not built: the tests skip with a reason
    with LlamaServer(binary, gguf, slots=2) as server: server.url ...
    base, adapter = build_tiny_llama(tmp_path)
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("TOOLKIT_TEST_CACHE", "/var/cache/toolkit-tests"))
VERSION = os.environ.get("TOOLKIT_LLAMA_CPP_PYTHON", "0.3.36")
BUILD_HINT = "scripts/build_llama_server.sh failed or TOOLKIT_NO_LLAMA_BUILD=1 (about 17 minutes on 2 cores)"


def llama_cpp_dir() -> Path:
    return CACHE / f"llama-server-{VERSION}"


def llama_server_binary() -> Path | None:
    """The cached binary; on a machine without it, scripts/build_llama_server.sh builds it once (cached for
    the next runs). None (the tests skip) when the build fails or TOOLKIT_NO_LLAMA_BUILD=1."""
    binary = llama_cpp_dir() / "bin" / "llama-server"
    if not os.access(binary, os.X_OK) and os.environ.get("TOOLKIT_NO_LLAMA_BUILD") != "1":
        subprocess.run([str(ROOT / "scripts" / "build_llama_server.sh")], cwd=ROOT, check=False)
    return binary if os.access(binary, os.X_OK) else None


PYSERVER_HINT = (
    "scripts/build_llama_cpp_python.sh failed or TOOLKIT_NO_LLAMA_BUILD=1 (about 12 minutes on 2 cores)"
)


def llama_cpp_python() -> Path | None:
    """The Python of the cached environment holding llama-cpp-python[server] (its own server, the serving
    tests' "weak server"); built once by scripts/build_llama_cpp_python.sh on a machine without it. None
    (the test skips) when the build fails or TOOLKIT_NO_LLAMA_BUILD=1."""
    python = CACHE / f"llama-cpp-python-{VERSION}" / "venv" / "bin" / "python"
    if not os.access(python, os.X_OK) and os.environ.get("TOOLKIT_NO_LLAMA_BUILD") != "1":
        subprocess.run([str(ROOT / "scripts" / "build_llama_cpp_python.sh")], cwd=ROOT, check=False)
    return python if os.access(python, os.X_OK) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class LlamaServer:
    """`llama-server` on 127.0.0.1:<free port> with N parallel slots, stopped (SIGTERM, then SIGKILL) on exit.
    Its log goes to a file beside the model, quoted when it does not come up."""

    def __init__(self, binary: Path, model: Path, slots: int = 2, ctx: int = 1024, extra: tuple = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(model).with_suffix(f".server-{self.port}.log")
        self.argv = [
            str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port),
            "-np", str(slots), "-c", str(ctx * slots), "-t", "2", "--no-warmup", "--metrics", "--slots",
            *extra,
        ]  # fmt: skip
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> LlamaServer:
        self.process = subprocess.Popen(
            self.argv, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama-server exited {self.process.returncode}: {self.tail()}")
            with contextlib.suppress(OSError, ValueError):
                if get_json(self.url + "/health", 2.0).get("status") == "ok":
                    return
            time.sleep(0.2)
        raise RuntimeError(f"llama-server not healthy within {timeout:g} s: {self.tail()}")

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _corpus() -> list[str]:
    """Sentences from this repository's own documentation: real English and code words, shipped here."""
    lines = []
    for page in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]:
        for line in page.read_text(encoding="utf-8").splitlines():
            line = line.strip(" #|-*>`")
            if len(line) > 20:
                lines.append(line[:400])
    return lines


def train_tokenizer(folder: Path, vocab_size: int = 512) -> Path:
    """A SentencePiece BPE model with byte fallback (the kind llama.cpp's converter reads as a Llama
    vocabulary), trained on the corpus; written as folder/tokenizer.model."""
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=2, minloglevel=2,
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tokenizer.model"
    path.write_bytes(model.getvalue())
    return path


# What the adapter learns to say after any text: the distinct tokens of this sentence, in order, then again
# (each token once, so every next token is decided by the one before it, with a real logit margin).
ADAPTER_ANSWER = "The merged model answers in the voice of its adapter."


def build_tiny_llama(
    folder: Path, steps: int = 100, base_steps: int = 200, seed: int = 0
) -> tuple[Path, Path]:
    """(base folder, adapter folder): a 2-layer Llama (hidden 64) with the tokenizer, briefly trained on the
    corpus (`base_steps`, all weights), and a LoRA adapter trained `steps` steps to continue any corpus
    snippet with the tokens of ADAPTER_ANSWER: its greedy answers differ from the base's.

    Both have learned something, so their greedy choices have real margins. A random base with an adapter
    trained 40 steps on the whole corpus (this fixture before) has none: its logits are near-flat (top
    token ~0.003 probability of 512), its top two within ~0.0006 (tenth percentile) to 0.004 (median)
    logits, and q8_0's rounding, which moves a margin by ~0.002 there, flips its argmax: a correct q8_0
    file looked like a broken one (agreement 0.25-0.69, f16 0.92-1.00). Here the adapter's margins are
    0.7 (least) to 3.9 (median) logits, q8_0 moves them by at most ~0.05, and the base's are mostly 0.1
    to 1."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    base, adapter = folder / "base", folder / "adapter"
    model_file = train_tokenizer(base)
    tokenizer = LlamaTokenizer.from_pretrained(model_file.parent, legacy=False, add_bos_token=True)
    tokenizer.save_pretrained(base)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )  # fmt: skip
    docs = tokenizer(" ".join(_corpus()), return_tensors="pt").input_ids[0]

    def corpus_batch():
        starts = torch.randint(0, len(docs) - 65, (8,), generator=generator)
        batch = torch.stack([docs[s : s + 64] for s in starts])
        return batch, batch

    answer = list(dict.fromkeys(tokenizer(ADAPTER_ANSWER, add_special_tokens=False).input_ids))

    def answer_batch():
        """A corpus snippet (4-39 tokens, not learned) then the answer's tokens, repeated to 64 tokens."""
        rows, labels = [], []
        for _ in range(8):
            cut = int(torch.randint(4, 40, (1,), generator=generator))
            start = int(torch.randint(0, len(docs) - cut, (1,), generator=generator))
            row = torch.cat(
                [docs[start : start + cut], torch.tensor([answer[i % len(answer)] for i in range(64 - cut)])]
            )
            label = row.clone()
            label[:cut] = -100
            rows.append(row)
            labels.append(label)
        return torch.stack(rows), torch.stack(labels)

    def train(model, batches, n: int, lr: float):
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
        model.train()
        for _ in range(n):
            batch, labels = batches()
            model(input_ids=batch, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()

    model = LlamaForCausalLM(config)
    train(model, corpus_batch, base_steps, 3e-3)
    model.save_pretrained(base)
    model = get_peft_model(
        LlamaForCausalLM.from_pretrained(base),
        LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"]),
    )
    train(model, answer_batch, steps, 1e-2)
    model.save_pretrained(adapter)
    config_file = adapter / "adapter_config.json"
    data = json.loads(config_file.read_text())
    data["base_model_name_or_path"] = str(base)
    config_file.write_text(json.dumps(data, indent=2))
    return base, adapter


def build_wide_llama(folder: Path, tokenizer_from: Path, hidden: int = 512, layers: int = 4) -> Path:
    """A q8_0 GGUF of a random-weight Llama of ~14 M parameters (hidden 512, 4 layers) with the tiny
    tokenizer (from the base folder `tokenizer_from`), for the serving sweep, where the server and not the
    Python client must be the bottleneck. The tiny model decodes ~3000-5000 tok/s (~0.2 ms a token): its
    16-token requests last ~5 ms, of the order of the client's own time per request (~1-2 ms), so with one
    slot a second concurrent request filled the server's idle gaps and changed the throughput by -29 % to
    +30 % from run to run; this one decodes ~1500 tok/s, and a second request adds 1-4 %."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from toolkit.bench import gguf_export

    model_dir = folder / "wide"
    vocab = json.loads((tokenizer_from / "config.json").read_text())["vocab_size"]
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
        num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, max_position_embeddings=2048,
        rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(model_dir)
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer_from / name).is_file():
            shutil.copy2(tokenizer_from / name, model_dir / name)
    converter = gguf_export.find_converter(None)
    return gguf_export.convert(model_dir, converter, folder, ["q8_0"])["q8_0"]
