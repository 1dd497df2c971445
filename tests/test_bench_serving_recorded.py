"""Recorded real streaming responses (tests/fixtures/serving/, PROVENANCE.md) through the parsers of
toolkit/bench/serving/api.py: what each reads of tokens, the end of the stream, and the server's counts.

Every line of a recording is fed with `api.feed` and stamped with its line number (0-based) as its arrival
time, so an assertion on `token_chunks` also says which line carried a token. Expected values are read off
the recordings by hand (see the comments), never off the parser.

Recordings kept as the project published them but not as wire bytes are turned into lines here, the way a
server sends them: TGI's snapshots (a JSON list of chunks) become one `data: {...}` line per chunk, Ollama's
pretty-printed documentation examples one compact NDJSON line per object, and the commented JavaScript
example of llama.cpp's README one `data:` line once its `//` comments are dropped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from toolkit.bench.serving.api import Stream, feed
from toolkit.bench.serving.client import Outcome
from toolkit.bench.serving.metrics import figures, level_metrics, output_tokens

FIXTURES = Path(__file__).parent / "fixtures" / "serving"


def recorded_lines(name: str) -> list[bytes]:
    """The file's lines, as a client reads them off the socket (line endings kept)."""
    return (FIXTURES / name).read_bytes().splitlines(keepends=True)


def sse_lines(chunks: list[dict]) -> list[bytes]:
    return [b"data: " + json.dumps(chunk).encode() + b"\n" for chunk in chunks]


def json_objects(name: str) -> list[dict]:
    """The JSON objects of a documentation excerpt, in order (pretty-printed, separated by blank lines)."""
    text, decoder, at, found = (FIXTURES / name).read_text(encoding="utf-8"), json.JSONDecoder(), 0, []
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return found
        value, at = decoder.raw_decode(text, at)
        found.append(value)


def ndjson_lines(objects: list[dict]) -> list[bytes]:
    return [json.dumps(o, separators=(",", ":")).encode() + b"\n" for o in objects]


def read(api: str, lines: list[bytes]) -> Stream:
    stream = Stream()
    for number, raw in enumerate(lines):
        feed(api, stream, raw, float(number))
    return stream


def token_lines(stream: Stream) -> list[int]:
    return [int(t) for t, _ in stream.token_chunks]


def outcome(stream: Stream, end: float) -> Outcome:
    """One request sent at time 0 whose stream ended at `end` (the line count)."""
    return Outcome(index=0, sent=0.0, end=end, stream=stream)


# -- OpenAI's own API, recorded by openai-python (raw SSE bytes) ------------------------------------


def test_openai_chat_stream_with_usage_counts_30_token_chunks_and_reads_usage():
    """gpt-4o, "What's the weather like in SF?": line 0 a role-only chunk (`content: ""`), then 30 chunks
    of one word piece each on lines 2, 4, ..., 60, an empty delta with finish_reason stop (62), a usage-only
    chunk with `choices: []` (64: prompt 14, completion 30) and `data: [DONE]` (66)."""
    lines = recorded_lines("openai-chat-stream-usage.txt")
    assert len(lines) == 68
    stream = read("openai", lines)
    assert token_lines(stream) == list(range(2, 61, 2))
    assert all(n is None for _, n in stream.token_chunks)  # no token ids in chat chunks
    assert stream.chunks == 33  # every data chunk but [DONE]: role-only, 30 text, finish, usage
    assert stream.text_chars == len(
        "I'm unable to provide real-time weather updates. To get the current weather in San Francisco, "
        "I recommend checking a reliable weather website or a weather app."
    )
    assert (stream.finish_reason, stream.ended, stream.done_marker) == ("stop", True, True)
    assert (stream.output_tokens, stream.prompt_tokens, stream.count_source) == (30, 14, "usage")
    assert stream.cached_prompt_tokens is None  # this usage has no prompt_tokens_details
    assert stream.server_error is None and stream.server_prefill_s is None


def test_openai_chat_stream_figures_from_the_recorded_chunk_positions():
    """With each line stamped by its number: TTFT is line 2 (the role-only chunk at 0 does not count),
    TPOT (60 - 2) / (30 - 1) = 2, one token per chunk verified against usage, every gap 2 lines."""
    lines = recorded_lines("openai-chat-stream-usage.txt")
    done = outcome(read("openai", lines), end=float(len(lines)))
    fig = figures(done)
    assert (fig.ttft, fig.tpot, fig.e2e, fig.tokens) == (2.0, 2.0, 68.0, 30)
    assert fig.tokens_per_chunk == 1.0 and fig.one_per_chunk
    assert fig.chunk_gaps == [2.0] * 29
    level = level_metrics([done], None)
    assert level["itl_s"]["n"] == 29 and level["itl_s"]["p50"] == 2.0
    assert level["output_tokens"] == 30


def test_openai_chat_stream_with_logprobs_counts_its_two_tokens():
    """ "Foo" (line 2) and "!" (line 4), each with its logprob; finish stop (6); usage 9 + 2 (8); [DONE]."""
    stream = read("openai", recorded_lines("openai-chat-stream-logprobs.txt"))
    assert token_lines(stream) == [2, 4]
    assert stream.text_chars == len("Foo!")
    assert (stream.output_tokens, stream.prompt_tokens, stream.count_source) == (2, 9, "usage")
    assert (stream.finish_reason, stream.ended, stream.done_marker) == ("stop", True, True)


def test_openai_chat_stream_cut_by_max_tokens_reads_finish_reason_length():
    """max_tokens=1: one token `{"` (line 2), finish_reason length on an empty delta (4), usage 79 + 1."""
    stream = read("openai", recorded_lines("openai-chat-stream-max-tokens.txt"))
    assert token_lines(stream) == [2]
    assert (stream.finish_reason, stream.output_tokens, stream.prompt_tokens) == ("length", 1, 79)
    fig = figures(outcome(stream, 10.0))
    assert (fig.ttft, fig.tpot, fig.tokens) == (2.0, None, 1)  # one token has no TPOT


def test_openai_chat_stream_refusal_text_counts_as_generated_tokens():
    """A refusal: line 0 role chunk (`content: null, refusal: ""`), then " I'm", " sorry", ... "." in
    `delta.refusal` on lines 2..20, finish stop (22), usage 79 + 11 (24), [DONE] (26)."""
    stream = read("openai", recorded_lines("openai-chat-stream-refusal.txt"))
    assert (stream.output_tokens, stream.finish_reason, stream.ended) == (11, "stop", True)  # read right
    assert token_lines(stream) == list(range(2, 21, 2))


def test_openai_chat_stream_tool_call_arguments_count_as_generated_tokens():
    """A tool call: line 0 names the function (`get_weather`, arguments ""), lines 2..14 carry the
    arguments `{"`, `city`, `":"`, `New`, ` York`, ` City`, `"}`; finish tool_calls (16); usage 44 + 16."""
    stream = read("openai", recorded_lines("openai-chat-stream-tool-call.txt"))
    assert (stream.output_tokens, stream.finish_reason) == (16, "tool_calls")  # read right
    assert token_lines(stream)[-7:] == list(range(2, 15, 2))
    assert len(stream.token_chunks) == 8  # the chunk that names the function generated tokens too


# -- Hugging Face TGI, its own integration-test snapshots (chunks as the client parsed them) ---------


def test_tgi_chat_stream_usage_counts_the_eos_token_that_carries_no_text():
    """ "Say 'OK!'": "OK" (chunk 0), "!" (1), an empty content with finish_reason stop (2), a usage-only
    chunk (3): completion 3, prompt 39, `prompt_tokens_details: null`. Every delta repeats role assistant."""
    chunks = json.loads((FIXTURES / "tgi-chat-stream-usage.json").read_text(encoding="utf-8"))
    stream = read("tgi", sse_lines(chunks))
    assert token_lines(stream) == [0, 1]  # the role on a chunk with text does not hide the text
    assert (stream.output_tokens, stream.prompt_tokens, stream.count_source) == (3, 39, "usage")
    assert stream.cached_prompt_tokens is None
    assert (stream.finish_reason, stream.ended, stream.done_marker) == ("stop", True, False)
    fig = figures(outcome(stream, 4.0))
    # 3 counted tokens over 2 text chunks: the server counted the end-of-sequence token
    assert (fig.tokens, fig.tokens_per_chunk, fig.one_per_chunk, fig.tpot) == (3, 1.5, False, 0.5)


def test_tgi_chat_stream_cut_at_length_has_one_token_per_chunk():
    """Ten chunks with text ("**", "Deep", " Learning", ... "\\n\\n"), the tenth with finish_reason length,
    then usage completion 10, prompt 40."""
    chunks = json.loads((FIXTURES / "tgi-chat-stream-usage-length.json").read_text(encoding="utf-8"))
    stream = read("tgi", sse_lines(chunks))
    assert token_lines(stream) == list(range(10))
    assert (stream.finish_reason, stream.output_tokens, stream.prompt_tokens) == ("length", 10, 40)
    fig = figures(outcome(stream, 11.0))
    assert (fig.tpot, fig.tokens_per_chunk, fig.one_per_chunk) == (1.0, 1.0, True)


def test_tgi_completions_stream_reads_text_empty_finish_reason_and_usage_on_the_last_chunk():
    """/v1/completions with four prompts, interleaved by `index`; here prompt 0's ten chunks (a stream of
    one prompt, as the toolkit asks): `text` on each, `finish_reason: ""` until the last, which carries
    " subset", finish_reason length and usage (completion 10, prompt 6) on the same chunk."""
    chunks = json.loads((FIXTURES / "tgi-completions-stream-4-prompts.json").read_text(encoding="utf-8"))
    assert len(chunks) == 40
    first = [c for c in chunks if c["choices"][0]["index"] == 0]
    stream = read("tgi", sse_lines(first))
    assert token_lines(stream) == list(range(10))
    assert stream.text_chars == len(" A Beginner’s Guide\nDeep learning is a subset")
    assert (stream.finish_reason, stream.ended) == ("length", True)  # "" did not end it early
    assert (stream.output_tokens, stream.prompt_tokens, stream.count_source) == (10, 6, "usage")


# -- llama.cpp's server: the timings example of its README (an OpenAI-compatible chunk) --------------


def test_llamacpp_readme_timings_chunk_gives_counts_and_server_times():
    """`choices: []`, no usage, timings: cache_n 236, prompt_n 1, prompt_ms 30.958, predicted_n 35,
    predicted_ms 661.064 (llama.cpp's decode clock spans predicted_n - 1 gaps)."""
    text = (FIXTURES / "llamacpp-readme-chat-timings.txt").read_text(encoding="utf-8")
    kept = [re.sub(r"\s*//.*$", "", line) for line in text.splitlines() if line.strip() != "// ..."]
    stream = read("openai", sse_lines([json.loads("\n".join(kept))]))
    assert stream.token_chunks == [] and stream.chunks == 1
    assert (stream.output_tokens, stream.prompt_tokens, stream.count_source) == (35, 1, "timings")
    assert stream.cached_prompt_tokens == 236
    assert stream.server_prefill_s == pytest.approx(0.030958, rel=1e-12)
    assert stream.server_decode_s == pytest.approx(0.661064, rel=1e-12)
    assert stream.server_decode_tokens == 34
    assert not stream.ended  # a single chunk: no finish_reason, no [DONE]


# -- Ollama: its documentation's streamed examples ---------------------------------------------------


def test_ollama_generate_ndjson_stream_counts_seven_chunks_and_ends_on_done():
    """docs/api/streaming.mdx: "That", "'", "s", " a", " fantastic", " question", "!"; the seventh line
    also says done true, done_reason stop, and no counts."""
    stream = read("ollama", recorded_lines("ollama-generate-stream.ndjson"))
    assert token_lines(stream) == list(range(7))
    assert stream.text_chars == len("That's a fantastic question!")
    assert (stream.finish_reason, stream.ended, stream.chunks) == ("stop", True, 7)
    assert stream.output_tokens is None and stream.count_source is None
    assert output_tokens(outcome(stream, 7.0)) == 7  # no eval_count: the chunks are counted


def test_ollama_generate_final_chunk_reads_eval_count_and_durations():
    """docs/api.md, "Generate request (Streaming)": the first chunk ("The") and the final one (response
    "", done true, no done_reason; eval_count 259, prompt_eval_count 26, durations in ns)."""
    objects = json_objects("ollama-generate-stream-doc.txt")
    assert [o["done"] for o in objects] == [False, True]
    stream = read("ollama", ndjson_lines(objects))
    assert token_lines(stream) == [0]  # the final chunk's empty response is no token
    assert (stream.finish_reason, stream.ended) == ("stop", True)
    assert (stream.output_tokens, stream.prompt_tokens, stream.count_source) == (259, 26, "eval_count")
    assert stream.load_duration_s == pytest.approx(6.338219291, rel=1e-12)
    assert stream.server_prefill_s == pytest.approx(0.130079, rel=1e-12)
    assert stream.server_decode_s == pytest.approx(4.23271, rel=1e-12)
    assert stream.server_decode_tokens == 259


def test_ollama_chat_stream_reads_message_content_and_the_final_counts():
    """docs/api.md, "Chat request (Streaming)": message.content "The", then the final chunk with
    message.content "", eval_count 282, prompt_eval_count 26, load_duration 1334875 ns."""
    stream = read("ollama", ndjson_lines(json_objects("ollama-chat-stream-doc.txt")))
    assert token_lines(stream) == [0]
    assert stream.text_chars == 3
    assert (stream.output_tokens, stream.prompt_tokens, stream.count_source) == (282, 26, "eval_count")
    assert stream.load_duration_s == pytest.approx(0.001334875, rel=1e-12)
    assert stream.server_prefill_s == pytest.approx(0.342546, rel=1e-12)
    assert stream.server_decode_s == pytest.approx(4.535599, rel=1e-12)


def test_every_fixture_is_listed_in_the_provenance():
    provenance = (FIXTURES / "PROVENANCE.md").read_text(encoding="utf-8")
    files = sorted(p.name for p in FIXTURES.iterdir() if p.name != "PROVENANCE.md")
    assert files and all(f"`{name}`" in provenance for name in files)
