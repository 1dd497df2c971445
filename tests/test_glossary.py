"""The shared vocabulary: every status word any part of toolkit prints has one tone, the verdict follows
its rules, and timestamps have one spelling. The words are read from where the parts define them, so a
new status added anywhere without a tone fails here."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from toolkit import glossary
from toolkit.console import TONE_STYLE, style_of
from toolkit.glossary import LoadStatus, Status, Tone, Verdict
from toolkit.report.html import status_class

FLEET = Path(__file__).resolve().parent.parent / "toolkit" / "fleet"


def _fleet_states() -> set[str]:
    """Every literal `state="..."` the fleet code gives a host."""
    states = set()
    for path in FLEET.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "state" and isinstance(node.value, ast.Constant):
                states.add(node.value.value)
    return states


WORDS = sorted(
    {*LoadStatus, *Verdict, *(s.label for s in Status), *_fleet_states(), "failed"}
    | {"regression", "improvement", "unchanged"}
)


def test_the_fleet_states_were_found():
    assert {"unreachable", "not_started", "interrupted", "error"} <= _fleet_states()


@pytest.mark.parametrize("word", WORDS)
def test_every_status_word_has_one_tone_a_style_and_a_class(word):
    tone = glossary.tone_of(word)
    assert tone in Tone, word
    assert style_of(word) == TONE_STYLE[tone]
    bad = tone in (Tone.BAD, Tone.SEVERE)
    assert (status_class(word) == "bad") == bad


def test_unknown_words_have_no_tone():
    assert (
        glossary.tone_of("frobnicated") is None and style_of("frobnicated") == "" and status_class(None) == ""
    )


@pytest.mark.parametrize(
    ("statuses", "interrupted", "verdict", "code"),
    [
        ([], False, "error", 1),
        (["skipped", "skipped"], False, "pass", 0),
        (["pass", "warn", "skipped"], False, "warn", 0),
        (["pass", "fail", "warn"], False, "fail", 1),
        (["fail", "error"], False, "error", 1),
        (["pass"], True, "interrupted", 130),
    ],
)
def test_verdict_and_exit_code(statuses, interrupted, verdict, code):
    got = glossary.verdict_of(statuses, interrupted)
    assert got == verdict and glossary.verdict_exit_code(got) == code


def test_a_bench_node_in_a_fleet_is_ok_only_when_its_run_passed_or_warned():
    assert [glossary.host_state_of_verdict(v) for v in ("pass", "warn", "fail", "error")] == [
        "ok",
        "ok",
        "failed",
        "failed",
    ]


def test_health_labels_are_the_nagios_codes():
    assert [glossary.health_label(c) for c in (0, 1, 2, 3, 4, 130)] == [
        "ok",
        "warning",
        "critical",
        "unknown",
        None,
        None,
    ]


def test_one_timestamp_spelling_round_trips():
    stamp = glossary.utc_now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp)
    moment = datetime(2026, 12, 3, 15, 21, 12, 999, tzinfo=UTC)
    assert glossary.utc_stamp(moment) == "2026-12-03T15:21:12Z"
    assert glossary.parse_utc("2026-12-03T15:21:12Z") == moment.replace(microsecond=0)


def test_the_class_section_is_read_from_new_and_old_documents():
    section = {"name": "a40"}
    assert glossary.gpu_class_of({"gpu_class": section}) == section
    assert glossary.gpu_class_of({"profile": section}) == section
    assert glossary.gpu_class_of({"profile": "a40"}) == {} and glossary.gpu_class_of({}) == {}
