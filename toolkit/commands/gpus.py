"""`toolkit gpus`: the GPU catalog as a table or JSON, with this machine's device marked."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the catalog as JSON")


def run(args: argparse.Namespace) -> int:
    from toolkit.catalog import load_catalog
    from toolkit.detect import detect

    catalog = load_catalog()
    found = detect()
    matched = {c.key for d in found.devices if (c := catalog.match_device(d.name))}
    if args.json:
        doc = {
            "classes": [c.as_dict() for c in catalog.classes.values()],
            "cpu": catalog.cpu,
            "detected": found.as_dict() | {"classes": sorted(matched)},
        }
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0

    from rich.table import Table

    from toolkit.console import out
    from toolkit.units import gib, si

    def cell(cls, figure, fmt):
        f = cls.figures[figure]
        if f.value is None:
            return "[dim]unknown[/]"
        text = fmt(f.value)
        return text if f.verified else f"{text} [yellow]?[/]"

    table = Table(title="GPU catalog (dense peaks; ? = not backed by a vendor datasheet)")
    # the class id is what users type after --gpu: never cut, however narrow the terminal (the other
    # columns wrap instead)
    longest = max(len(k) for k in [*catalog.classes, "class"])
    table.add_column("class", justify="left", no_wrap=True, min_width=longest)
    for col in ("name", "memory", "bandwidth", "FP32", "BF16 tensor", "FP16 tensor", "TDP"):
        table.add_column(col, justify="left" if col == "name" else "right", overflow="fold")
    for cls in catalog.classes.values():
        mark = " [green]◀ this machine[/]" if cls.key in matched else ""
        table.add_row(
            cls.key,
            cls.name + mark,
            cell(cls, "memory_bytes", gib),
            cell(cls, "memory_bandwidth_bytes_per_second", lambda v: si(v, "B/s")),
            cell(cls, "fp32_flops", lambda v: si(v, "FLOP/s")),
            cell(cls, "bf16_tensor_flops", lambda v: si(v, "FLOP/s")),
            cell(cls, "fp16_tensor_flops", lambda v: si(v, "FLOP/s")),
            cell(cls, "tdp_watts", lambda v: f"{v:.0f} W"),
        )
    table.add_row(
        "cpu",
        "CPU (no GPU)" + (" [green]◀ this machine[/]" if not found.devices else ""),
        "[dim]system RAM[/]",
        "[dim]measured[/]",
        "[dim]measured[/]",
        "-",
        "-",
        "-",
    )
    out.print(table)
    out.print(f"This machine: {found.summary}")
    return 0
