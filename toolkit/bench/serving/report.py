"""The `--serve` table: one row per level (TTFT and TPOT p50/p99, throughput, goodput, status), then the
failed checks, the saturation found, the server's overhead, and the warnings. With `--json -` the
document goes to stdout and the table to stderr."""

from __future__ import annotations

import json


def _ms(summary: dict | None, key: str) -> str:
    return f"{summary[key] * 1e3:.1f}" if summary and summary.get(key) is not None else "—"


def _num(value, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if value is not None else "—"


def _table(doc: dict):
    from rich.table import Table

    from toolkit.console import style_of

    table = Table(title=f"serving {doc.get('url')} ({doc.get('api')}, {doc.get('model') or 'default model'})")
    for name in (
        "level",
        "ok/n",
        "TTFT ms p50/p99",
        "TPOT ms p50/p99",
        "tok/chunk",
        "tok/s",
        "req/s",
        "goodput",
        "status",
    ):
        table.add_column(name, justify="left" if name in ("level", "status") else "right")
    for lv in doc["levels"]:
        m = lv["metrics"]
        label = f"c={lv['concurrency']}" if lv["mode"] != "poisson" else f"{lv['target_rate_rps']:.2f}/s"
        table.add_row(
            label,
            f"{lv['ok']}/{lv['requests']}",
            f"{_ms(m['ttft_s'], 'p50')}/{_ms(m['ttft_s'], 'p99')}",
            f"{_ms(m['tpot_s'], 'p50')}/{_ms(m['tpot_s'], 'p99')}",
            _num((m["tokens_per_chunk"] or {}).get("mean"), 2),
            _num(m["output_throughput_tps"]),
            _num(m["request_throughput_rps"], 2),
            _num(m["goodput_rps"], 2),
            f"[{style_of(lv['status'])}]{lv['status']}[/]" if style_of(lv["status"]) else lv["status"],
        )
    return table


def _notes(doc: dict) -> list[str]:
    notes = []
    cold = doc.get("cold_start")
    if cold and cold.get("ttft_s") is not None:
        load = f", model load {cold['load_duration_s']:.2f} s" if cold.get("load_duration_s") else ""
        notes.append(
            f"cold start: TTFT {cold['ttft_s'] * 1e3:.1f} ms, e2e {cold['e2e_s'] * 1e3:.1f} ms{load}"
        )
    for lv in doc["levels"]:
        for check in lv["checks"]:
            if check["status"] != "pass":
                notes.append(f"c={lv['concurrency']} {check['name']}: {check['status']}: {check['detail']}")
        server = lv.get("server_timings") or {}
        if lv["concurrency"] == 1 and server.get("overhead_ttft_s") is not None:
            notes.append(
                "c=1 serving-stack overhead (client - server): "
                f"TTFT {server['overhead_ttft_s'] * 1e3:+.2f} ms"
                + (
                    f", TPOT {server['overhead_tpot_s'] * 1e3:+.3f} ms"
                    if server.get("overhead_tpot_s") is not None
                    else ""
                )
            )
    sat = doc.get("saturation")
    if sat:
        tps = sat["output_throughput_tps"]
        notes.append(f"saturation: concurrency {sat['concurrency']} ({tps:.1f} tok/s): {sat['reason']}")
    decode = (doc.get("expectations") or {}).get("decode") or {}
    if decode.get("fraction") is not None:
        notes.append(
            f"batch-1 decode {decode['measured_tps']:.1f} tok/s = {decode['fraction']:.2f} of the "
            f"{decode['roofline_tps']:.1f} tok/s roofline ({decode['bandwidth_basis']}): {decode['status']}"
            + (f" ({decode['detail']})" if decode.get("detail") else "")
        )
    notes += [f"warning: {w}" for w in doc.get("warnings") or []]
    return notes


def print_result(doc: dict, to_stdout_json: bool = False) -> None:
    from toolkit.console import err, out

    console = err if to_stdout_json else out
    if doc["levels"]:
        console.print(_table(doc))
    for note in _notes(doc):
        console.print(note, soft_wrap=True, highlight=False, markup=False)
    if doc["levels"]:
        console.print(f"status: {doc['status']}", highlight=False)
    if to_stdout_json:
        print(json.dumps(doc, indent=2, default=str))
