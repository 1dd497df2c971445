"""The GPU catalog: a data file that covers every class of docs/REFERENCE.md, with sourced figures."""

from __future__ import annotations

import pytest

from toolkit.catalog import FIGURES, load_catalog, parse_catalog
from toolkit.errors import UsageError

REFERENCE_CLASSES = (
    "a40",
    "rtx-a6000",
    "a100-40gb",
    "a100-80gb-pcie",
    "a100-80gb-sxm",
    "h100-sxm",
    "h100-pcie",
    "h200",
    "l40s",
    "l4",
    "a10",
    "a10g",
    "rtx-3090",
    "rtx-4090",
    "t4",
    "v100-sxm2",
    "mi300x",
    "mi250",
    "rx-7900-xtx",
)


def test_every_reference_class_is_in_the_catalog():
    catalog = load_catalog()
    assert set(REFERENCE_CLASSES) <= set(catalog.classes)
    assert catalog.profiles[-1] == "cpu"


@pytest.mark.parametrize(
    ("key", "figure", "value"),
    [
        ("a40", "memory_bandwidth_bytes_per_second", 696e9),
        ("h100-sxm", "bf16_tensor_flops", 989e12),
        ("h100-pcie", "bf16_tensor_flops", 756e12),
        ("h200", "memory_bandwidth_bytes_per_second", 4800e9),
        ("rtx-3090", "bf16_tensor_flops", 71e12),  # FP32 accumulate, not the 142 of FP16 accumulate
        ("rtx-4090", "fp32_flops", 82.6e12),
        ("mi300x", "bf16_tensor_flops", 1307.4e12),
        ("l4", "tdp_watts", 72),
    ],
)
def test_reference_figures(key, figure, value):
    assert load_catalog().classes[key].value(figure) == pytest.approx(value)


def test_every_figure_has_a_source_and_a_verified_flag():
    for cls in load_catalog().classes.values():
        assert set(cls.figures) == set(FIGURES)
        for f in cls.figures.values():
            assert f.source
            assert isinstance(f.verified, bool)


def test_unverified_figures_are_marked_and_unknown_ones_left_empty():
    catalog = load_catalog()
    a10g = catalog.classes["a10g"]
    assert a10g.value("bf16_tensor_flops") is None and a10g.tensor_flops is None
    assert not a10g.figures["memory_bandwidth_bytes_per_second"].verified
    assert not catalog.classes["rx-7900-xtx"].figures["bf16_tensor_flops"].verified


def test_classes_without_bf16_use_fp16():
    catalog = load_catalog()
    assert catalog.classes["t4"].tensor_dtype == "float16"
    assert catalog.classes["t4"].tensor_flops == pytest.approx(65e12)
    assert catalog.classes["a40"].tensor_dtype == "bfloat16"


def test_device_names_map_to_exactly_one_class():
    catalog = load_catalog()
    seen = {}
    for cls in catalog.classes.values():
        assert cls.device_names, f"{cls.key} has no NVML / AMD SMI names"
        for name in cls.device_names:
            assert name.lower() not in seen, f"{name} in {seen.get(name.lower())} and {cls.key}"
            seen[name.lower()] = cls.key
    assert catalog.match_device("NVIDIA H100 80GB HBM3").key == "h100-sxm"
    assert catalog.match_device("nvidia  a40").key == "a40"
    assert catalog.match_device("NVIDIA GeForce GTX 1080") is None


def test_unknown_profile_error_lists_profiles():
    with pytest.raises(UsageError) as err:
        load_catalog().get("a4000")
    assert "a40" in err.value.hint and "cpu" in err.value.hint


def test_a_class_missing_a_figure_is_rejected():
    text = (
        '[classes.x]\nname = "X"\nvendor = "nvidia"\n'
        'memory_bytes = { value = 1, source = "s", verified = true }\n'
    )
    with pytest.raises(ValueError, match="lacks"):
        parse_catalog(text)
