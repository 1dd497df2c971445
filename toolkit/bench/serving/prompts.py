"""What the requests ask: seeded synthetic prompts of a controlled length, or the user's own file.

Every prompt of a run is different, and the synthetic ones start with a nonce drawn for the run, so no
prompt (and no prefix) is served from a prompt cache: not from an earlier request of the run, and not from
an earlier run (a run that reused prompts measured 86 % prompt-cache hits, not the model).

Synthetic lengths are counted in words, about one token each for common English words with a
SentencePiece or BPE tokenizer; the server's own prompt token count is what the result reports.

A user's file: JSON Lines (`{"prompt": ...}` or `{"text": ...}` per line) or a ShareGPT JSON list
(`[{"conversations": [{"from": "human", "value": ...}, ...]}, ...]`, the first human turn is used).
"""

from __future__ import annotations

import json
import os
import random

from toolkit.errors import UsageError

PROMPTS_CAP = 256 << 20
_WORD_TEXT = """
the of and to in is was for on that with as by at from his her are this be an which or had not were
but have one they all their there been has more when who will would about up out them into its time
only new some could these two may first then do any like my now over such our man me even most made
after also did many before must through back years where much your way well down should because each
just those people how too little state good very make world still own see men work long get here
between both life being under never day same another know while last might us great old year off
come since against go came right used take three water river mountain garden window summer market
letter music engine harbor village forest winter station bridge kitchen island morning
"""
WORDS = tuple(_WORD_TEXT.split())


def synthetic(count: int, words: int, seed: int) -> list[str]:
    """`count` different prompts of `words` words each, seeded; the run's nonce leads every prompt."""
    rng = random.Random(seed)
    nonce = os.urandom(4).hex()
    prompts = []
    for i in range(count):
        body = " ".join(rng.choice(WORDS) for _ in range(max(1, words - 3)))
        prompts.append(f"{nonce} request {i}: {body}")
    return prompts


def _from_entry(entry) -> str | None:
    if isinstance(entry, str):
        return entry
    if not isinstance(entry, dict):
        return None
    for key in ("prompt", "text"):
        if isinstance(entry.get(key), str):
            return entry[key]
    turns = entry.get("conversations") or entry.get("messages") or []
    for turn in turns if isinstance(turns, list) else []:
        if isinstance(turn, dict) and turn.get("from", turn.get("role")) in ("human", "user"):
            value = turn.get("value", turn.get("content"))
            return value if isinstance(value, str) else None
    return None


def _entries(text: str, path: str) -> list:
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except ValueError as err:
            raise UsageError(f"--prompts {path} is not valid JSON: {err}") from None
        return data if isinstance(data, list) else []
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except ValueError:
            raise UsageError(
                f"--prompts {path} line {number} is not JSON",
                hint='one JSON object per line, e.g. {"prompt": "..."}, or a ShareGPT JSON list',
            ) from None
    return entries


def from_file(path: str, needed: int) -> list[str]:
    """The file's prompts, each once, in order; at least `needed` different ones or a usage error."""
    from toolkit.inputs import read_text

    text = read_text(path, "the prompts file", cap=PROMPTS_CAP)
    prompts, seen = [], set()
    for entry in _entries(text, path):
        prompt = _from_entry(entry)
        if prompt and prompt.strip() and prompt not in seen:
            seen.add(prompt)
            prompts.append(prompt)
    if len(prompts) < needed:
        raise UsageError(
            f"--prompts {path} holds {len(prompts)} different prompts; this run needs {needed} "
            "(a prompt is never sent twice: a repeated prompt would be served from the prompt cache)",
            hint="add prompts, or lower --requests / --concurrency",
        )
    return prompts
