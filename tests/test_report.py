"""`toolkit report` over results stored by real runs: two nodes (local fleet hosts) benched twice with a
training load (loss curves), and health-swept twice with a BMC each (OpenIPMI's ipmi_sim: temperatures
and PSU power). The HTML is checked as text and as a picture: headless Chromium renders it to a PNG and
tesseract reads the node names and figures back from the pixels."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import ipmi_sim
import pytest
import yaml
from test_fleet_local import local

from conftest import toolkit

NODES = ("alpha", "beta")
BENCH = ("--scale", "tiny", "--threads", "1", "--workloads", "kto_lora", "--set", "kto_lora.measured_steps=4")


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    results = base / "results"
    bmcs = []
    hosts = {}
    try:
        for i, name in enumerate(NODES):
            bmc = ipmi_sim.Bmc(base / f"bmc-{name}", password=f"pw-{name}-secret").start()
            bmcs.append(bmc)
            cfg = base / f"health-{name}.yml"
            cfg.write_text(
                yaml.safe_dump(
                    {
                        "bmc": {"url": f"ipmi://ADMIN@127.0.0.1:{bmc.port}", "password": bmc.password},
                        # the test machine's load is other tests' work, not this fixture's subject
                        "system": {"load_warning_per_cpu": 1000, "load_critical_per_cpu": 2000},
                    }
                )
            )
            cfg.chmod(0o600)
            hosts[name] = local(
                base, health_report_config_path=str(cfg), toolkit_results_dir=str(base / f"n{i}")
            )
        inv = base / "inventory.yml"
        inv.write_text(yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=False))
        for round_ in range(2):
            bench = toolkit("bench", "-i", str(inv), "--results-dir", str(results), *BENCH)
            assert bench.returncode == 0, bench.stderr
            if round_ == 0:
                bmcs[1].set_value("CPU Temp", 88)  # beta runs hot before the second sweep: a WARNING
            health = toolkit(
                "health", "-i", str(inv), "--results-dir", str(results), "--skip", "gpu", "--skip", "docker"
            )
            assert health.returncode in (0, 1), health.stderr
    finally:
        for bmc in bmcs:
            bmc.stop()
    return base, results


@pytest.fixture(scope="module")
def report(stored):
    base, results = stored
    out = base / "fleet.html"
    proc = toolkit("report", "--results-dir", str(results), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"Wrote {out}: 2 node(s), 4 bench run(s), 4 health report(s)" in proc.stderr
    return base, results, out.read_text()


def test_html_is_self_contained(report):
    _, _, text = report
    assert "<script" not in text.lower()
    assert not re.search(r'(src|href)="(https?:)?//', text)
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)"', text)
    # per node: one chart per figure (kto_lora's tokens/s) and the loss; fleet: temperature, power
    assert len(images) >= 2 * 2 + 2
    for data, alt in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n", alt


def test_html_holds_the_nodes_figures_and_health(report, stored):
    from toolkit.bench.report import format_metric
    from toolkit.history import scan

    _, results, text = report
    for node in NODES:
        assert f'id="node-{node}"' in text
    latest = scan(results, kind="bench")[-1].doc
    kto = next(r for r in latest["results"] if r["workload"] == "kto_lora")
    assert format_metric("tokens_per_second", kto["metrics"]["tokens_per_second"]) in text
    assert "Training loss" in text and "What changed since" in text
    # beta's hot CPU: its card's health says warning, and the reading is in the table
    beta = text[text.index('id="card-beta"') :].split("</article>")[0]
    assert '<h4>Health <span class="pill warn">warning</span></h4>' in beta and "CPU Temp" in beta
    assert "bmc.temperature.CPU Temp" in text and "88 °C" in text
    assert "No temperature or power readings" not in text
    assert "pw-alpha-secret" not in text and "pw-beta-secret" not in text


@pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("tesseract")),
    reason="needs chromium and tesseract-ocr (scripts/install.sh --test installs them)",
)
def test_rendered_in_chromium_it_shows_nodes_and_figures(report):
    import numpy as np
    from PIL import Image

    from toolkit.bench.report import format_metric
    from toolkit.history import scan

    base, results, _ = report
    png = base / "report.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-device-scale-factor=2",  # crisp glyphs: OCR reads 14 px text reliably at 2x
            f"--screenshot={png}",
            "--window-size=1200,5200",
            f"file://{base / 'fleet.html'}",
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    image = Image.open(png).convert("RGB")
    assert image.size == (2400, 10400)
    top = base / "top.png"
    image.crop((0, 0, 2400, 4000)).save(top)  # the node cards (the fleet table is at the end)
    ocr = subprocess.run(["tesseract", str(top), "-"], capture_output=True, text=True, timeout=300).stdout
    alpha = [e for e in scan(results, kind="bench") if e.host == "alpha"][-1].doc
    kto = next(r for r in alpha["results"] if r["workload"] == "kto_lora")
    shown = format_metric("tokens_per_second", kto["metrics"]["tokens_per_second"])
    for word in ("toolkit report", "alpha", "beta", "Measured vs expected", shown):
        assert word in ocr, (word, ocr[:3000])
    # the plots were drawn, not broken images: the expectation bars' green is on the page
    pixels = np.asarray(image).astype(int)
    green = int((np.abs(pixels - np.array([0x2E, 0x7D, 0x32])).max(axis=2) < 12).sum())
    assert green > 8000


def test_nothing_to_report_is_a_clear_error(tmp_path):
    empty = toolkit("report", "--results-dir", str(tmp_path))
    assert empty.returncode == 2 and "no stored results" in empty.stderr
    missing = toolkit("report", "--results-dir", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no such folder" in missing.stderr
    assert not list(tmp_path.glob("*.html"))
    (tmp_path / "bench-x.json").write_text(json.dumps({"host": "x"}))
    assert toolkit("report", "--results-dir", str(tmp_path)).returncode == 2
