"""`toolkit bench --adapter DIR`: the before/after check the users do by eye after fine-tuning — merge the
adapter, convert it to GGUF (f16, q8_0), serve each file with llama.cpp's `llama-server` on loopback, and
compare its greedy answers with the unmerged adapter's (transformers + PEFT) over N prompts, token by token,
next to the served decode and prefill throughput.

Definitions (docs/SERVING.md, "The adapter path"):
- both sides get the same prompt token ids (the Hugging Face tokenizer's, BOS included), greedy decoding
  (top-k 1), exactly T new tokens (`ignore_eos`); the served tokenizer is checked against it on the same text;
- a prompt's agreement is the share of the T tokens generated before the first difference (greedy
  decoding never recovers from one), the file's token agreement their mean; `identical` counts prompts
  whose T tokens all match;
- `base_agreement` is the same measure against the base model without the adapter: a merge that was lost
  (the served file answers like the base) shows as base agreement above adapter agreement;
- floors: f16 0.90, q8_0 0.75, other types 0.50 — below its floor a file fails (exit 1). f16 rounding rarely
  flips a greedy choice; 8-bit weights more often, on near-ties;
- `difference_margins`: at each prompt's first difference, the adapter's margin there (its top logit minus
  the runner-up, from the reference run), next to `reference_margin_median` over all its choices: a
  difference at a margin of a few hundredths of a logit or less is a near-tie that 8-bit rounding flips (it
  moves a margin by ~0.002-0.05), one at a margin like the median is a file that computes something else.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from toolkit.bench.gguf_export import ExportError, adapter_base, convert, find_converter, merge_adapter
from toolkit.errors import UsageError

FLOORS = {"f16": 0.90, "q8_0": 0.75}
OTHER_FLOOR = 0.50
PROMPTS = (
    "The server answers requests from",
    "To install the toolkit on a fresh machine,",
    "A GPU node is healthy when",
    "Fine-tuning a model with a LoRA adapter",
    "The benchmark measures the time to first token",
    "Provisioning a host starts with",
    "When the disk is almost full,",
    "The report shows every node of the fleet",
    "Quantised weights take less memory, but",
    "The health check reads the temperature of",
    "Each request streams its tokens back",
    "A merged model should answer like",
)


@dataclass(frozen=True)
class AdapterCheck:
    adapter: Path
    base: str | None  # --model; else the adapter's base_model_name_or_path
    llama_cpp: str | None  # a llama.cpp tree: its converter and its llama-server
    outtypes: tuple[str, ...] = ("f16", "q8_0")
    prompts: int = 8
    tokens: int = 32
    out: Path | None = None  # where the merge and the GGUF files go; default DIR-gguf beside the adapter
    json_path: str | None = None


def find_server(llama_cpp: str | None) -> Path:
    trees = [Path(llama_cpp)] if llama_cpp else []
    for tree in trees:
        for candidate in (tree / "bin" / "llama-server", tree / "build" / "bin" / "llama-server"):
            if os.access(candidate, os.X_OK):
                return candidate
    on_path = None if llama_cpp else shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    if not llama_cpp:
        cache = Path(os.environ.get("TOOLKIT_TEST_CACHE", "/var/cache/toolkit-tests"))
        for tree in sorted(cache.glob("llama-server-*"), reverse=True):
            if os.access(tree / "bin" / "llama-server", os.X_OK):
                return tree / "bin" / "llama-server"
    raise UsageError(
        "llama.cpp's llama-server was not found" + (f" in {llama_cpp}" if llama_cpp else ""),
        hint="name a llama.cpp tree (with bin/ or build/bin/llama-server) with --llama-cpp DIR, put "
        "llama-server on PATH, or run scripts/build_llama_server.sh",
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict, timeout: float) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read(16 * 2**20))


class Served:
    """One GGUF file served by llama-server on 127.0.0.1 (one slot), stopped on exit; its log is kept
    beside the file and quoted when it does not come up."""

    def __init__(self, server: Path, gguf: Path, ctx: int):
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.log = gguf.with_suffix(".server.log")
        port = self.url.rsplit(":", 1)[1]
        self.argv = [str(server), "-m", str(gguf), "--host", "127.0.0.1", "--port", port, "-np", "1",
                     "-c", str(ctx), "--no-warmup"]  # fmt: skip
        self.process = None

    def __enter__(self) -> Served:
        self.process = subprocess.Popen(
            self.argv, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ExportError(f"llama-server exited {self.process.returncode}: {self._tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if json.loads(response.read()).get("status") == "ok":
                        return self
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        self.__exit__()
        raise ExportError(f"llama-server did not become healthy within 300 s: {self._tail()}")

    def _tail(self) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-3:])
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

    def greedy(self, ids: list[int], tokens: int) -> tuple[list[int], dict]:
        body = {"prompt": ids, "n_predict": tokens, "top_k": 1, "temperature": 0.0, "ignore_eos": True,
                "cache_prompt": False, "return_tokens": True, "stream": False}  # fmt: skip
        answer = _post(self.url + "/completion", body, timeout=600)
        return [int(t) for t in answer.get("tokens") or []], answer.get("timings") or {}

    def tokenize(self, text: str) -> list[int]:
        return [
            int(t)
            for t in _post(self.url + "/tokenize", {"content": text, "add_special": True}, 60)["tokens"]
        ]


def hf_greedy(
    model, prompts: list[list[int]], tokens: int, margins: list[list[float]] | None = None
) -> list[list[int]]:
    """Greedy continuation of each prompt, exactly `tokens` new tokens (no stop at EOS), with the KV cache.
    With `margins`, each prompt's list of top-logit-minus-runner-up at every choice is appended to it."""
    import torch

    answers = []
    with torch.inference_mode():
        for ids in prompts:
            out = model(input_ids=torch.tensor([ids]), use_cache=True)
            new, gaps = [], []
            for _ in range(tokens):
                logits = out.logits[0, -1]
                token = int(logits.argmax())
                new.append(token)
                top = logits.float().topk(2).values
                gaps.append(round(float(top[0] - top[1]), 5))
                out = model(
                    input_ids=torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True
                )
            answers.append(new)
            if margins is not None:
                margins.append(gaps)
    return answers


def agreement(reference: list[list[int]], served: list[list[int]], tokens: int) -> dict:
    shares, identical, first = [], 0, []
    for ref, got in zip(reference, served, strict=True):
        same = next(
            (i for i, (a, b) in enumerate(zip(ref, got, strict=False)) if a != b), min(len(ref), len(got))
        )
        shares.append(same / tokens)
        identical += same == tokens and len(got) == tokens
        first.append(same if same < tokens else None)
    return {"token_agreement": round(sum(shares) / len(shares), 4), "identical": identical,
            "prompts": len(shares), "first_difference": first}  # fmt: skip


def _throughput(timings: list[dict]) -> dict:
    def median(key):
        values = sorted(t[key] for t in timings if isinstance(t.get(key), int | float))
        return round(values[len(values) // 2], 2) if values else None

    return {"decode_tps_median": median("predicted_per_second"),
            "prefill_tps_median": median("prompt_per_second"), "source": "llama-server timings"}  # fmt: skip


def _reference(check: AdapterCheck, base: Path):
    """(prompt ids, adapter answers, base answers, prompt texts, the adapter's margins at each choice) from
    transformers + PEFT, unmerged."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    texts = [
        PROMPTS[i % len(PROMPTS)] + ("" if i < len(PROMPTS) else f" ({i})") for i in range(check.prompts)
    ]
    ids = [tokenizer(t).input_ids for t in texts]
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), check.adapter
    )
    model.eval()
    margins: list[list[float]] = []
    adapter_answers = hf_greedy(model, ids, check.tokens, margins)
    with model.disable_adapter():
        base_answers = hf_greedy(model, ids, check.tokens)
    return ids, adapter_answers, base_answers, texts, margins


def _serve_and_compare(server: Path, gguf: Path, outtype: str, ref) -> dict:
    ids, adapter_answers, base_answers, texts, margins = ref
    tokens = len(adapter_answers[0])
    with Served(server, gguf, ctx=max(len(i) for i in ids) + tokens + 16) as served:
        tokenizer_same = all(served.tokenize(t) == i for t, i in zip(texts, ids, strict=True))
        answers, timings = [], []
        for prompt in ids:
            got, timing = served.greedy(prompt, tokens)
            answers.append(got)
            timings.append(timing)
    result = {"file": str(gguf), "bytes": gguf.stat().st_size, "tokenizer_matches": tokenizer_same,
              **agreement(adapter_answers, answers, tokens),
              "base_agreement": agreement(base_answers, answers, tokens)["token_agreement"],
              "throughput": _throughput(timings), "floor": FLOORS.get(outtype, OTHER_FLOOR)}  # fmt: skip
    every = sorted(m for row in margins for m in row)
    result["reference_margin_median"] = every[len(every) // 2] if every else None
    result["difference_margins"] = [
        None if at is None else row[at] for at, row in zip(result["first_difference"], margins, strict=True)
    ]
    short = [len(a) for a in answers if len(a) != tokens]
    failures, warnings = [], []
    if result["token_agreement"] < result["floor"]:
        parted = ", ".join(
            f"{m:.3g}" for m in sorted(m for m in result["difference_margins"] if m is not None)
        )
        failures.append(
            f"token agreement {result['token_agreement']:.2f} below its floor {result['floor']:.2f}; where "
            f"the answers part the adapter's top two logits were {parted} apart "
            f"(median over all its choices {result['reference_margin_median']:.3g}; a few hundredths or less "
            "is a near-tie that rounding flips)"
        )
    if short:
        failures.append(f"{len(short)} answer(s) not {tokens} tokens long")
    if result["base_agreement"] > result["token_agreement"]:
        failures.append("answers more like the base model than the adapter: was the adapter merged?")
    if not tokenizer_same:
        warnings.append("the served tokenizer splits the prompt texts differently from the Hugging Face one")
    result["status"] = "fail" if failures else "warn" if warnings else "pass"
    reasons = failures + warnings
    result["reasons"] = reasons
    return result


def run(check: AdapterCheck, say=print) -> dict:
    """The whole path; returns the document (also written to check.json_path). Usage problems are
    found before anything heavy runs."""
    base = adapter_base(check.adapter, check.base)
    for outtype in check.outtypes:
        if outtype not in ("f16", "q8_0", "bf16", "f32"):
            raise UsageError(f"--gguf: unknown type {outtype!r}", hint="choose from f16, q8_0, bf16, f32")
    converter, server = find_converter(check.llama_cpp), find_server(check.llama_cpp)
    out = check.out or check.adapter.with_name(check.adapter.name + "-gguf")
    out.mkdir(parents=True, exist_ok=True)
    doc = {"kind": "adapter_check", "adapter": str(check.adapter), "base": str(base),
           "prompts": check.prompts, "tokens": check.tokens, "server": str(server), "files": {},
           "status": "error"}  # fmt: skip
    started = time.monotonic()
    say(f"merging {check.adapter} into {base}")
    merged = merge_adapter(check.adapter, base, out / "merged")
    say(f"converting to {', '.join(check.outtypes)} with {converter}")
    files = convert(merged, converter, out, list(check.outtypes))
    say(f"greedy answers of the unmerged adapter, {check.prompts} prompts x {check.tokens} tokens")
    ref = _reference(check, base)
    for outtype, gguf in files.items():
        say(f"serving {gguf.name} with llama-server")
        doc["files"][outtype] = _serve_and_compare(server, gguf, outtype, ref)
        _save(doc, check.json_path)
    statuses = [f["status"] for f in doc["files"].values()]
    doc["status"] = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"
    doc["duration_s"] = round(time.monotonic() - started, 1)
    _save(doc, check.json_path)
    return doc


def _save(doc: dict, path: str | None) -> None:
    if path and path != "-":
        from toolkit.atomic import write_text_atomic

        write_text_atomic(path, json.dumps(doc, indent=2) + "\n")


def add_arguments(parser) -> None:
    group = parser.add_argument_group('the adapter path (docs/SERVING.md, "The adapter path")')
    group.add_argument(
        "--adapter",
        metavar="DIR",
        help="merge this PEFT LoRA adapter into its base (--model DIR, else the adapter's own base folder), "
        "convert it to GGUF, serve each file with llama-server on loopback and compare its greedy answers "
        "with the unmerged adapter's (token agreement), next to the served throughput",
    )
    group.add_argument(
        "--gguf", default="f16,q8_0", metavar="TYPES", help="with --adapter: GGUF types (default f16,q8_0)"
    )
    group.add_argument(
        "--llama-cpp",
        metavar="DIR",
        help="with --adapter: a llama.cpp tree with convert_hf_to_gguf.py and bin/ or build/bin/llama-server "
        "(default: llama-server on PATH and the tree scripts/build_llama_server.sh caches)",
    )
    group.add_argument(
        "--adapter-prompts",
        type=int,
        default=8,
        metavar="N",
        help="with --adapter: prompts compared (default 8)",
    )


def run_command(args) -> int:
    """`toolkit bench --adapter DIR`: 0 every file at or above its floor, 1 one below (or the merge or the
    conversion failed), 2 usage. Tokens per answer: --output-tokens."""
    from toolkit.console import err, out

    tokens = getattr(args, "output_tokens", None) or 32
    if args.adapter_prompts < 1 or tokens < 1:
        raise UsageError("--adapter-prompts and --output-tokens must be at least 1")
    check = AdapterCheck(
        adapter=Path(args.adapter),
        base=args.model,
        llama_cpp=args.llama_cpp,
        outtypes=tuple(t.strip() for t in args.gguf.split(",") if t.strip()),
        prompts=args.adapter_prompts,
        tokens=tokens,
        json_path=args.json,
    )
    doc = run(check, say=lambda line: err.print(line, soft_wrap=True))
    for outtype, f in doc["files"].items():
        tps = f["throughput"]
        out.print(
            f"{outtype:5} {f['status']:4}  token agreement {f['token_agreement']:.2f} "
            f"(floor {f['floor']:.2f}, "
            f"{f['identical']}/{f['prompts']} identical, base {f['base_agreement']:.2f})  "
            f"decode {tps['decode_tps_median']} tok/s, prefill {tps['prefill_tps_median']} tok/s  "
            f"{f['bytes'] / 2**20:.1f} MiB",
            soft_wrap=True,
        )
        for reason in f["reasons"]:
            out.print(f"      {reason}", soft_wrap=True)
    if args.json == "-":
        print(json.dumps(doc, indent=2))
    return 1 if doc["status"] == "fail" else 0
