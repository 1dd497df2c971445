"""`toolkit bench --list`: the shipped training recipes and the architectures they build."""

from __future__ import annotations

from toolkit.errors import EXIT_OK


def _billions(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.0f} M"


def render_list() -> int:
    from rich.table import Table

    from toolkit.bench import architectures, flops, recipes
    from toolkit.console import out

    table = Table(title="Training recipes (toolkit bench --recipe NAME)", title_justify="left")
    for col in ("recipe", "stage", "method", "architecture", "seq", "batch", "written for", "what"):
        table.add_column(col)
    for r in recipes.shipped().values():
        s = r.summary()
        table.add_row(
            r.name,
            r.stage,
            s["finetuning"] + (f", {s['quantization']}" if s["quantization"] else "") + f", {r.precision}",
            f"{r.architecture} ({_billions(s['parameters'])})",
            str(r.max_length),
            s["batch"],
            r.profile or "",
            r.description,
        )
    out.print(table)
    arch = Table(title="Architectures (synthetic weights; --arch NAME)", title_justify="left")
    for col in (
        "architecture",
        "type",
        "parameters",
        "layers",
        "hidden",
        "heads (kv)",
        "vocabulary",
        "stands for",
    ):
        arch.add_column(col)
    for a in architectures.shipped().values():
        shape = a.shape
        arch.add_row(
            a.name,
            a.model_type,
            _billions(flops.total_params(shape)),
            str(shape.num_hidden_layers),
            str(shape.hidden_size),
            f"{shape.num_attention_heads} ({shape.num_key_value_heads})",
            str(shape.vocab_size),
            ", ".join(a.hf_ids),
        )
    out.print(arch)
    out.print(
        "A LLaMA-Factory training YAML runs too: "
        "toolkit bench --recipe FILE.yaml [--arch NAME | --model PATH]"
    )
    return EXIT_OK
