"""Seeded reference losses (torchtune's regression pattern): three shipped recipes — SFT, DPO and KTO,
one per TRL trainer the bench drives — trained at the tiny scale on the CPU with seed 0 and one thread
must reproduce the per-step losses recorded below, within a tolerance.

The loss of a step depends on everything in the path: the synthetic tokenizer and data, the model
built from the architecture at the scale's shape, the recipe's hyper-parameters, the LoRA layout, the
trainer's loss and the seed. A change to any of them moves these numbers (a 100x learning rate moves
the SFT losses by 2e-3 to 6e-3, ten times the tolerance); a refactor that changes none of them does
not. When a change is meant to move them, record the new values here and say why in the commit.

Recorded 2026-12-03 on an x86_64 Intel Xeon (2 cores), torch 2.13.0+cpu, by
`toolkit bench --scale tiny --threads 1 --seed 0 --recipe sft-smollm2-cpu --recipe dpo-lora
--recipe kto-lora-cpu --json -` (warm-up step first, then the measured steps).
"""

from __future__ import annotations

import json

import pytest

from conftest import toolkit

REFERENCE = {
    "train:sft-smollm2-cpu": [6.237429, 6.246821, 6.250574, 6.267171],
    "train:dpo-lora": [0.693147, 0.693159, 0.693148, 0.693138],
    "train:kto-lora-cpu": [0.5, 0.499991, 0.499988, 0.500006],
}
# Same machine kind and torch build as the recording; the BLAS kernels of another x86_64 CPU may round
# differently in the last digits, far below this.
TOLERANCE = 2e-4


@pytest.fixture(scope="module")
def losses(tmp_path_factory):
    recipes = [a for name in REFERENCE for a in ("--recipe", name.removeprefix("train:"))]
    proc = toolkit(
        *("bench", "--scale", "tiny", "--threads", "1", "--seed", "0", *recipes),
        *("--json", "-", "--results-dir", str(tmp_path_factory.mktemp("reference-losses"))),
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    return {
        r["workload"]: r["warmup"].get("loss_per_step", []) + r["metrics"].get("loss_per_step", [])
        for r in doc["results"]
        if r["workload"].startswith("train:")
    }


@pytest.mark.slow
@pytest.mark.parametrize("workload", list(REFERENCE))
def test_seeded_losses_match_the_recorded_ones(losses, workload):
    expected = REFERENCE[workload]
    got = losses[workload]
    assert len(got) == len(expected), got
    assert got == pytest.approx(expected, abs=TOLERANCE), f"{workload}: {got} vs recorded {expected}"
