"""`toolkit report` read the way its reader reads it (issue 20): one card per node with its verdict, the
checked figures as measured-vs-floor bars, the health checks that are not OK; what changed since a real
baseline (an earlier run, never the latest itself) beyond the noise the runs measured; one chart per
figure and the training loss; the fleet table with no row that says pass next to a regression.

Three fixture sets, each from real `toolkit bench` / `toolkit health` runs: a one-node CPU history of
three runs with loss curves; a three-node fleet (the runs stored under three node names) in which one
node fell behind and one moved within the noise it measured; a node whose health report has a failing
check. The page is parsed and its structure asserted; where Chromium is installed each page is rendered
(1400 px light, 1400 px dark, 390 px phone) into the test's folder (copied to $TOOLKIT_TEST_SHOTS if set)."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from conftest import toolkit

BENCH = (
    "--scale",
    "tiny",
    "--threads",
    "1",
    "--workloads",
    "matmul,kto_lora",
    "--set",
    "kto_lora.measured_steps=4",
)
# where a person looking at the pages wants a copy of every screenshot (the test folder always has them)
SHOTS = Path(os.environ["TOOLKIT_TEST_SHOTS"]) if os.environ.get("TOOLKIT_TEST_SHOTS") else None


class Node:
    def __init__(self, tag: str, attrs: dict, parent: Node | None):
        self.tag, self.attrs, self.parent, self.children, self.text = tag, attrs, parent, [], ""

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def all(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        out = []
        for c in self.children:
            if (tag is None or c.tag == tag) and (cls is None or cls in c.classes):
                out.append(c)
            out += c.all(tag, cls)
        return out

    def words(self) -> str:
        return " ".join((self.text + " " + " ".join(c.words() for c in self.children)).split())


class Page(HTMLParser):
    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self, text: str):
        super().__init__()
        self.root = self.at = Node("#root", {}, None)
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.at)
        self.at.children.append(node)
        if tag not in self.VOID:
            self.at = node

    def handle_endtag(self, tag):
        at = self.at
        while at is not self.root and at.tag != tag:
            at = at.parent
        if at is not self.root:
            self.at = at.parent

    def handle_data(self, data):
        self.at.text += data


def _bench(results: Path) -> dict:
    before = set(results.glob("bench-*.json"))
    proc = toolkit("bench", "--results-dir", str(results), *BENCH)
    new = set(results.glob("bench-*.json")) - before
    assert len(new) == 1, proc.stderr
    return json.loads(new.pop().read_text())


def _store(results: Path, doc: dict, host: str, shift: int = 0) -> None:
    """A node's copy of a real run: its host and start time changed, the figures the run measured kept."""
    doc = copy.deepcopy(doc)
    doc["host"] = host
    if shift:
        from datetime import timedelta

        from toolkit.glossary import parse_utc, utc_stamp

        doc["started_at"] = utc_stamp(parse_utc(doc["started_at"]) + timedelta(minutes=shift))
    name = f"bench-{doc['started_at'].replace('-', '').replace(':', '')}-{host}-cpu-{shift}.json"
    (results / name).write_text(json.dumps(doc))


def _without_spread(doc: dict) -> dict:
    """The run with the run-to-run spread it measured for kto_lora taken out: a busy machine measures a
    wide one, and a baseline's own spread widens the noise band every later run is judged against."""
    doc = copy.deepcopy(doc)
    next(r for r in doc["results"] if r["workload"] == "kto_lora").pop("spread", None)
    return doc


def _slower(doc: dict, factor: float, cv: float | None = None) -> dict:
    """The run with kto_lora's throughput times `factor` (its ratio to the floor too), and optionally the
    run-to-run spread that run measured for it."""
    doc = copy.deepcopy(doc)
    kto = next(r for r in doc["results"] if r["workload"] == "kto_lora")
    kto["metrics"]["tokens_per_second"] *= factor
    exp = kto["expected"]["tokens_per_second"]
    exp["ratio"] = round(kto["metrics"]["tokens_per_second"] / exp["min"], 4)
    if cv is not None:
        v = kto["metrics"]["tokens_per_second"]
        kto["spread"] = {"tokens_per_second": {"n": 5, "median": v, "min": v * 0.8, "max": v * 1.2, "cv": cv}}
    return doc


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three real runs of the same node (matmul gives the CPU's peak, so kto_lora has a floor)."""
    base = tmp_path_factory.mktemp("runs")
    return base, [_bench(base) for _ in range(3)]


def _report(results: Path, out: Path, name: str) -> tuple[str, Page]:
    proc = toolkit("report", "--results-dir", str(results), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr.lower(), proc.stderr  # no matplotlib noise
    assert proc.stderr.strip().startswith(f"Wrote {out}"), proc.stderr
    text = out.read_text()
    _screenshots(out, name)
    return text, Page(text)


def _screenshots(page: Path, name: str) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        return
    if SHOTS:
        SHOTS.mkdir(parents=True, exist_ok=True)
    for suffix, size, extra in (
        ("", "1400,2400", []),
        ("-dark", "1400,2400", ["--force-dark-mode", "--blink-settings=preferredColorScheme=0"]),
        ("-phone", "390,2400", []),
    ):
        png = page.with_name(f"{name}{suffix}.png")
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                *extra,
                f"--screenshot={png}",
                f"--window-size={size}",
                f"file://{page}",
            ],
            capture_output=True,
            timeout=120,
            check=True,
        )
        assert png.stat().st_size > 10_000
        if SHOTS:
            shutil.copy(png, SHOTS / png.name)


def _common(text: str, page: Page, nodes: list[str]) -> dict[str, Node]:
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text, re.I)
    assert "<script" not in text.lower() and "@import" not in text and "url(" not in text
    cards = {c.attrs["data-node"]: c for c in page.root.all("article", "card")}
    assert sorted(cards) == sorted(nodes)
    for card in cards.values():
        assert card.all(cls="pill"), card.words()  # the node's state in one word
    # no fleet row says pass (or ok) next to regressions
    for table in page.root.all("table", "fleet"):
        for row in table.all("tr")[1:]:
            cells = [td.words() for td in row.all("td")]
            if "regression" in cells[5]:
                assert "pass" not in cells and "ok" not in cells[:2], cells
    return cards


def _bars(card: Node) -> list[Node]:
    bars = card.all(cls="checked")
    for fig in bars:
        (bar,) = fig.all(cls="bar")
        assert bar.all(cls="fill") and bar.all(cls="floor"), fig.words()
        assert "floor" in fig.words()
    return bars


def test_one_node_history(runs, tmp_path):
    folder, docs = runs
    text, page = _report(folder, tmp_path / "one-node.html", "one-node")
    cards = _common(text, page, [docs[0]["host"]])
    card = cards[docs[0]["host"]]
    latest = docs[-1]
    kto = next(r for r in latest["results"] if r["workload"] == "kto_lora")
    assert "tokens_per_second" in kto["expected"]  # the fixture is what it says
    bars = _bars(card)
    assert [b.attrs["data-metric"] for b in bars] == list(kto["expected"])
    from toolkit.bench.report import format_metric

    m = kto["metrics"]["tokens_per_second"]
    floor = kto["expected"]["tokens_per_second"]["min"]
    assert format_metric("tokens_per_second", m) in bars[0].words()
    assert format_metric("tokens_per_second", floor) in bars[0].words()
    assert f"{kto['expected']['tokens_per_second']['ratio']:.2f}×" in bars[0].words()
    assert latest["verdict"] in card.words()
    # changes since a real baseline: the previous run, not the latest
    (block,) = [b for b in page.root.all(cls="node-block") if b.attrs.get("id", "").startswith("changes-")]
    (baseline,) = block.all(cls="baseline")
    assert baseline.words() == docs[1]["started_at"] != latest["started_at"]
    # one chart per figure over three runs, and the loss curves
    charts = page.root.all("figure", "chart")
    assert any("kto_lora · tokens/s" in c.words() and c.all("img") for c in charts)
    assert any("matmul" in c.words() and c.all("img") for c in charts)
    (loss,) = page.root.all("figure", "loss")
    assert loss.all("img") and "Training loss" in loss.words()


def test_three_node_fleet_with_a_regression(runs, tmp_path):
    _, docs = runs
    results = tmp_path / "results"
    results.mkdir()
    # the same real run twice, a minute apart: only the change made here moves (and no spread of its own,
    # which on a busy machine can be wide enough to swallow a 30 % move)
    first = latest = _without_spread(docs[-1])
    _store(results, first, "alpha")
    _store(results, latest, "alpha", 1)
    _store(results, first, "beta")
    _store(results, _slower(latest, 0.7), "beta", 1)  # 30 % slower, no spread measured: a regression
    _store(results, first, "gamma")
    _store(results, _slower(latest, 0.7, cv=0.2), "gamma", 1)  # 30 % within a measured ±40 %: noise
    text, page = _report(results, tmp_path / "fleet.html", "fleet")
    cards = _common(text, page, ["alpha", "beta", "gamma"])
    assert "regressed" in cards["beta"].all(cls="pill")[0].words()
    assert "1 regression" in cards["beta"].words()
    assert "regressed" not in cards["gamma"].all(cls="pill")[0].words()
    blocks = {
        b.attrs["id"]: b for b in page.root.all(cls="node-block") if "changes-" in b.attrs.get("id", "")
    }
    beta = blocks["changes-beta"]
    rows = [[td.words() for td in tr.all("td")] for tr in beta.all("tr")[1:]]
    assert rows[0][:2] == ["kto_lora", "tokens/s"] and rows[0][-1] == "regression" and rows[0][4] == "-30.0%"
    gamma = blocks["changes-gamma"]
    assert not gamma.all("table") and "within the noise" in gamma.words()
    for b in blocks.values():
        assert b.all(cls="baseline")[0].words() != b.words().split("latest run ")[1].split()[0]
    # the fleet table, worst first, with its sorted copies
    default = page.root.all(cls="default")[0]
    first_row = [td.words() for td in default.all("tr")[1].all("td")]
    assert first_row[:2] == ["beta", "regressed"] and "1 regression" in first_row[5]
    assert {d.attrs["id"] for d in page.root.all(cls="sorted")} == {
        "fleet-by-node",
        "fleet-by-time",
        "fleet-by-health",
    }


def test_a_node_with_a_failing_health_check(runs, tmp_path):
    _, docs = runs
    results = tmp_path / "results"
    results.mkdir()
    _store(results, docs[-1], docs[-1]["host"])
    cfg = tmp_path / "health.yml"
    cfg.write_text(
        yaml.safe_dump({"system": {"disk_warning_percent": 0.001, "disk_critical_percent": 0.002}})
    )
    health = toolkit(
        "health",
        "--config",
        str(cfg),
        "--skip",
        "gpu",
        "--skip",
        "docker",
        "--skip",
        "bmc",
        "--skip",
        "qdrant",
        "--save-dir",
        str(results),
    )
    assert health.returncode == 2, health.stderr  # CRITICAL: the disk is over 0.002 % used
    stored = json.loads(next(results.glob("health-*.json")).read_text())
    failing = [c for c in stored["checks"] if c["status"] != "ok"]
    assert failing and stored["status"] == "critical"
    text, page = _report(results, tmp_path / "health.html", "failing-health")
    cards = _common(text, page, [stored["host"]])
    card = cards[stored["host"]]
    assert card.all(cls="pill")[0].words() == "critical"
    listed = [li.words() for li in card.all("li", "check-not-ok")]
    assert len(listed) == len(failing)
    for c, words in zip(failing, listed, strict=True):
        assert c["name"] in words and c["status"] in words
    assert "No temperature or power readings in the stored health reports" in text
    assert not page.root.all("img", None) or all(
        "temperature" not in i.attrs.get("alt", "") for i in page.root.all("img")
    )
