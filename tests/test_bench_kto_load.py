"""The kto_lora load is the shipped `kto-lora-cpu` recipe resized by the scale: its hyper-parameters come
from that YAML file (a change to the file reaches the load), its sizes from the scale, and `--set` on
either side wins for one run."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from toolkit.bench import recipes
from toolkit.bench.settings import load_settings, override
from toolkit.bench.workloads.kto_lora import RECIPE, recipe_for_scale
from toolkit.errors import UsageError
from toolkit.resources import data_text

HYPER = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target", "pref_beta", "pref_loss", "learning_rate")
HYPER += ("lr_scheduler_type", "max_grad_norm", "gradient_accumulation_steps", "optim", "stage")


@pytest.mark.parametrize("scale", ["tiny", "small", "full"])
def test_the_load_takes_the_recipe_files_hyper_parameters_and_the_scales_sizes(scale):
    s = load_settings().scales[scale].kto_lora
    load = recipe_for_scale(s, "float32")
    shipped = recipes.shipped()[RECIPE]
    assert {k: getattr(load, k) for k in HYPER} == {k: getattr(shipped, k) for k in HYPER}
    raw = yaml.safe_load(data_text(f"recipes/{RECIPE}.yaml"))
    assert (load.lora_rank, load.pref_beta, load.pref_loss) == (
        raw["lora_rank"],
        raw["pref_beta"],
        raw["pref_loss"],
    )
    assert (load.model, load.max_length, load.batch_size) == (s.model, s.max_length, s.batch_size)
    assert (load.warmup_steps, load.measured_steps) == (s.warmup_steps, s.measured_steps)
    assert load.activation_checkpointing == s.activation_checkpointing and load.precision == "fp32"


def test_an_edited_recipe_file_reaches_the_load(monkeypatch):
    edited = dataclasses.replace(recipes.shipped()[RECIPE], lora_rank=64, pref_beta=0.2)
    monkeypatch.setattr(recipes, "shipped", lambda: {RECIPE: edited})
    load = recipe_for_scale(load_settings().scales["tiny"].kto_lora, "bfloat16")
    assert (load.lora_rank, load.pref_beta, load.precision) == (64, 0.2, "bf16")


def test_set_overrides_the_recipe_for_one_run():
    scale = override(
        load_settings().scales["tiny"],
        ["kto_lora.lora_target=q_proj,v_proj", "kto_lora.pref_loss=kto", "kto_lora.lora_rank=4"],
    )
    load = recipe_for_scale(scale.kto_lora, "float32")
    assert (load.lora_target, load.pref_loss, load.lora_rank) == (("q_proj", "v_proj"), "kto", 4)


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("kto_lora.lora_target=bogus", "lora_target bogus is not a linear module"),
        ("kto_lora.pref_loss=hinge", "unsupported KTO loss 'hinge'"),
        ("kto_lora.lora_rank=0", "kto_lora.lora_rank must be at least 1"),
    ],
)
def test_a_bad_override_is_refused_before_anything_runs(assignment, message):
    with pytest.raises(UsageError, match=message):
        override(load_settings().scales["tiny"], [assignment])
